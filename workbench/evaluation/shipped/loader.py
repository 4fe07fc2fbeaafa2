"""Loads a shipped task's items from the JSON-lines file beside it (the YAML's `custom_dataset`).

lm-eval hands `dataset_kwargs` to `datasets.load_dataset`, which reads a relative `data_files` from
the working directory, not from the YAML's folder; this resolves it here and builds the split in
memory, so nothing is fetched or cached.
"""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_file: str, **_metadata) -> datasets.DatasetDict:
    rows = [json.loads(line) for line in (HERE / data_file).read_text().splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
