"""Training batches with little padding: rows grouped by token length, or packed.

Grouped: rows sorted by token count before they are cut into batches, as mlx-lm's `iterate_batches`
means to (its `CacheDataset.itemlen` measures the raw row, a dict, so its sort did nothing), in an
order of our own (`DataOrder`) that a checkpoint can save and a resume restore.

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

from workbench.errors import InputError

_PAD_TO = 32  # widths round up to a multiple of this (as mlx-lm pads), so few shapes get compiled
_OPEN_BINS = 32  # packing looks for room in this many most recent sequences


@dataclass
class Batch:
    arrays: tuple  # what the loss function takes after the model
    tokens: int  # real (non-padding) tokens in the batch
    positions: int  # rows x padded width: what the model computes on


class _Rows(CacheDataset):
    """Some of a dataset's items, by index."""

    def __init__(self, items: CacheDataset, indices: list[int] | range):
        self._items = items
        self._indices = indices

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


class DataOrder:
    """Endless training batches in an order that depends on the seed and the epoch only, with a
    position that a checkpoint saves and a resume restores.

    mlx-lm's `iterate_batches` shuffles with numpy's global generator, which each validation pass
    draws from too; a resumed run then got another batch order after the first epoch boundary. Here
    each epoch's order comes from its own generator, seeded with (seed, epoch), so the position
    (epoch, batches used in it) is the whole state of the data order.
    """

    def __init__(self, dataset: CacheDataset, batch_size: int, max_seq_length: int, seed: int,
                 group_by_length: bool = True, packing: bool = False, position: dict | None = None,
                 shard: tuple[int, int] = (0, 1), collate=None, length=None):
        self.dataset, self.batch_size, self.max_seq_length = dataset, batch_size, max_seq_length
        self.seed, self.packing = seed, packing
        # (rank, ranks): every rank walks the same global order and takes its slice of each batch.
        self.shard = shard
        # How items become a batch and what grouping sorts them by: rows by default; preference
        # pairs bring their own (workbench/training/preference.py).
        self.collate = collate or padded_batch
        length = length or (lambda item: len(item[0]))
        self.lengths = [length(dataset[i]) for i in range(len(dataset))]
        if not packing:
            # As mlx-lm: rows sorted by length (or kept in order) and cut into fixed batches, whose
            # order each epoch shuffles; the last incomplete batch is left out.
            order = sorted(range(len(dataset)), key=lambda i: self.lengths[i] if group_by_length else 0)
            self.groups = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
            if not self.groups:
                raise InputError("batch_size", f"{batch_size} exceeds the {len(dataset)} training rows")
        position = position or {}
        self.epoch = int(position.get("epoch", 0))
        self.used = int(position.get("batches_used_in_epoch", 0))
        self._epoch_batches = self._plan(self.epoch)

    def position(self) -> dict:
        """Where the order stands: what a checkpoint saves."""
        return {"epoch": self.epoch, "batches_used_in_epoch": self.used}

    def skip(self, count: int) -> None:
        for _ in range(count):
            self._advance()

    def _plan(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        if not self.packing:
            return [self.groups[i] for i in rng.permutation(len(self.groups))]
        sequences = pack(self.lengths, self.max_seq_length, rng.permutation(len(self.dataset)))
        if len(sequences) < self.batch_size:
            raise InputError("batch_size", f"{self.batch_size} exceeds the {len(sequences)} packed sequences "
                             f"of {self.max_seq_length} tokens the training rows fill")
        rng.shuffle(sequences)
        return [sequences[i:i + self.batch_size]
                for i in range(0, len(sequences) - self.batch_size + 1, self.batch_size)]

    def _advance(self) -> list:
        if self.used >= len(self._epoch_batches):
            self.epoch, self.used = self.epoch + 1, 0
            self._epoch_batches = self._plan(self.epoch)
        chosen = self._epoch_batches[self.used]
        self.used += 1
        return chosen

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        chosen = self._advance()
        rank, ranks = self.shard
        if ranks > 1:
            share = len(chosen) // ranks
            chosen = chosen[rank * share:(rank + 1) * share]
        if self.packing:
            return _packed_batch([[self.dataset[i] for i in seq] for seq in chosen], self.max_seq_length)
        return self.collate([self.dataset[i] for i in chosen], self.max_seq_length)


def batches(dataset: CacheDataset, batch_size: int, max_seq_length: int, seed: int,
            group_by_length: bool = True, packing: bool = False) -> DataOrder:
    """Endless batches in a seeded order (the same seed gives the same batches)."""
    return DataOrder(dataset, batch_size, max_seq_length, seed, group_by_length, packing)


def padded_batch(rows: list[tuple], max_seq_length: int) -> Batch:
    """Rows cut to max_seq_length and padded to one more than a multiple of 32 (mlx-lm's shapes,
    so the compiled step sees few widths), with mlx-lm's (offset, length) per row."""
    lengths = [min(len(tokens), max_seq_length) for tokens, _ in rows]
    width = min(_PAD_TO * -(-max(lengths) // _PAD_TO) + 1, max_seq_length)
    tokens = np.zeros((len(rows), width), np.int32)
    for r, ((row_tokens, _), n) in enumerate(zip(rows, lengths)):
        tokens[r, :n] = row_tokens[:n]
    spans = np.array([(offset, n) for (_, offset), n in zip(rows, lengths)], np.int32)
    return Batch((mx.array(tokens), mx.array(spans)), int(spans[:, 1].sum()), tokens.size)


def validation_batches(dataset: CacheDataset, batch_size: int, max_seq_length: int, seed: int, step: int,
                       **_ignored) -> Iterator[tuple]:
    """Validation batches for the evaluation at `step`, for mlx-lm's `evaluate`: rows drawn from a
    generator seeded with (seed, step), so an evaluation repeats exactly in a resumed run and takes
    nothing from the training order's generators."""
    rng = np.random.default_rng([seed, step, 1])
    order = rng.permutation(len(dataset))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield padded_batch([dataset[int(i)] for i in order[start:start + batch_size]], max_seq_length).arrays


def every_batch(dataset: CacheDataset, batch_size: int, max_seq_length: int, **_ignored) -> Iterator[tuple]:
    """Every row once, in order, the last batch short if need be: a loss over the whole set."""
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield padded_batch(rows, max_seq_length).arrays


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
