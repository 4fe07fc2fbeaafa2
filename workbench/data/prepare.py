"""From the rows a DataSpec names to what a job trains on: converted, split, then tokenised.

`prepare` reads and converts every row once, at submission, so that bad data fails there and not in
the middle of training; the job keeps the result in its run folder (`Examples.save`), in mlx-lm's
layout, and its worker tokenises that (`tokenize`) rather than reading the source again. A resumed
job therefore trains on the same rows, whatever became of the source since.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data.formats import CHAT_FORMATS, MalformedRow, convert_rows, to_messages
from workbench.data.preference import PairDataset, conversation
from workbench.data.sources import LoadedRows, load_rows
from workbench.data.spec import DataSpec
from workbench.errors import InputError
from workbench.settings import Settings

if TYPE_CHECKING:
    from mlx_lm.tuner.datasets import CacheDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSummary:
    rows: int
    format: str
    source: str
    train_rows: int
    valid_rows: int
    mask_prompt: bool = True  # whether prompts are masked in effect (never for text rows)
    test_rows: int = 0


@dataclass(frozen=True)
class Examples:
    """Every row converted ({"messages"}, {"prompt", "completion"} or {"text"}) and split."""

    train: list[dict]
    valid: list[dict]
    summary: DatasetSummary
    test: list[dict] = field(default_factory=list)

    FOLDER = "data"  # under a job's run folder: train.jsonl, valid.jsonl, test.jsonl, summary.json

    def save(self, run_dir: Path) -> Path | None:
        """Written file by file and renamed into place, the summary last: a folder with a summary is
        complete. None when they could not be written (a full disk): the job's worker then reads the
        source again, and the disk, still full, fails the job with a clear error at its checkpoint."""
        folder = run_dir / self.FOLDER
        files = [("train.jsonl", _jsonl(self.train)), ("valid.jsonl", _jsonl(self.valid)),
                 ("test.jsonl", _jsonl(self.test)), ("summary.json", json.dumps(asdict(self.summary)))]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in files:
                partial = folder / f".{name}.partial"
                partial.write_text(text, encoding="utf-8")
                os.replace(partial, folder / name)
        except OSError as exc:
            log.warning("the rows of %s could not be kept under %s: %s", self.summary.source, folder, exc)
            return None
        return folder

    @classmethod
    def load(cls, run_dir: Path) -> Examples | None:
        """What `save` wrote under `run_dir`, or None if it holds none (a job submitted before jobs
        kept their rows)."""
        folder = run_dir / cls.FOLDER
        if not (folder / "summary.json").is_file():
            return None
        summary = DatasetSummary(**json.loads((folder / "summary.json").read_text(encoding="utf-8")))

        def rows(name: str) -> list[dict]:
            if not (folder / name).is_file():  # test.jsonl: kept since test_split exists
                return []
            with (folder / name).open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]

        return cls(rows("train.jsonl"), rows("valid.jsonl"), summary, rows("test.jsonl"))


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)


@dataclass(frozen=True)
class PreparedData:
    """mlx-lm datasets whose items are (tokens, offset), ready for `iterate_batches`.

    `train_examples` and `valid_examples` are the converted rows behind them, e.g. for held-out
    prompts a judge scores.
    """

    train: CacheDataset
    valid: CacheDataset | None
    summary: DatasetSummary
    train_examples: list[dict]
    valid_examples: list[dict]
    test: CacheDataset | None = None


# Converting and splitting ---------------------------------------------------------------------------


def split_indices(count: int, validation_split: float, seed: int,
                  test_split: float = 0.0) -> tuple[list[int], list[int], list[int]]:
    """Row numbers for train, valid and test: a seeded shuffle, at least one train row, each part in
    order.

    A held-out part is empty when its share is 0 or there are too few rows, else holds
    round(count * share) rows, at least 1; valid is taken first, so a test split leaves it as it was.
    """
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_valid = _share(count, validation_split, room=count - 1)
    held = n_valid + _share(count, test_split, room=count - 1 - n_valid)
    return sorted(order[held:]), sorted(order[:n_valid]), sorted(order[n_valid:held])


def _share(count: int, share: float, room: int) -> int:
    return min(room, max(1, round(count * share))) if share > 0 and room > 0 else 0


def _convert(loaded: LoadedRows, field: str) -> list[dict]:
    try:
        return convert_rows(loaded.rows, loaded.format, loaded.source, loaded.lines)
    except MalformedRow as exc:
        raise InputError(field, str(exc)) from None


def prepare(spec: DataSpec, settings: Settings) -> Examples:
    """Every row read and converted (the first malformed one raises, naming its file and line), split
    into train, valid and test: valid is a folder's own valid.jsonl, else `validation_split` of the
    rows; test is its own test.jsonl, else `test_split` of the rows."""
    loaded = load_rows(spec, settings)
    converted = _convert(loaded, spec.error_field)
    # A folder's own valid.jsonl or test.jsonl replaces its share: no rows are then held out for it.
    shares = (0.0 if loaded.valid else spec.validation_split, spec.seed,
              0.0 if loaded.test else spec.test_split)
    train, valid, test = ([converted[i] for i in part] for part in split_indices(len(converted), *shares))
    if loaded.valid:
        valid = _convert(loaded.valid, spec.error_field)
    if loaded.test:
        test = _convert(loaded.test, spec.error_field)
    summary = DatasetSummary(
        rows=len(train) + len(valid) + len(test),
        format=loaded.format,
        source=loaded.source,
        train_rows=len(train),
        valid_rows=len(valid),
        mask_prompt=spec.mask_prompt and loaded.format != "text",
        test_rows=len(test),
    )
    return Examples(train, valid, summary, test)


def validate(spec: DataSpec, settings: Settings) -> DatasetSummary:
    """Load and convert every row, so that bad data fails at submission, not in the middle of training."""
    return prepare(spec, settings).summary


# Tokenising -----------------------------------------------------------------------------------------


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

    if fmt == "preference":  # trained as SFT, and previewed: the prompt and the chosen answer
        examples = [{"messages": conversation(row)} for row in examples]
    if fmt in CHAT_FORMATS or fmt == "preference":
        return ChatDataset(examples, tokenizer, chat_key="messages", mask_prompt=mask_prompt)
    if fmt == "completions":
        return CompletionsDataset(examples, tokenizer, "prompt", "completion", mask_prompt)
    return TextDataset(examples, tokenizer, text_key="text")


def tokenize(examples: Examples, spec: DataSpec, tokenizer, pairs: bool = False) -> PreparedData:
    """Train and valid sets of (tokens, offset) items, tokenised lazily and cached (mlx-lm's CacheDataset).

    Items are cut to max_seq_length tokens. `valid` and `test` are None when they hold no rows.
    With `pairs` (DPO, ORPO), preference rows become pairs of such items, chosen then rejected
    (workbench/data/preference.py).
    """
    from mlx_lm.tuner.datasets import CacheDataset

    def wrap(rows: list[dict]):
        if pairs:
            return PairDataset(rows, tokenizer, spec.max_seq_length)
        data = _mlx_dataset(rows, examples.summary.format, tokenizer, spec.mask_prompt)
        return CacheDataset(_Truncated(data, spec.max_seq_length))

    return PreparedData(
        train=wrap(examples.train),
        valid=wrap(examples.valid) if examples.valid else None,
        summary=examples.summary,
        train_examples=examples.train,
        valid_examples=examples.valid,
        test=wrap(examples.test) if examples.test else None,
    )


def build(spec: DataSpec, tokenizer, settings: Settings) -> PreparedData:
    """`prepare` then `tokenize`: the rows `spec` names as token items, in one call."""
    return tokenize(prepare(spec, settings), spec, tokenizer)


# Looking at the data --------------------------------------------------------------------------------


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
