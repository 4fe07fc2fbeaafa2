"""Training batches with little padding: rows grouped by token length, or packed.

Grouped: mlx-lm's `iterate_batches` already sorts rows by `itemlen` before cutting batches, but its
`CacheDataset.itemlen` measures the raw row (a dict), not its tokens, so the sort did nothing. A view
whose `itemlen` is the token count makes the same function group rows of similar length.

Packed: several rows share one sequence of up to `max_seq_length` tokens. Attention stays within each
row: every layer gets a block-diagonal causal mask, handed to mlx-lm's model code through the object
it takes as a layer's cache (rotary positions keep counting across rows, which changes nothing inside
a row: rotary attention depends on relative positions only). The loss skips each row's first token
(it would be predicted from the previous row) and, with mask_prompt, its prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.tuner.datasets import CacheDataset
from mlx_lm.tuner.trainer import iterate_batches

from workbench.errors import InputError

_PAD_TO = 32  # widths round up to a multiple of this (as mlx-lm pads), so few shapes get compiled
_OPEN_BINS = 32  # packing looks for room in this many most recent sequences


@dataclass
class Batch:
    arrays: tuple  # what the loss function takes after the model
    tokens: int  # real (non-padding) tokens in the batch
    positions: int  # rows x padded width: what the model computes on


class _Rows(CacheDataset):
    """Some of a dataset's items, by index, with `itemlen` = token count (or 0, which keeps the
    data's order, when `group` is false)."""

    def __init__(self, items: CacheDataset, indices: list[int] | range, group: bool = True):
        self._items = items
        self._indices = indices
        self._group = group

    def itemlen(self, idx: int) -> int:
        return len(self[idx][0]) if self._group else 0

    def __getitem__(self, idx: int):
        return self._items[self._indices[idx]]

    def __len__(self) -> int:
        return len(self._indices)


def trainable(dataset: CacheDataset) -> tuple[CacheDataset, int]:
    """The rows that keep a token to learn from once cut to max_seq_length, and how many did not.

    A row whose prompt fills max_seq_length has no target left; a batch of such rows divides by
    zero trained tokens and turns the weights to NaN, silently."""
    rows = (dataset[i] for i in range(len(dataset)))
    keep = [i for i, (tokens, offset) in enumerate(rows) if len(tokens) > max(offset, 1)]
    if not keep:
        raise InputError("max_seq_length", "no training row keeps a token to learn from within "
                         "max_seq_length: every prompt fills it. Raise max_seq_length, or set "
                         "mask_prompt to false to train on the prompts too")
    skipped = len(dataset) - len(keep)
    return (_Rows(dataset, keep) if skipped else dataset), skipped


def batches(dataset: CacheDataset, batch_size: int, max_seq_length: int, seed: int,
            group_by_length: bool = True, packing: bool = False) -> Iterator[Batch]:
    """Endless batches in a seeded order (the same seed gives the same batches, so a resumed run
    can skip to where it stopped)."""
    if packing:
        yield from _packed(dataset, batch_size, max_seq_length, seed)
        return
    view = _Rows(dataset, range(len(dataset)), group_by_length)
    for batch, lengths in iterate_batches(view, batch_size, max_seq_length, loop=True, seed=seed):
        yield Batch((batch, lengths), int(lengths[:, 1].sum().item()), batch.size)


# Packing ----------------------------------------------------------------------------------------


def pack(lengths: list[int], capacity: int, order: np.ndarray) -> list[list[int]]:
    """Rows (by index) into sequences of at most `capacity` tokens: first fit, longest first,
    looking only at the most recent sequences so it stays linear in the number of rows."""
    sequences: list[list[int]] = []
    room: list[int] = []
    for idx in sorted(order, key=lambda i: -lengths[i]):
        size = min(lengths[idx], capacity)
        for s in range(max(len(sequences) - _OPEN_BINS, 0), len(sequences)):
            if room[s] >= size:
                sequences[s].append(idx)
                room[s] -= size
                break
        else:
            sequences.append([idx])
            room.append(capacity - size)
    return sequences


def _packed(dataset: CacheDataset, batch_size: int, max_seq_length: int, seed: int) -> Iterator[Batch]:
    lengths = [len(dataset[i][0]) for i in range(len(dataset))]
    rng = np.random.default_rng(seed)
    while True:
        sequences = pack(lengths, max_seq_length, rng.permutation(len(dataset)))
        if len(sequences) < batch_size:
            raise InputError("batch_size", f"{batch_size} exceeds the {len(sequences)} packed sequences "
                             f"of {max_seq_length} tokens the training rows fill")
        rng.shuffle(sequences)
        for start in range(0, len(sequences) - batch_size + 1, batch_size):
            yield _packed_batch([[dataset[i] for i in seq] for seq in sequences[start:start + batch_size]],
                                max_seq_length)


def _packed_batch(rows: list[list[tuple]], max_seq_length: int) -> Batch:
    fill = max(sum(min(len(t), max_seq_length) for t, _ in items) for items in rows)
    width = min(_PAD_TO * -(-fill // _PAD_TO) + 1, max_seq_length)
    tokens = np.zeros((len(rows), width), np.int32)
    segments = np.zeros((len(rows), width), np.int32)
    trained = np.zeros((len(rows), width), bool)
    real = 0
    for r, items in enumerate(rows):
        at = 0
        for number, (row_tokens, offset) in enumerate(items, 1):
            n = min(len(row_tokens), width - at)
            tokens[r, at:at + n] = row_tokens[:n]
            segments[r, at:at + n] = number
            # As mlx-lm's loss: a row's token p is a target when p >= offset (and p >= 1 always).
            trained[r, at + max(offset, 1):at + n] = True
            at += n
            real += n
    return Batch((mx.array(tokens), mx.array(segments), mx.array(trained)), real, tokens.size)


class SegmentMask:
    """Stands in for a layer's KV cache to hand mlx-lm's attention a mask of our own: no cache,
    position offset 0, keys and values passed through."""

    offset = 0

    def __init__(self, mask: mx.array):
        self.mask = mask

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        return self.mask

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        return keys, values


def segment_mask(segments: mx.array) -> mx.array:
    """[rows, 1, L, L]: position q may attend to k when both are in the same row and k <= q.
    Padding (segment 0) attends to earlier padding, so no query is left with nothing to attend to."""
    n = segments.shape[1]
    causal = mx.tril(mx.ones((n, n), dtype=mx.bool_))
    same = segments[:, :, None] == segments[:, None, :]
    return mx.expand_dims(same & causal, 1)


def packed_logits(model: nn.Module, tokens: mx.array, segments: mx.array) -> mx.array:
    mask = SegmentMask(segment_mask(segments))
    return model(tokens, cache=[mask] * len(model.layers))
