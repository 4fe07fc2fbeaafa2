"""Self-describing adapters: everything needed to serve or fuse an adapter is in its own
`adapter_config.json`, as `mlx_lm`'s `load_adapters` reads its own.

mlx-lm reads `fine_tune_type`, `num_layers` and `lora_parameters` (`rank`, `scale`, `dropout` and,
when set, `keys`), so `mlx_lm.load(base, adapter_path=folder)` loads ours. The workbench adds what
mlx-lm leaves to the command line: the base the adapter was trained over (`base_model`, the folder,
and `model_name`, the name asked for, resolved again where the folder is not there) and the
quantization the training applied to a base stored in full precision (`quantization`), which must be
applied again, identically, before the adapter fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONFIG = "adapter_config.json"
WEIGHTS = "adapters.safetensors"

# Adapters written before `quantization` was recorded give only `quantization_bits`: their training
# quantized with this group size (mlx's affine default), so it is the one to apply again.
_OLD_GROUP_SIZE = 64


class AdapterError(ValueError):
    """A folder that does not hold a usable adapter; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class Adapter:
    """What an adapter folder says about itself."""

    path: str
    base_model: str | None  # the base's folder when trained (or a name, for an adapter mlx-lm trained)
    model_name: str | None  # the name the training was asked for, resolved again if the folder is gone
    fine_tune_type: str  # mlx-lm's: "lora", "dora" or "full"
    quantization: dict | None  # {"bits", "group_size"[, "mode"]} to apply to a base stored unquantized
    stamp: tuple  # the files' identity and times: a new adapter written over this folder differs


def adapter_config(model, *, base_model: str, model_name: str | None, training_type: str, num_layers: int,
                   lora_parameters: dict, quantization_bits: int | None = None) -> dict:
    """The adapter_config.json of an adapter trained over `base_model` (a folder), as `model` holds it
    at the end of training: mlx-lm's keys, and the workbench's for serving and fusing it elsewhere."""
    return {
        # mlx_lm.load builds DoRA layers for "dora", LoRA layers for "lora" (qlora's too).
        "fine_tune_type": {"sft": "full", "dora": "dora"}.get(training_type, "lora"),
        "num_layers": num_layers,
        "lora_parameters": lora_parameters,
        "base_model": base_model,
        "model_name": model_name,
        "quantization": _applied_quantization(model, base_model),
        "training_type": training_type,
        "quantization_bits": quantization_bits,
    }


def _applied_quantization(model, base_model: str) -> dict | None:
    """The quantization of `model`'s layers where its base is stored unquantized: the training applied
    it. Read from the layers themselves, so the record is what was trained over."""
    try:
        stored = json.loads((Path(base_model) / "config.json").read_text())
    except (OSError, ValueError):
        stored = {}
    if "quantization" in stored:
        return None  # the base's own config.json describes it; mlx_lm.load quantizes it alike
    for _, module in model.named_modules():
        bits, group_size = getattr(module, "bits", None), getattr(module, "group_size", None)
        if isinstance(bits, int) and isinstance(group_size, int):
            found = {"bits": bits, "group_size": group_size}
            if isinstance(getattr(module, "mode", None), str):
                found["mode"] = module.mode
            return found
    return None


def is_adapter_folder(folder: Path) -> bool:
    return (folder / CONFIG).is_file()


def read_adapter(folder: str | Path, base_model: str | None = None) -> Adapter:
    """The adapter in `folder`. `base_model` is the caller's own record of its base (a job's), used only
    where the adapter does not name one."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        stamp = _stamp(folder)
    except FileNotFoundError:
        raise AdapterError(f"adapter folder {folder} is gone or incomplete (it needs {CONFIG} and "
                           f"{WEIGHTS})") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"adapter folder {folder}: {CONFIG} cannot be read ({exc})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"adapter folder {folder}: {CONFIG} is not a JSON object")
    # Old adapters (written before `model_name` and `quantization`) and mlx-lm's own: what is missing
    # is derived. `base_model` has been written since the first training run; mlx-lm's `lora` names
    # its base `model`; the job's record comes last.
    base = config.get("base_model") or config.get("model") or base_model
    quantization = config.get("quantization")
    if "quantization" not in config and config.get("quantization_bits"):
        quantization = {"bits": config["quantization_bits"], "group_size": _OLD_GROUP_SIZE}
    return Adapter(path=str(folder), base_model=base, model_name=config.get("model_name"),
                   fine_tune_type=config.get("fine_tune_type", "lora"), quantization=quantization,
                   stamp=stamp)


def _stamp(folder: Path) -> tuple:
    stamps = []
    for name in (CONFIG, WEIGHTS):
        info = (folder / name).stat()
        stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)
