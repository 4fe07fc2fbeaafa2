"""DPO and ORPO: their losses, their rewards, and batches of preference pairs (docs/architecture.md,
"Preference training").

A batch of B pairs is one padded batch of 2B rows, the B chosen answers then the B rejected ones, each
with mlx-lm's (prompt length, length) span, so one forward pass scores both sides. A row's score is the
sum of its answer tokens' log-probabilities.

DPO's reference model is the base itself: the same forward pass with every LoRA layer's scale set to
0 (`adapters_off`), under stop_gradient, so no second copy of the weights is held. ORPO needs no
reference: an NLL term on the chosen answer plus λ (`beta`) times the log-sigmoid of the odds ratio of
the per-token mean log-probabilities.

The formulas are those of the DPO paper (Rafailov et al. 2023; hinge as SLiC, ipo as Azar et al.) and
the ORPO paper (Hong et al. 2024), as mlx-lm-lora and TRL write them; our own, on mx ops, because
mlx-lm-lora's `dpo_loss` takes the reward accuracy of the batch's mean rewards (0 or 1 per batch, not
the share of pairs) and clears MLX's cache inside the loss (docs/architecture.md says more).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from workbench.errors import InputError
from workbench.training.batching import Batch, padded_batch

# What a step adds up over its pairs, in this order (summed over micro-batches and ranks, then divided
# by the pairs): trained tokens, chosen rewards, rejected rewards, pairs ranked right.
SUMS = ("tokens", "chosen_reward", "rejected_reward", "correct")


# Scores --------------------------------------------------------------------------------------------


def sequence_logps(model: nn.Module, tokens: mx.array, spans: mx.array,
                   ce=nn.losses.cross_entropy) -> tuple[mx.array, mx.array]:
    """Each row's summed log-probability of its answer tokens (those `spans` selects, as mlx-lm's
    `default_loss` selects them), and how many there are."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= spans[:, 0:1], steps <= spans[:, 1:])
    logps = (-ce(logits, targets) * mask).astype(mx.float32).sum(axis=-1)
    return logps, mask.sum(axis=-1)


@contextmanager
def adapters_off(model: nn.Module):
    """The base model, for as long as the block runs: every LoRA layer's scale set to 0 (its adapter
    adds nothing), and set back after. Inside a compiled step this holds while the step is traced."""
    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_a") and hasattr(m, "scale")]
    scales = [layer.scale for layer in layers]
    for layer in layers:
        layer.scale = 0.0
    try:
        yield len(layers)
    finally:
        for layer, scale in zip(layers, scales):
            layer.scale = scale


# Losses --------------------------------------------------------------------------------------------


