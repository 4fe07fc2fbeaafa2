"""The optimizer a run trains with: one of `mlx.optimizers`, named and set as mlx-lm's `lora` command
names them (`optimizer`, and the chosen one's `optimizer_config`), under the run's learning-rate
schedule.

Each optimizer's settings are a pydantic model of the keyword arguments its mlx class takes, so a
setting it does not take, or a value out of range, is a 400 naming `optimizer_config.<setting>` at
submission, never a failed job. Every optimizer keeps its whole state in `optimizer.state` (its step,
the scheduled rate, its moments), which checkpoints save and restore as they do AdamW's
(docs/architecture.md, "Optimizers").
"""

from __future__ import annotations

from typing import Annotated

import mlx.optimizers as optim
from mlx_lm.tuner.utils import build_schedule
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench.errors import InputError

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Positive = Annotated[float, Field(gt=0.0, le=1.0)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AdamSettings(_Settings):
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Positive = 1e-8
    bias_correction: bool = False


class SGDSettings(_Settings):
    momentum: Beta = 0.0
    dampening: float = Field(default=0.0, ge=0.0, le=1.0)
    nesterov: bool = False


class AdafactorSettings(_Settings):
    beta_1: float | None = Field(default=None, gt=0.0, lt=1.0)
    decay_rate: float = Field(default=-0.8, ge=-1.0, lt=0.0)
    clip_threshold: float = Field(default=1.0, gt=0.0, le=1e6)
    eps: tuple[Positive, Positive] = (1e-30, 1e-3)
    scale_parameter: bool = True
    # Off by default, unlike mlx's: with it on, Adafactor ignores the learning rate and its schedule.
    relative_step: bool = False
    warmup_init: bool = False


class MuonSettings(_Settings):
    momentum: Beta = 0.95
    nesterov: bool = True
    ns_steps: int = Field(default=5, ge=1, le=50)


SETTINGS: dict[str, type[_Settings]] = {"adamw": AdamSettings, "adam": AdamSettings, "sgd": SGDSettings,
                                        "adafactor": AdafactorSettings, "muon": MuonSettings}
CLASSES = {"adamw": optim.AdamW, "adam": optim.Adam, "sgd": optim.SGD, "adafactor": optim.Adafactor,
           "muon": optim.Muon}
# mlx's Adam has no weight decay (AdamW is Adam with it).
_WITHOUT_WEIGHT_DECAY = {"adam"}


def settings(config) -> _Settings:
    """The chosen optimizer's settings from a TrainingConfig, checked; an InputError names the field."""
    name = config.optimizer
    if config.weight_decay and name in _WITHOUT_WEIGHT_DECAY:
        raise InputError("weight_decay", f"{name} has no weight decay: use adamw, or weight_decay 0")
    model = SETTINGS[name]
    try:
        chosen = model(**(config.optimizer_config or {}))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            takes = ", ".join(model.model_fields)
            why = f"{name} takes no setting {key!r}; it takes {takes}"
            raise InputError(f"optimizer_config.{key}", why) from None
        raise InputError(f"optimizer_config.{key}", f"{error['msg']} (for {name})") from None
    if name == "sgd" and chosen.nesterov and (chosen.momentum <= 0 or chosen.dampening != 0):
        raise InputError("optimizer_config.nesterov", "sgd's nesterov needs momentum above 0 and dampening 0")
    return chosen


def check(config) -> None:
    """Refuse, at submission, optimizer settings the run could not build."""
    settings(config)


def schedule(config, total: int):
    """The learning rate over `total` steps: `lr_schedule` after `warmup_steps`, as mlx-lm builds it
    (cosine and linear decay to a tenth of the rate)."""
    rate, warmup = config.learning_rate, config.warmup_steps
    if config.lr_schedule == "constant":
        return rate if not warmup else build_schedule(
            {"name": "linear_schedule", "arguments": [rate, rate, 1], "warmup": warmup})
    decay_steps = max(total - warmup, 1)
    if config.lr_schedule == "cosine":
        return build_schedule({"name": "cosine_decay", "arguments": [rate, decay_steps, rate * 0.1],
                               "warmup": warmup})
    return build_schedule({"name": "linear_schedule", "arguments": [rate, rate * 0.1, decay_steps],
                           "warmup": warmup})


def build(config, learning_rate) -> optim.Optimizer:
    """The optimizer of `config` with `learning_rate` (a number or a schedule)."""
    chosen = settings(config).model_dump()
    if config.optimizer not in _WITHOUT_WEIGHT_DECAY:
        chosen["weight_decay"] = config.weight_decay
    return CLASSES[config.optimizer](learning_rate=learning_rate, **chosen)
