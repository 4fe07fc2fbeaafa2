"""Where a job's rows come from (`load_rows`): shipped samples, user files and folders, hub datasets.

* `dataset_path` set: it is your own data, a file (.jsonl, .json, .csv, .parquet) or a folder, and
  `dataset` then only hints at the format: `alpaca` or `sharegpt` read the rows in that format,
  `custom` (or anything else, which is then just a label) detects it from the first row. An explicit
  `dataset_format` other than `auto` always wins over the hint.
  A relative path is taken from `<home>/datasets`; after `Path.resolve()` (symbolic links followed)
  the path must lie under one of `allowed_roots(settings)`: `<home>/datasets` and the folders in
  `settings.dataset_roots`. A folder holding `train.jsonl` is read in mlx-lm's layout, and its
  `valid.jsonl` and `test.jsonl`, when there, are the validation and test sets (no rows are then held
  out of train for them); any other
  folder goes to `datasets.load_dataset(folder, split="train")`.
* else `dataset` is `alpaca`, `sharegpt`, `custom`, `zorbish` or `preference`: the samples shipped in
  workbench/data/samples/ (custom and zorbish are the chat format, {"messages": [...]}; preference
  holds {"prompt", "chosen", "rejected"} rows, workbench/data/preference.py);
* else `dataset` is a path (absolute, starting with `.` or `~`, or an existing name under
  `<home>/datasets`): read as `dataset_path` would be, under the same allowed roots;
* else `dataset` is a Hugging Face dataset id, loaded with `datasets.load_dataset(id, split="train")`.
  When the hub is off (workbench/hub.py: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or
  `settings.hub_downloads` off) only the local datasets cache is read. Otherwise one quick hub lookup
  comes first: a missing dataset fails at once, and when the hub cannot be reached the cache alone is
  read, so that no network retries hold a job submission for long.

JSON-lines files are read line by line here (not through `datasets`), so that a broken line is named
by its number; .json, .csv and .parquet files go through `datasets`' builders (CSV columns as text).
Every error is an InputError naming `dataset_path` when that is set, else `dataset`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from workbench import hub
from workbench.data.formats import BadRow, detect_format, locate
from workbench.data.spec import DataSpec
from workbench.errors import InputError
from workbench.settings import Settings

# shipped name → its format
SAMPLES = {"alpaca": "alpaca", "sharegpt": "sharegpt", "custom": "chat", "zorbish": "chat",
           "preference": "preference"}
PATH_HINTS = {"alpaca": "alpaca", "sharegpt": "sharegpt", "custom": "auto"}  # `dataset` beside a path
BUILDERS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}  # read through `datasets`
SUFFIXES = (".jsonl", *BUILDERS)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class LoadedRows:
    rows: list[dict]  # as read, before conversion
    format: str  # one of FORMATS, never "auto"
    source: str  # what errors and summaries name: a file, a folder, a sample or a hub id
    lines: list[int] | None = None  # 1-based line of each row, for JSON-lines files
    valid: LoadedRows | None = None  # a folder's own valid.jsonl
    test: LoadedRows | None = None  # a folder's own test.jsonl


# Where data may be read from ------------------------------------------------------------------------


def allowed_roots(settings: Settings) -> list[Path]:
    """Folders user data may come from: `<home>/datasets` (created) and `settings.dataset_roots`."""
    home = settings.home_dir / "datasets"
    home.mkdir(parents=True, exist_ok=True)
    roots = [home.resolve()]
    for root in getattr(settings, "dataset_roots", None) or []:
        path = Path(root).expanduser().resolve()
        if path not in roots:
            roots.append(path)
    return roots


def resolve_path(raw: str, settings: Settings, field: str = "dataset_path") -> Path:
    """An existing file or folder under an allowed root; relative paths start at `<home>/datasets`."""
    roots = allowed_roots(settings)
    if "\x00" in raw:  # the OS cannot take it; pathlib raises a bare ValueError
        raise InputError(field, "a path cannot hold a NUL byte")
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # "~someone" where no such user exists
        raise InputError(field, f"{raw[:80]!r}: no such user's home folder") from None
    if not path.is_absolute():
        path = roots[0] / path
    try:
        path = path.resolve()
        if not any(path == root or path.is_relative_to(root) for root in roots):
            where = ", ".join(str(root) for root in roots)
            raise InputError(field, f"{raw!r} resolves to {path}, which must lie under {where}")
        # stat, never open: opening a FIFO waits for a writer, and the request would hang.
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(field, f"{raw!r}: no such file or folder ({path})") from None
    except OSError as exc:  # a name over 255 characters, a path too long, a loop of links
        raise InputError(field, f"{raw[:80]!r}{'...' if len(raw) > 80 else ''}: {exc.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(field, f"{raw!r} is not a regular file or a folder (a FIFO, socket or device "
                                "cannot be read as data)")
    return path


# Reading rows ---------------------------------------------------------------------------------------


def load_rows(spec: DataSpec, settings: Settings) -> LoadedRows:
    """The rows `spec` names, read but not converted, with their format (see the module's docstring)."""
    if spec.dataset_path:
        hint = PATH_HINTS.get(spec.dataset, "auto")
        fmt = spec.dataset_format if spec.dataset_format != "auto" else hint
        return _load_path(resolve_path(spec.dataset_path, settings), fmt, "dataset_path", settings)
    if spec.dataset in SAMPLES:
        return _load_sample(spec.dataset, spec.dataset_format)
    return _load_named(spec.dataset, spec.dataset_format, settings)


def _load_sample(name: str, fmt: str) -> LoadedRows:
    source = f"sample {name}.jsonl"
    text = (resources.files("workbench.data") / "samples" / f"{name}.jsonl").read_text(encoding="utf-8")
    rows, lines = _parse_jsonl(text.splitlines(), source, "dataset")
    return _finish(rows, fmt if fmt != "auto" else SAMPLES[name], source, "dataset", lines)


def _load_named(name: str, fmt: str, settings: Settings) -> LoadedRows:
    home = allowed_roots(settings)[0]
    # os.path.exists, not Path.exists: a name the filesystem cannot hold (over 255 bytes, a NUL) is
    # simply no file there, where Path.exists raises.
    if name.startswith(("/", ".", "~")) or os.path.exists(home / name):
        return _load_path(resolve_path(name, settings, "dataset"), fmt, "dataset", settings)
    if not _HUB_ID.match(name) or ".." in name:
        raise InputError(
            "dataset",
            f"{name!r} is not a shipped sample ({', '.join(SAMPLES)}), a file or folder under "
            f"{home}, or a Hugging Face dataset id (owner/name)",
        )
    if os.path.exists(name):  # `datasets` would read this path from the working directory
        raise InputError(
            "dataset",
            f"{name!r} is a path in the working directory; give a path under an allowed root instead "
            f"(relative paths are taken from {home})",
        )
    return _load_hub(name, fmt, settings)


def _own_split(path: Path, fmt: str, field: str) -> LoadedRows | None:
    """A folder's own valid.jsonl or test.jsonl beside its train.jsonl, read in train's format; None
    when it is missing or empty."""
    if not path.is_file():
        return None
    rows, lines = _read_jsonl(path, field)
    return LoadedRows(rows, fmt, str(path), lines) if rows else None


def _load_path(path: Path, fmt: str, field: str, settings: Settings) -> LoadedRows:
    if path.is_dir():
        _only_regular_files(path, field)
        train = path / "train.jsonl"
        if train.is_file():
            rows, lines = _read_jsonl(train, field)
            loaded = _finish(rows, fmt, str(train), field, lines)
            return replace(loaded, valid=_own_split(path / "valid.jsonl", loaded.format, field),
                           test=_own_split(path / "test.jsonl", loaded.format, field))
        return _finish(_datasets_rows(str(path), {}, path, field, settings), fmt, str(path), field)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows, lines = _read_jsonl(path, field)
        return _finish(rows, fmt, str(path), field, lines)
    if suffix in BUILDERS:
        kwargs: dict[str, Any] = {"data_files": str(path)}
        if suffix == ".csv":
            kwargs["features"] = _csv_features(path, field)
        rows = _datasets_rows(BUILDERS[suffix], kwargs, path, field, settings)
        return _finish(rows, fmt, str(path), field)
    kinds = ", ".join(SUFFIXES)
    raise InputError(field, f"{path}: unsupported file type {suffix or '(none)'!r}; use {kinds} or a folder")


def _only_regular_files(folder: Path, field: str) -> None:
    """A FIFO among a folder's files (at any depth: `datasets` globs into subfolders) would hang
    whoever opens it; a socket or device is no data either."""
    for root, _, names in os.walk(folder):
        for name in names:
            if not os.path.isfile(os.path.join(root, name)):
                raise InputError(field, f"{os.path.join(root, name)} is not a regular file (a FIFO, socket, "
                                        "device or broken link cannot be read as data)")


def _read_jsonl(path: Path, field: str) -> tuple[list[dict], list[int]]:
    try:
        with path.open(encoding="utf-8") as handle:
            return _parse_jsonl(handle, str(path), field)
    except UnicodeDecodeError as exc:
        raise InputError(field, f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(field, f"{path}: cannot be read ({exc.strerror or exc})") from None


def _parse_jsonl(lines: Iterable[str], source: str, field: str) -> tuple[list[dict], list[int]]:
    rows, numbers = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON: {exc.msg} (column {exc.colno})"
            raise InputError(field, f"{source} line {number}: {problem}") from None
        if not isinstance(row, dict):
            problem = f"expected a JSON object, got {type(row).__name__}"
            raise InputError(field, f"{source} line {number}: {problem}")
        rows.append(row)
        numbers.append(number)
    return rows, numbers


def _csv_features(path: Path, field: str):
    """Every CSV column as text, so '42' stays a string rather than becoming an int column."""
    from datasets import Features, Value

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(field, f"{path}: cannot read the CSV header ({exc})") from None
    if not header:
        raise InputError(field, f"{path}: the CSV file has no header row")
    return Features({name: Value("string") for name in header})


def _datasets_rows(builder: str, kwargs: dict, path: Path, field: str, settings: Settings) -> list[dict]:
    import datasets

    cache = settings.home_dir / "cache" / "datasets"
    try:
        loaded = datasets.load_dataset(builder, split="train", cache_dir=str(cache), **kwargs)
    except Exception as exc:  # pyarrow, pandas and datasets each raise their own kinds
        raise InputError(field, f"{path}: cannot be read: {_brief(exc)}") from None
    return loaded.to_list()


def _finish(
    rows: list[dict], fmt: str, source: str, field: str, lines: list[int] | None = None
) -> LoadedRows:
    if not rows:
        raise InputError(field, f"{source} has no rows")
    if fmt == "auto":
        try:
            fmt = detect_format(rows[0])
        except BadRow as exc:
            raise InputError(field, f"{source} {locate(0, lines)}: {exc}") from None
    return LoadedRows(rows, fmt, source, lines)


# Hugging Face datasets ------------------------------------------------------------------------------


def _load_hub(name: str, fmt: str, settings: Settings) -> LoadedRows:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    why = hub.offline_reason(settings, "dataset")
    offline = why is not None
    if not offline:
        state, _ = hub.lookup(name, "dataset", settings.hub_timeout_s)
        if state == "missing":
            raise InputError(
                "dataset",
                f"{name!r}: no such dataset on the Hugging Face hub (or it is private)"
            )
        offline, why = state == "unreachable", "the Hugging Face hub could not be reached"
    try:
        with hub.datasets_offline(offline):
            loaded = datasets.load_dataset(name, split="train")
    except DatasetNotFoundError:
        raise InputError("dataset", f"{name!r}: no such dataset on the Hugging Face hub") from None
    except (ConnectionError, FileNotFoundError) as exc:
        if offline:
            raise InputError(
                "dataset", f"{name!r} is not in the local datasets cache, and {why}"
            ) from None
        raise InputError("dataset", f"{name!r} could not be loaded: {_brief(exc)}") from None
    except Exception as exc:
        raise InputError("dataset", f"{name!r} could not be loaded: {_brief(exc)}") from None
    return _finish(loaded.to_list(), fmt, f"Hugging Face dataset {name}", "dataset")


def _brief(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