def dpo_loss(policy_chosen: mx.array, policy_rejected: mx.array, reference_chosen: mx.array,
             reference_rejected: mx.array, beta: float, variant: str = "sigmoid"):
    """Per pair: the loss, the chosen reward β(πc - rc) and the rejected reward β(πr - rr).

    sigmoid: -log σ(β((πc - rc) - (πr - rr))); hinge: max(0, 1 - β(...)); ipo: ((...) - 1/(2β))².
    For ipo the scores given should be per-token means (IPO's length normalisation)."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    logits = chosen_ratio - rejected_ratio
    if variant == "sigmoid":
        losses = -nn.log_sigmoid(beta * logits)
    elif variant == "hinge":
        losses = nn.relu(1 - beta * logits)
    elif variant == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown dpo_loss {variant!r}: sigmoid, hinge or ipo")
    return losses, beta * mx.stop_gradient(chosen_ratio), beta * mx.stop_gradient(rejected_ratio)


def _log1mexp(x: mx.array) -> mx.array:
    """log(1 - e^x) for x < 0, stable at both ends."""
    x = mx.minimum(x, -1e-7)
    return mx.where(x > -0.6931471805599453, mx.log(-mx.expm1(x)), mx.log1p(-mx.exp(x)))


def orpo_loss(chosen_mean: mx.array, rejected_mean: mx.array, beta: float):
    """Per pair, from per-token mean log-probabilities: the loss -log P(chosen) - λ log σ(log odds
    ratio), the chosen reward λ·mean log P(chosen) and the rejected one (as TRL's ORPO reports)."""
    log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
    losses = -chosen_mean - beta * nn.log_sigmoid(log_odds)
    return losses, beta * mx.stop_gradient(chosen_mean), beta * mx.stop_gradient(rejected_mean)


def loss_function(training_type: str, beta: float, variant: str, ce=nn.losses.cross_entropy):
    """The loss a dpo or orpo run trains with, on a batch of pairs: returns the mean loss over the
    pairs, their number (what data-parallel ranks weigh their gradients by) and the step's SUMS."""

    def loss(model: nn.Module, tokens: mx.array, spans: mx.array):
        pairs = tokens.shape[0] // 2
        logps, counts = sequence_logps(model, tokens, spans, ce)
        counts_f = mx.maximum(counts, 1).astype(mx.float32)
        if training_type == "orpo":
            means = logps / counts_f
            losses, chosen, rejected = orpo_loss(means[:pairs], means[pairs:], beta)
        else:
            with adapters_off(model):
                reference = mx.stop_gradient(sequence_logps(model, tokens, spans, ce)[0])
            if variant == "ipo":
                logps, reference = logps / counts_f, reference / counts_f
            losses, chosen, rejected = dpo_loss(logps[:pairs], logps[pairs:], reference[:pairs],
                                                reference[pairs:], beta, variant)
        sums = mx.stack([counts.sum().astype(mx.float32), chosen.sum(), rejected.sum(),
                         (chosen > rejected).astype(mx.float32).sum()])
        return losses.mean(), mx.array(pairs), sums

    return loss


def measures(sums: list[float], pairs: float) -> dict:
    """The step's preference metrics from its SUMS over `pairs` pairs."""
    _, chosen, rejected, correct = sums
    return {"chosen_reward": chosen / pairs, "rejected_reward": rejected / pairs,
            "reward_margin": (chosen - rejected) / pairs, "reward_accuracy": correct / pairs}


# Batches -------------------------------------------------------------------------------------------


class _Pairs:
    """Some pairs of a PairDataset, by index."""

    def __init__(self, pairs, indices: list[int]):
        self._pairs, self._indices = pairs, indices

    def __getitem__(self, idx: int):
        return self._pairs[self._indices[idx]]

    def __len__(self) -> int:
        return len(self._indices)


def trainable(pairs) -> tuple[object, int]:
    """The pairs whose both answers keep a token within max_seq_length, and how many did not."""
    keep = [i for i in range(len(pairs)) if all(len(tokens) > max(offset, 1) for tokens, offset in pairs[i])]
    if not keep:
        raise InputError("max_seq_length", "no preference pair keeps an answer token within max_seq_length: "
                         "every prompt fills it. Raise max_seq_length")
    skipped = len(pairs) - len(keep)
    return (_Pairs(pairs, keep) if skipped else pairs), skipped


def pair_length(pair) -> int:
    """What grouping by length sorts a pair by: its longer side."""
    return max(len(tokens) for tokens, _ in pair)


def pair_batch(pairs: list, max_seq_length: int) -> Batch:
    """B pairs as one padded batch of 2B rows: the chosen answers, then the rejected ones."""
    return padded_batch([chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs], max_seq_length)


def validation_pairs(dataset, batch_size: int, max_seq_length: int, seed: int, step: int,
                     **_ignored) -> Iterator[tuple]:
    """As batching.validation_batches, for pairs: drawn with (seed, step), the same in a resumed run."""
    order = np.random.default_rng([seed, step, 1]).permutation(len(dataset))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield pair_batch([dataset[int(i)] for i in order[start:start + batch_size]], max_seq_length).arrays


def every_pair(dataset, batch_size: int, max_seq_length: int, **_ignored) -> Iterator[tuple]:
    """Every pair once, in order, the last batch short if need be."""
    for start in range(0, len(dataset), batch_size):
        pairs = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield pair_batch(pairs, max_seq_length).arrays
