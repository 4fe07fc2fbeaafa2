"""How training computes: the backend policy, QLoRA's just-in-time dequantized products, less padding."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.trainer import default_loss

import workbench  # noqa: F401  (before mlx)
from workbench.data import DataSpec, build
from workbench.training import batching, policy, quantized
from workbench.training.quantized import DequantizedEmbedding, DequantizedLinear, dequantize_products


def test_the_cpu_policy_trains_in_fp32_through_blas_with_a_compiled_step():
    chosen = policy.choose(memory_limit_mb=512, cache_limit_mb=0)
    assert chosen.backend == "cpu"
    assert chosen.compute_dtype == "float32"
    assert chosen.quantized_products == "dequantize-to-fp32"
    assert chosen.compiled_step is True
    assert chosen.blas == "openblas"
    assert chosen.as_dict()["memory_limit_mb"] == 512


def test_on_the_cpu_a_step_s_freed_buffers_are_kept_for_the_next_step():
    chosen = policy.choose(memory_limit_mb=4096)
    assert chosen.cache_limit_mb == 4096  # MLX's CPU default, 32 MB, let every large array go
    assert policy.choose().cache_limit_mb > 1024  # the machine's memory
    previous_memory, previous_cache = mx.set_memory_limit(4096 << 20), mx.set_cache_limit(0)
    try:
        policy.apply_limits(chosen)
        logits = mx.ones((255, 65_536)) * 2  # 64 MB, like one step's logits
        logits_bytes = logits.nbytes
        mx.eval(logits)
        del logits
        assert mx.get_cache_memory() >= logits_bytes
    finally:
        mx.set_memory_limit(previous_memory)
        mx.set_cache_limit(previous_cache)
        mx.clear_cache()


def test_prepare_casts_half_precision_weights_to_the_compute_dtype():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    model.update({"layers": [{"weight": layer.weight.astype(mx.bfloat16)} for layer in model.layers]})
    policy.prepare(model, policy.choose())
    assert {p.dtype for _, p in tree_flatten(model.parameters())} == {mx.float32}


@pytest.mark.parametrize("bits", [4, 8])
def test_dequantized_products_match_mlx_quantized_layers_forward_and_backward(bits):
    mx.random.seed(bits)
    linear = nn.QuantizedLinear(128, 96, bias=True, bits=bits)
    embedding = nn.QuantizedEmbedding(300, 128, bits=bits)
    x = mx.random.normal((2, 7, 128))

    def outputs():
        return linear(x), embedding.as_linear(x), mx.grad(lambda v: (linear(v) ** 2).sum())(x)

    expected = outputs()
    stored = [p for _, p in tree_flatten(linear.parameters())]
    assert dequantize_products(linear) == 1 and dequantize_products(embedding) == 1
    assert isinstance(linear, DequantizedLinear) and isinstance(embedding, DequantizedEmbedding)
    # Same packed parameters: checkpoints and adapters do not see the swap.
    assert all(a is b for a, b in zip(stored, [p for _, p in tree_flatten(linear.parameters())]))
    for got, want in zip(outputs(), expected):
        assert mx.allclose(got, want, atol=1e-4).item()


def test_a_head_dequantized_block_by_block_matches_mlx(monkeypatch):
    monkeypatch.setattr(quantized, "_BLOCK_ELEMENTS", 64 * 128)  # 300 rows of 128: 5 blocks
    mx.random.seed(3)
    head = nn.QuantizedEmbedding(300, 128, bits=4)
    x = mx.random.normal((2, 7, 128))

    def outputs():
        return head.as_linear(x), mx.grad(lambda v: (head.as_linear(v) ** 2).sum())(x)

    expected = outputs()
    dequantize_products(head)
    for got, want in zip(outputs(), expected):
        assert mx.allclose(got, want, atol=1e-4).item()


def test_a_big_quantized_head_is_never_whole_in_fp32_during_a_compiled_step():
    # Qwen3's tied head: 151,936 x 1,024 is 594 MB in fp32 (80 MB at 4 bits).
    head = nn.QuantizedEmbedding(151_936, 1024, bits=4)
    dequantize_products(head)
    x = mx.random.normal((2, 16, 1024))
    mx.eval(head.parameters(), x)
    step = mx.compile(mx.grad(lambda v: (head.as_linear(v) ** 2).sum()))
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    mx.eval(step(x))
    fp32_head = 151_936 * 1024 * 4
    assert mx.get_peak_memory() - before < 0.4 * fp32_head  # was 1.5x: whole copies in both passes


def test_lora_over_a_dequantized_base_still_fuses_with_mlx_lm():
    base = nn.QuantizedLinear(64, 32, bits=4)
    dequantize_products(base)
    lora = LoRALinear.from_base(base, r=4)
    lora.lora_b = mx.ones_like(lora.lora_b) * 0.01
    x = mx.random.normal((3, 64))
    fused = lora.fuse(dequantize=True)
    assert mx.allclose(fused(x), lora(x), atol=1e-3).item()


def test_a_qlora_loss_is_the_same_with_dequantized_products(tiny):
    model, tokenizer = tiny
    batch = mx.array([tokenizer.encode("The tiny model reads a short sentence about training.")] * 2)
    lengths = mx.array([[1, batch.shape[1]]] * 2)
    mx.random.seed(0)
    quantized = type(model)(model.args)
    quantized.update(model.parameters())
    nn.quantize(quantized, group_size=64, bits=4)
    native, _ = default_loss(quantized, batch, lengths)
    dequantize_products(quantized)
    fast, _ = default_loss(quantized, batch, lengths)
    assert abs(native.item() - fast.item()) < 1e-3 * abs(native.item())


def test_packing_puts_every_row_once_within_the_capacity():
    lengths = [5, 90, 33, 64, 1, 100, 12, 50, 7, 70]
    sequences = batching.pack(lengths, 128, np.random.default_rng(0).permutation(len(lengths)))
    assert sorted(i for seq in sequences for i in seq) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in seq) <= 128 for seq in sequences)
    assert len(sequences) < len(lengths) / 2  # it packs


def test_a_row_packed_with_others_sees_only_itself(tiny):
    model, tokenizer = tiny
    rows = [tokenizer.encode(text) for text in (
        "First sample: the cat sat on the mat.", "Second one, a little longer than the first sample is.",
        "Third.")]
    tokens = mx.array([sum(rows, [])])
    segments = mx.array([[n for n, row in enumerate(rows, 1) for _ in row]])
    packed = batching.packed_logits(model, tokens, segments)
    at = 0
    for row in rows:
        alone = model(mx.array([row]))
        assert mx.allclose(packed[:, at:at + len(row)], alone, atol=1e-4).item()
        at += len(row)


def _padding_share(data, **options) -> float:
    stream = batching.batches(data.train, 8, 512, seed=0, **options)
    seen = [next(stream) for _ in range(len(data.train) // 8)]
    return 1 - sum(b.tokens for b in seen) / sum(b.positions for b in seen)


def test_grouping_by_length_and_packing_cut_the_padding(settings, tiny):
    _, tokenizer = tiny
    data = build(DataSpec(dataset="alpaca", validation_split=0.0), tokenizer, settings)
    ungrouped = _padding_share(data, group_by_length=False)
    grouped = _padding_share(data, group_by_length=True)
    packed = _padding_share(data, packing=True)
    print(f"padding: ungrouped {ungrouped:.2f}, grouped {grouped:.2f}, packed {packed:.2f}")
    # Grouped batches still round their width up to a multiple of 32 (as mlx-lm pads, to bound the
    # number of compiled shapes), which on short rows leaves a floor of padding; packing fills rows.
    assert grouped < 0.85 * ungrouped
    assert packed < 0.1


def test_bf16_lora_products_match_fp32_and_keep_fp32_weights_and_gradients():
    from mlx_lm.tuner.lora import LoRALinear

    mx.random.seed(1)
    base = nn.Linear(64, 32, bias=False)
    base.weight = base.weight.astype(mx.bfloat16)  # a bf16 base, as on a GPU
    plain = LoRALinear.from_base(base, r=4)
    plain.lora_b = mx.random.normal(plain.lora_b.shape) * 0.1
    x = mx.random.normal((5, 64)).astype(mx.bfloat16)
    expected = plain(x)
    gpu_like = policy.ComputePolicy(**{**policy.choose().as_dict(), "lora_products": "bfloat16"})
    assert policy.adapt_lora(plain, gpu_like) == 1
    got = plain(x)
    assert got.dtype == mx.bfloat16 and plain.lora_a.dtype == mx.float32
    assert mx.abs(got.astype(mx.float32) - expected.astype(mx.float32)).max().item() < 0.1  # bf16 ulps
    grads = nn.value_and_grad(plain, lambda m, v: m(v).astype(mx.float32).sum())(plain, x)[1]
    assert grads["lora_b"].dtype == mx.float32
