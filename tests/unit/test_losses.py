"""The training loss with the fast `exp`: the same loss and gradients as mlx-lm's, only faster."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.trainer import default_loss

import workbench  # noqa: F401  (before mlx)
from workbench.training import losses


def test_the_fast_exp_adds_no_logits_sized_array_to_the_loss():
    # Fused into one kernel: a version that was not kept four logits-sized arrays alive.
    logits, targets = mx.random.normal((1, 64, 32_768)), mx.random.randint(0, 32_768, (1, 64))
    mx.eval(logits, targets)

    def peak(ce) -> int:
        step = mx.compile(mx.value_and_grad(lambda z: ce(z, targets).sum()))
        mx.eval(step(logits))
        mx.clear_cache()
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        mx.eval(step(logits))
        return mx.get_peak_memory() - before

    assert peak(losses.cross_entropy) <= peak(nn.losses.cross_entropy) + 1.2 * logits.nbytes


def test_the_fast_cross_entropy_matches_mlx():
    logits = mx.random.normal((3, 7, 1000)) * 4
    targets = mx.random.randint(0, 1000, (3, 7))
    assert mx.allclose(losses.cross_entropy(logits, targets), nn.losses.cross_entropy(logits, targets),
                       rtol=1e-5, atol=1e-5).item()


@pytest.mark.parametrize("packing", [False, True])
def test_a_lora_step_s_loss_and_gradients_match_mlx_lm_s(tiny, packing):
    model, tokenizer = tiny
    row = tokenizer.encode("The tiny model reads a short sentence about training, then another.")
    if packing:
        arrays = (mx.array([row]), mx.array([[1] * len(row)]), mx.array([[0, 0] + [1] * (len(row) - 2)]))
    else:
        arrays = (mx.array([row] * 2), mx.array([[2, len(row)]] * 2))
    lora = type(model)(model.args)
    lora.update(model.parameters())
    lora.freeze()
    lora.layers[0].self_attn.q_proj = LoRALinear.from_base(lora.layers[0].self_attn.q_proj, r=4)
    lora.layers[0].self_attn.q_proj.lora_b = mx.ones_like(lora.layers[0].self_attn.q_proj.lora_b) * 0.1

    def value_and_grad(fast: bool):
        return nn.value_and_grad(lora, losses.loss_function(packing, fast=fast))(lora, *arrays)

    (fast, count), fast_grads = value_and_grad(True)
    (slow, slow_count), slow_grads = value_and_grad(False)
    assert count.item() == slow_count.item()
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(fast_grads), tree_flatten(slow_grads)):
        assert mx.allclose(a, b, rtol=1e-4, atol=1e-6).item(), name
    if not packing:
        assert slow.item() == pytest.approx(default_loss(lora, *arrays)[0].item(), rel=1e-6)

