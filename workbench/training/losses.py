"""The training losses: mlx-lm's next-token cross-entropy, for padded or packed batches, with the
fast `exp` of workbench/training/fastmath.py where MLX's own is slow.

The loss over a large vocabulary is mostly exponentials (Qwen3: 151,936 a token, twice, for the
log-sum-exp and its gradient): 0.4 s of a 3.4 s Qwen3-0.6B step on the CPU. It only needs e^x for
x <= 0 (logits minus their maximum), which the fast `exp` gives in one fused kernel with no array in
between (a version that wrote 2^n into the exponent bits was as fast but broke the fusion and kept
four logits-sized arrays alive). The compute policy chooses it where it measures faster
(workbench/training/calibration.py); elsewhere mlx-lm's loss runs unchanged.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.trainer import default_loss

from workbench.training.batching import packed_logits
from workbench.training.fastmath import exp


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """`nn.losses.cross_entropy(logits, targets)` (per position, no reduction) with the fast `exp`."""
    top = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    log_sum_exp = mx.log(exp(logits - top).sum(axis=-1)) + top.squeeze(-1)
    return log_sum_exp - mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)


def token_loss(model: nn.Module, batch: mx.array, lengths: mx.array):
    """mlx-lm's `default_loss` (mean over the positions `lengths` selects) with the fast cross-entropy."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    count = mask.sum()
    return (cross_entropy(logits, targets) * mask).astype(mx.float32).sum() / count, count


def packed_loss(model: nn.Module, tokens: mx.array, segments: mx.array, trained: mx.array,
                ce=nn.losses.cross_entropy):
    """Mean cross-entropy of the trained positions of packed rows (attention kept within each row)."""
    logits = packed_logits(model, tokens[:, :-1], segments[:, :-1])
    weights = trained[:, 1:]
    count = weights.sum()
    return (ce(logits, tokens[:, 1:]) * weights).astype(mx.float32).sum() / count, count


def loss_function(packing: bool, fast: bool):
    """The loss a run trains with: for packed or padded batches, with or without the fast `exp`."""
    if packing:
        return partial(packed_loss, ce=cross_entropy) if fast else packed_loss
    return token_loss if fast else default_loss
