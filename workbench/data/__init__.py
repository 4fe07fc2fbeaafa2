"""Turns alpaca, sharegpt and custom data into chat messages and token batches with the model's chat template.

    examples = prepare(config, settings)          # at submission: every row read, checked, converted, split
    examples.save(run_dir)                        # kept with the job ...
    data = tokenize(Examples.load(run_dir), config, tokenizer)  # ... which its worker tokenises
    data = build(spec, tokenizer, settings)       # or both at once; data.train / data.valid: (tokens, offset)
    preview(spec, tokenizer, settings, n=5)       # what the model sees, masked tokens included

spec.py: the data fields (a TrainingConfig is a DataSpec); sources.py: where rows come from;
formats.py: row formats; prepare.py: converting, splitting, tokenising, previews.
"""

from workbench.data.formats import (
    CHAT_FORMATS,
    FORMATS,
    BadRow,
    MalformedRow,
    alpaca_to_messages,
    chat_messages,
    completions_row,
    convert_row,
    convert_rows,
    detect_format,
    sharegpt_to_messages,
    text_row,
    to_messages,
)
from workbench.data.prepare import (
    DatasetSummary,
    Examples,
    PreparedData,
    build,
    prepare,
    preview,
    split_indices,
    token_lengths,
    tokenize,
    validate,
)
from workbench.data.sources import SAMPLES, LoadedRows, allowed_roots, load_rows, resolve_path
from workbench.data.spec import DataSpec

__all__ = [
    "CHAT_FORMATS",
    "FORMATS",
    "SAMPLES",
    "BadRow",
    "DataSpec",
    "DatasetSummary",
    "Examples",
    "LoadedRows",
    "MalformedRow",
    "PreparedData",
    "alpaca_to_messages",
    "allowed_roots",
    "build",
    "chat_messages",
    "completions_row",
    "convert_row",
    "convert_rows",
    "detect_format",
    "load_rows",
    "prepare",
    "preview",
    "resolve_path",
    "sharegpt_to_messages",
    "split_indices",
    "text_row",
    "to_messages",
    "token_lengths",
    "tokenize",
    "validate",
]
