"""From the rows a DataSpec names to token batches: converting, splitting, tokenising, previews."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.data.formats import CHAT_FORMATS, MalformedRow, convert_rows, to_messages
from workbench.data.sources import LoadedRows, load_rows
from workbench.data.spec import DataSpec
from workbench.errors import InputError
from workbench.settings import Settings

if TYPE_CHECKING:
    from mlx_lm.tuner.datasets import CacheDataset


@dataclass(frozen=True)
class DatasetSummary:
    rows: int
    format: str
    source: str
    train_rows: int
    valid_rows: int
    mask_prompt: bool = True  # whether prompts are masked in effect (never for text rows)


@dataclass(frozen=True)
class PreparedData:
    """mlx-lm datasets whose items are (tokens, offset), ready for `iterate_batches`.

    `train_examples` and `valid_examples` are the converted rows behind them ({"messages"},
    {"prompt", "completion"} or {"text"}), e.g. for held-out prompts a judge scores.
    """

    train: CacheDataset
    valid: CacheDataset | None
    summary: DatasetSummary
    train_examples: list[dict]
    valid_examples: list[dict]


# Converting, splitting and tokenising ---------------------------------------------------------------


def split_indices(count: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Row numbers for train and valid: a seeded shuffle, at least one train row, each part in order.

    Valid is empty when the split is 0 or there are fewer than 2 rows, else holds
    round(count * validation_split) rows, at least 1.
    """
    if validation_split <= 0 or count < 2:
        return list(range(count)), []
    n_valid = min(count - 1, max(1, round(count * validation_split)))
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return sorted(order[n_valid:]), sorted(order[:n_valid])


def _examples(spec: DataSpec, loaded: LoadedRows) -> tuple[list[dict], list[dict]]:
    """Every row converted (the first malformed one raises), split into train and valid."""
    converted = _convert(loaded, spec.error_field)
    if loaded.valid is not None:
        return converted, _convert(loaded.valid, spec.error_field)
    train_idx, valid_idx = split_indices(len(converted), spec.validation_split, spec.seed)
    return [converted[i] for i in train_idx], [converted[i] for i in valid_idx]


def _convert(loaded: LoadedRows, field: str) -> list[dict]:
    try:
        return convert_rows(loaded.rows, loaded.format, loaded.source, loaded.lines)
    except MalformedRow as exc:
        raise InputError(field, str(exc)) from None


def _summary(spec: DataSpec, loaded: LoadedRows, train: list, valid: list) -> DatasetSummary:
    return DatasetSummary(
        rows=len(train) + len(valid),
        format=loaded.format,
        source=loaded.source,
        train_rows=len(train),
        valid_rows=len(valid),
        mask_prompt=spec.mask_prompt and loaded.format != "text",
    )


def validate(spec: DataSpec, settings: Settings) -> DatasetSummary:
    """Load and convert every row, so that bad data fails at submission, not in the middle of training."""
    loaded = load_rows(spec, settings)
    train, valid = _examples(spec, loaded)
    return _summary(spec, loaded, train, valid)


class _Truncated:
    """An mlx-lm dataset whose items are cut to max_seq_length tokens (offset included)."""

    def __init__(self, data, max_seq_length: int):
        self._data = data
        self.max_seq_length = max_seq_length

    def process(self, row):
        tokens, offset = self._data.process(row)
        return tokens[: self.max_seq_length], min(offset, self.max_seq_length)

    def __getitem__(self, idx: int):
        return self._data[idx]

    def __len__(self) -> int:
        return len(self._data)


def _mlx_dataset(examples: list[dict], fmt: str, tokenizer, mask_prompt: bool):
    """mlx-lm's own dataset class for the format; it applies the chat template and the prompt mask.

    Text rows have no prompt: they are trained on whole (mask_prompt does not apply).
    """
    from mlx_lm.tuner.datasets import ChatDataset, CompletionsDataset, TextDataset

    if fmt in CHAT_FORMATS:
        return ChatDataset(examples, tokenizer, chat_key="messages", mask_prompt=mask_prompt)
    if fmt == "completions":
        return CompletionsDataset(examples, tokenizer, "prompt", "completion", mask_prompt)
    return TextDataset(examples, tokenizer, text_key="text")


def build(spec: DataSpec, tokenizer, settings: Settings) -> PreparedData:
    """Train and valid sets of (tokens, offset) items, tokenised lazily and cached (mlx-lm's CacheDataset).

    Items are cut to max_seq_length tokens. `valid` is None when no rows are held out.
    """
    from mlx_lm.tuner.datasets import CacheDataset

    loaded = load_rows(spec, settings)
    train, valid = _examples(spec, loaded)

    def wrap(examples: list[dict]):
        data = _mlx_dataset(examples, loaded.format, tokenizer, spec.mask_prompt)
        return CacheDataset(_Truncated(data, spec.max_seq_length))

    return PreparedData(
        train=wrap(train),
        valid=wrap(valid) if valid else None,
        summary=_summary(spec, loaded, train, valid),
        train_examples=train,
        valid_examples=valid,
    )


def preview(spec: DataSpec, tokenizer, settings: Settings, n: int = 5) -> list[dict]:
    """The first n rows as the model sees them.

    Each: messages (None for text rows), text (the tokens kept, decoded: the chat template applied),
    trained_text (the part the loss is computed on), tokens (before truncation), masked_tokens (prompt
    tokens the loss skips: the offset), truncated (longer than max_seq_length).
    """
    loaded = load_rows(spec, settings)
    head = LoadedRows(loaded.rows[:n], loaded.format, loaded.source, loaded.lines and loaded.lines[:n])
    examples = _convert(head, spec.error_field)
    data = _mlx_dataset(examples, loaded.format, tokenizer, spec.mask_prompt)
    out = []
    for row, example in zip(head.rows, examples):
        tokens, offset = data.process(example)
        kept = tokens[: spec.max_seq_length]
        masked = min(offset, len(kept))
        out.append({
            "messages": to_messages(row, loaded.format),
            "text": tokenizer.decode(kept),
            "trained_text": tokenizer.decode(kept[masked:]),
            "tokens": len(tokens),
            "masked_tokens": masked,
            "truncated": len(tokens) > spec.max_seq_length,
        })
    return out


def token_lengths(spec: DataSpec, tokenizer, settings: Settings) -> list[int]:
    """Tokens in every row (in file order, before truncation), e.g. for a histogram."""
    loaded = load_rows(spec, settings)
    examples = _convert(loaded, spec.error_field)
    if loaded.valid is not None:
        examples += _convert(loaded.valid, spec.error_field)
    data = _mlx_dataset(examples, loaded.format, tokenizer, mask_prompt=False)
    return [len(data.process(example)[0]) for example in examples]
