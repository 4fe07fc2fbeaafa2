"""The fast `exp` and what is built on it (loss, SwiGLU, attention): MLX's results, only faster."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import activations, base
from mlx_lm.tuner.lora import LoRALinear

import workbench  # noqa: F401  (before mlx)
from workbench.training import fastmath, losses
from workbench.training.batching import segment_mask


def relative_error(got: mx.array, x: mx.array) -> float:
    want = np.exp(np.array(x, dtype=np.float64))
    return float(np.max(np.abs(np.array(got, dtype=np.float64) - want) / want))


def assert_close(got, want, tol: float = 1e-5):
    got, want = np.array(got), np.array(want)
    assert np.max(np.abs(got - want)) <= tol * max(1.0, float(np.max(np.abs(want))))


def test_fast_exp_is_as_exact_as_the_loss_needs_and_so_is_its_gradient():
    # The loss takes e^x of logits minus their maximum (x <= 0), summed with the maximum's e^0 = 1:
    # where a term counts (x > -20: more than 2e-9 of the sum) it is within 1e-5, below within 1e-4.
    near, far = mx.linspace(-20, 0, 100_001), mx.linspace(-87, -20, 100_001)
    assert relative_error(fastmath.exp(near), near) < 1e-5
    assert relative_error(fastmath.exp(far), far) < 1e-4
    grad = mx.grad(lambda v: (fastmath.exp(v) * 3).sum())(near)
    assert relative_error(grad / 3, near) < 1e-5


def test_fast_exp_of_masked_logits_is_exactly_zero_not_subnormal_nor_nan():
    # Subnormal results downstream (masked attention scores times anything) ran 3x slower on Intel.
    out = fastmath.exp(mx.array([-mx.inf, -1e30, -100.0, -87.0, 0.0]))
    assert out[:3].tolist() == [0.0, 0.0, 0.0]
    assert out[3].item() == pytest.approx(np.exp(-87.0), rel=1e-4)
    assert out[4].item() == pytest.approx(1.0)


def test_fast_softmax_of_a_causal_mask_leaves_no_subnormal_numbers():
    scores = mx.random.normal((1, 2, 64, 64)) + mx.triu(mx.full((64, 64), -1e30), k=1)
    tiny = np.finfo(np.float32).tiny
    (probs,), (grad,) = mx.vjp(fastmath.softmax, [scores], [mx.random.normal(scores.shape) * 1e-3])
    for values in (np.array(probs), np.array(grad)):
        assert not np.any((values != 0) & (np.abs(values) < tiny))


def test_fast_sigmoid_and_swiglu_match_mlx_with_their_gradients():
    gate, x, cotangent = (mx.random.normal((4, 300)) * 6 for _ in range(3))
    assert_close(fastmath.sigmoid(gate), mx.sigmoid(gate))
    (ours,), our_grads = mx.vjp(fastmath.swiglu, [gate, x], [cotangent])
    (theirs,), their_grads = mx.vjp(activations.swiglu, [gate, x], [cotangent])
    assert_close(ours, theirs)
    for a, b in zip(our_grads, their_grads):
        assert_close(a, b)


def test_fast_softmax_matches_mlx_with_its_gradient():
    scores, cotangent = mx.random.normal((2, 3, 50)) * 5, mx.random.normal((2, 3, 50))
    (ours,), (our_grad,) = mx.vjp(fastmath.softmax, [scores], [cotangent])
    (theirs,), (their_grad,) = mx.vjp(lambda s: mx.softmax(s, axis=-1), [scores], [cotangent])
    assert_close(ours, theirs)
    assert_close(our_grad, their_grad)


MASKS = {
    "causal": lambda L, S: "causal",
    "none": lambda L, S: None,
    "packed rows": lambda L, S: segment_mask(mx.array([[1] * 5 + [2] * (L - 7) + [0] * 2] * 2)),
    "additive, per head": lambda L, S: mx.random.normal((2, 4, L, S)),
    "boolean, 2-d": lambda L, S: mx.random.uniform(shape=(L, S)) > 0.3,
}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fast_attention_matches_mlx_with_its_gradients(mask, kv_heads):
    queries = mx.random.normal((2, 4, 12, 16))
    keys, values = mx.random.normal((2, kv_heads, 12, 16)), mx.random.normal((2, kv_heads, 12, 16))
    cotangent = mx.random.normal(queries.shape)
    m = MASKS[mask](12, 12)

    def ours(q, k, v):
        return fastmath.attention(q, k, v, None, 0.25, m)

    def theirs(q, k, v):
        return base.scaled_dot_product_attention(q, k, v, None, 0.25, m)

    (got,), got_grads = mx.vjp(ours, [queries, keys, values], [cotangent])
    (want,), want_grads = mx.vjp(theirs, [queries, keys, values], [cotangent])
    assert_close(got, want)
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b)


def test_fast_attention_of_new_queries_against_a_longer_cache():
    # Generation: 3 new queries attend to 10 cached positions and to themselves, causally.
    queries, keys, values = mx.random.normal((1, 4, 3, 16)), mx.random.normal((1, 2, 10, 16)), \
        mx.random.normal((1, 2, 10, 16))
    assert_close(fastmath.attention(queries, keys, values, None, 0.25, "causal"),
                 base.scaled_dot_product_attention(queries, keys, values, None, 0.25, "causal"))


def test_the_model_calls_the_fast_functions_only_inside_the_block(tiny):
    model, tokenizer = tiny
    module = __import__(type(model).__module__, fromlist=["_"])
    with fastmath.model_kernels(model, ["swiglu"]) as swapped:
        assert swapped == ["swiglu"]
        assert module.scaled_dot_product_attention is base.scaled_dot_product_attention
    with fastmath.model_kernels(model) as swapped:
        assert swapped == ["attention", "swiglu"]
        assert module.swiglu is fastmath.swiglu
        assert module.scaled_dot_product_attention is fastmath.attention
    assert module.swiglu is activations.swiglu
    assert module.scaled_dot_product_attention is base.scaled_dot_product_attention


def test_a_lora_step_with_the_fast_model_functions_matches_mlx_lm_s(tiny):
    model, tokenizer = tiny
    row = tokenizer.encode("The tiny model reads a short sentence about training, then another.")
    arrays = (mx.array([row] * 2), mx.array([[2, len(row)]] * 2))
    lora = type(model)(model.args)
    lora.update(model.parameters())
    lora.freeze()
    for layer in lora.layers:
        layer.mlp.up_proj = LoRALinear.from_base(layer.mlp.up_proj, r=4)
        layer.mlp.up_proj.lora_b = mx.ones_like(layer.mlp.up_proj.lora_b) * 0.1
    value_and_grad = nn.value_and_grad(lora, losses.loss_function(False, fast=True))

    (slow, _), slow_grads = value_and_grad(lora, *arrays)
    with fastmath.model_kernels(lora):
        (fast, _), fast_grads = value_and_grad(lora, *arrays)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(fast_grads), tree_flatten(slow_grads)):
        assert mx.allclose(a, b, rtol=1e-4, atol=1e-6).item(), name
