"""Disk room for a job: how much a checkpoint needs, and whether the run folder has it.

A job that starts on a (nearly) full disk trains until its first checkpoint and then fails; its log,
on the same disk, is empty. So a job is refused at submission while the run folder's filesystem has
less room than its checkpoint needs, estimated from the model's safetensors headers (read, not
loaded): the trainable parameters (all of them for sft, LoRA's A and B for lora and qlora) in fp32,
twice more for AdamW's two moments, once more for the adapter written at the end, and twice more
for the best weights a run selecting them keeps (the newest, and the one the latest checkpoint names).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from workbench.errors import InputError
from workbench.training.config import TrainingConfig

_MB = 1024 * 1024
MARGIN = 4 * _MB  # the job's log, its metrics and events in the store, a checkpoint's JSON files
_BYTES_PER_TRAINABLE = 4 * (1 + 2 + 1)  # fp32 weights, AdamW's m and v, the adapter
_BYTES_PER_BEST = 4 * 2  # fp32 weights, at most two bests kept (training/run.py)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing folder)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _tensor_shapes(model_path: Path) -> dict[str, list[int]]:
    """name -> shape, from the JSON header of each safetensors file."""
    shapes = {}
    for file in sorted(model_path.glob("*.safetensors")):
        try:
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(min(size, 100 * 1024 * 1024)))
            shapes |= {name: info["shape"] for name, info in header.items() if name != "__metadata__"}
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            continue  # unreadable here: loading the model will say why; the estimate does without it
    return shapes


def trainable_parameters(model_path: str | Path, config: TrainingConfig) -> int:
    model_path = Path(model_path)
    shapes = _tensor_shapes(model_path)
    try:
        bits = json.loads((model_path / "config.json").read_text()).get("quantization", {}).get("bits")
    except (OSError, ValueError):
        bits = None

    def size(shape: list[int], packed: bool) -> tuple[int, int]:
        rows, cols = shape
        return rows, cols * 32 // bits if packed and bits else cols

    if config.training_type == "sft":
        total = 0
        for name, shape in shapes.items():
            count = 1
            for dim in (size(shape, name + ".scales" in shapes) if len(shape) == 2 else shape):
                count *= dim
            total += count
        return total
    # LoRA: an A (in x rank) and a B (rank x out) for each linear layer of the blocks it covers.
    linears = {name: shape for name, shape in shapes.items()
               if ".layers." in name and name.endswith(".weight") and len(shape) == 2}
    blocks = sorted({int(name.split(".layers.")[1].split(".")[0]) for name in linears})
    covered = set(blocks if config.lora_layers == -1 else blocks[len(blocks) - config.lora_layers:])
    total = 0
    for name, shape in linears.items():
        stem = name[: -len(".weight")]
        block = int(name.split(".layers.")[1].split(".")[0])
        if block not in covered or (config.lora_targets and not any(
                stem.endswith("." + target) for target in config.lora_targets)):
            continue
        out_features, in_features = size(shape, stem + ".scales" in shapes)
        total += config.lora_rank * (in_features + out_features)
        if config.training_type == "dora":
            total += out_features  # DoRA's magnitude of each output row
    return total


def checkpoint_bytes(model_path: str | Path, config: TrainingConfig) -> int:
    per_trainable = _BYTES_PER_TRAINABLE + (_BYTES_PER_BEST if config.select_checkpoint != "last" else 0)
    return trainable_parameters(model_path, config) * per_trainable + MARGIN


def require_room(folder: Path, needed: int) -> None:
    """A 507 naming the folder, the free space and the need, when the folder's disk is short."""
    free = free_bytes(folder)
    if free < needed:
        raise InputError("experiment_name", f"No space left for a checkpoint: {free / _MB:.1f} MB free under "
                         f"{folder}, a checkpoint of this job needs about {needed / _MB:.1f} MB; free some "
                         f"space and try again", status=507)
