"""Checkpoints that resume a run exactly, the best evaluation's weights, and adapters that mlx-lm loads.

A checkpoint holds the trainable weights, the optimizer state, the step and the data position; it is
written to a temporary folder and renamed, and `latest.json` is replaced atomically last, so a crash
mid-save leaves the previous checkpoint in force. A write that fails for want of space removes its
partial files (giving the room back to the job's store and log) and raises `DiskFull`, naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from workbench.training import faults


@dataclass
class Checkpoint:
    step: int
    path: Path
    weights: dict
    optimizer_state: dict
    extra: dict


class DiskFull(RuntimeError):
    """A checkpoint or adapter write ran out of space; the message names the file."""

    def __init__(self, path: Path):
        super().__init__(f"No space left on device writing {path}")
        self.path = path


_LOW = 1024 * 1024  # less free than this after a failed write: the disk is what failed it


@contextmanager
def _writing(path: Path, partial: Path) -> Iterator[None]:
    """Writes to `path`; on failure `partial` (a file or folder) is removed, and a failure for want
    of space becomes DiskFull. MLX reports a short write as a bare RuntimeError, without errno or
    path, so the free space decides."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < _LOW
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        if full:
            raise DiskFull(path) from exc
        raise


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with _writing(path, tmp):
        tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save(folder: Path, step: int, model, optimizer, extra: dict, keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with _writing(tmp / "trainable.safetensors", tmp):
        mx.save_safetensors(str(tmp / "trainable.safetensors"),
                            dict(tree_flatten(model.trainable_parameters())))
    faults.reach("checkpoint", step)
    with _writing(tmp / "optimizer.safetensors", tmp):
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    with _writing(tmp / "state.json", tmp):
        _write_json(tmp / "state.json", {"step": step, **extra})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_json(folder / "latest.json", {"step": step, "path": final.name})
    older = sorted(p for p in folder.glob("step-*") if p != final)
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(folder: Path) -> Checkpoint | None:
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    path = folder / json.loads(pointer.read_text())["path"]
    extra = json.loads((path / "state.json").read_text())
    return Checkpoint(
        step=extra.pop("step"),
        path=path,
        weights=mx.load(str(path / "trainable.safetensors")),
        optimizer_state=tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items())),
        extra=extra,
    )


def save_adapter(folder: Path, model, adapter_config: dict) -> Path:
    """The trained weights in mlx-lm's adapter layout (`mlx_lm.load(..., adapter_path=folder)`)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with _writing(tmp / "adapters.safetensors", tmp):
        mx.save_safetensors(str(tmp / "adapters.safetensors"),
                            dict(tree_flatten(model.trainable_parameters())))
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def save_best(folder: Path, step: int, model, keep: int | None) -> Path:
    """The trainable weights of a new best evaluation, as `folder/step-N.safetensors` (written aside
    and renamed). Earlier bests go, but `keep`: the one the latest checkpoint names, which a resume
    from it must find."""
    folder.mkdir(parents=True, exist_ok=True)
    path = best_path(folder, step)
    tmp = folder / f".step-{step:07d}.tmp.safetensors"
    with _writing(path, tmp):
        mx.save_safetensors(str(tmp), dict(tree_flatten(model.trainable_parameters())))
    os.replace(tmp, path)
    prune_best(folder, {step, keep})
    return path


def best_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:07d}.safetensors"


def prune_best(folder: Path, keep: set) -> None:
    """Remove the best weights of steps not in `keep`."""
    for path in folder.glob("step-*.safetensors"):
        if path not in {best_path(folder, step) for step in keep if step is not None}:
            path.unlink(missing_ok=True)
