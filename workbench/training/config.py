"""The training configuration: what to train, on which rows, and how (the fields fine-tuners expect).

One pydantic model validates the API's input, the command line's YAML and the notebooks' forms.
Defaults run on the tiny local model in seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from workbench.data.spec import DatasetFormat, DataSpec  # noqa: F401  (DatasetFormat: the panels read it here)
from workbench.errors import InputError

# Matched with fullmatch: `$` also matches before a trailing newline, which let "name\n" through.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The same, anchored, as a JSON schema states it (a schema's pattern matches anywhere otherwise).
EXPERIMENT_NAME_PATTERN = f"^(?:{EXPERIMENT_NAME.pattern})$"
# An IPv4/IPv6 address, a host name, or a hostfile's name in <home>/hosts/ (no path: no slash).
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$"
HostName = Annotated[str, StringConstraints(pattern=HOST_PATTERN)]
# An lm-eval task's name, never a path (lm-eval would load a YAML named by its path, and a YAML can
# import code): workbench/evaluation/config.py.
TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
TaskName = Annotated[str, StringConstraints(pattern=TASK_NAME_PATTERN)]
LAYER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")

# Bounds that keep every number inside what the worker hands to MLX (a memory limit is a size_t of
# bytes, the seed a uint64: data/spec.py): past them the worker died with `std::bad_cast` long after
# submission.
MAX_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB
MAX_STEPS = 10_000_000

TrainingType = Literal["sft", "lora", "qlora", "dora", "dpo", "orpo"]
# The optimizers of mlx.optimizers a run may train with (workbench/training/optimizers.py).
OptimizerName = Literal["adamw", "adam", "sgd", "adafactor", "muon"]
# Where a run also reports its metrics (workbench/training/trackers.py).
TrackerName = Literal["tensorboard", "mlflow", "wandb"]
SettingName = Annotated[str, StringConstraints(max_length=64)]
SettingPair = Annotated[list[float], Field(max_length=4)]  # betas, adafactor's eps
PREFERENCE_TYPES = ("dpo", "orpo")  # trained on preference pairs (workbench/training/preference.py)


class TrainingTarget(BaseModel):
    """What to train: the first fields of a TrainingConfig. Pydantic orders inherited fields base
    first, and that order is the API schema's and the notebook form's."""

    experiment_name: str = Field(
        description="Unique name: letters, digits, . _ -; up to 64 characters.",
        # Published for clients generated from the schema; the validator below enforces it with a
        # message that says what is accepted.
        json_schema_extra={"pattern": EXPERIMENT_NAME_PATTERN},
    )
    model_name: str | None = Field(
        default=None, min_length=1, description="Base model: name, alias or folder (else the default)."
    )
    training_type: TrainingType = Field(
        description="sft (all weights), lora, qlora (LoRA over a 4-bit base), dora (weight-decomposed "
        "LoRA), or dpo / orpo (LoRA on preference pairs: dataset_format preference)."
    )

    @field_validator("experiment_name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not EXPERIMENT_NAME.fullmatch(value):
            raise ValueError("use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value


# What to train, then the data fields (DataSpec, workbench/data/spec.py), then the fields below. (No
# docstring: it would become the schema's description.)
class TrainingConfig(DataSpec, TrainingTarget):
    # Every float must be finite: an infinite weight_decay or lora_alpha trained a NaN model that
    # was then served as "completed".
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Optimisation -------------------------------------------------------------------------------
    batch_size: int = Field(default=4, ge=1, le=1024)
    learning_rate: float = Field(default=1e-4, gt=0, le=1.0)
    num_epochs: int = Field(default=1, ge=1, le=1000)
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS,
        description="Stop after this many steps; default: num_epochs over the data."
    )
    warmup_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    optimizer: OptimizerName = Field(
        default="adamw", description="From mlx.optimizers: adamw, adam, sgd, adafactor or muon; the "
        "learning-rate schedule applies to each.")
    optimizer_config: dict[SettingName, bool | int | float | SettingPair] | None = Field(
        default=None, max_length=16,
        description="The chosen optimizer's own settings, by mlx.optimizers' names: adam/adamw betas, eps, "
        "bias_correction; sgd momentum, dampening, nesterov; adafactor beta_1, decay_rate, clip_threshold, "
        "eps (two numbers), scale_parameter, relative_step, warmup_init; muon momentum, nesterov, ns_steps.",
    )
    max_grad_norm: float | None = Field(default=1.0, gt=0, le=1e6, description="Clip gradients to this norm.")
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory.")
    memory_limit_mb: int | None = Field(
        default=None, ge=64, le=MAX_MEMORY_MB,
        description="MLX memory limit for the run (mx.set_memory_limit).",
    )
    cache_limit_mb: int | None = Field(
        default=None, ge=0, le=MAX_MEMORY_MB,
        description="Most freed memory MLX keeps cached for reuse (mx.set_cache_limit).",
    )
    fast_kernels: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="CPU only: the loss, SwiGLU and attention on the workbench's fast exp. auto measures "
        "each against MLX's own on this machine at the job's shapes (cached) and takes the faster.",
    )

    # Distributed --------------------------------------------------------------------------------
    num_workers: int = Field(
        default=1, ge=1, le=64,
        description="Processes (ranks) that train together, data-parallel under mlx.launch: each takes "
        "batch_size / num_workers rows of every batch; the result equals one process's.",
    )
    distributed_backend: Literal["auto", "ring", "jaccl", "mpi", "nccl"] = Field(
        default="auto",
        description="mx.distributed's backend when num_workers > 1: auto is nccl where each rank of a host "
        "has a GPU of its own, else ring (TCP).",
    )
    hosts: list[HostName] | None = Field(
        default=None, min_length=1, max_length=64,
        description="num_workers > 1: where the ranks run. Default: this machine. A list of addresses "
        "(num_workers spread evenly over them, reached by ssh as mlx.launch reaches them; the ring "
        "needs IP addresses), or the name of a hostfile in mlx.launch's JSON format in <home>/hosts/ "
        "(lab.json), one rank a host. "
        "The first host runs rank 0, which writes the job's store: it must share this workbench's home.",
    )
    distributed_timeout_s: float = Field(
        default=300.0, ge=1.0, le=86400.0,
        description="num_workers > 1: no training step within this many seconds (no next start-up phase "
        "within it or 120 s) means a rank hangs; the job then ends failed (resumable), every rank stopped.",
    )

    # LoRA ---------------------------------------------------------------------------------------
    lora_rank: int = Field(default=8, ge=1, le=1024)
    lora_alpha: float = Field(default=16.0, gt=0, le=1e6, description="LoRA scale is lora_alpha / lora_rank.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_layers: int = Field(default=-1, ge=-1, le=100_000,
                             description="Last N transformer layers get LoRA; -1: all.")
    lora_targets: list[str] | None = Field(
        default=None, min_length=1,
        description="The layers of each block that get LoRA, by name (q_proj, v_proj) or path in the block "
                    "(self_attn.q_proj); default: every linear layer of the block, as mlx-lm does.",
    )
    quantization: Literal["int4", "int8"] | None = Field(
        default=None, description="QLoRA's base: int4 (default for qlora) or int8; dora, dpo and orpo "
        "train over a base quantized so when it is set."
    )

    # Preference (dpo, orpo) ---------------------------------------------------------------------
    beta: float = Field(
        default=0.1, gt=0, le=100.0,
        description="dpo: the KL strength β (rewards are β times the log-ratio against the base); orpo: "
        "the weight λ of the odds-ratio term (mlx-lm-lora and TRL call both beta).",
    )
    dpo_loss: Literal["sigmoid", "hinge", "ipo"] = Field(
        default="sigmoid",
        description="dpo's loss: sigmoid (the DPO paper's), hinge (SLiC), or ipo (squared, on per-token "
        "mean log-ratios).",
    )

    # Evaluation and checkpoints -----------------------------------------------------------------
    eval_steps: int = Field(default=50, ge=1, le=MAX_STEPS,
                            description="Validation loss every this many steps.")
    eval_batches: int = Field(default=4, ge=1, le=100_000, description="Validation batches per evaluation.")
    eval_provider: Literal["openai", "anthropic", "together", "ollama", "local_mlx"] | None = Field(
        default=None, description="A provider that judges the model's answers to held-out prompts."
    )
    eval_prompts: int = Field(default=3, ge=1, le=50, description="Held-out prompts the judge scores.")
    eval_tasks: list[TaskName] | None = Field(
        default=None, min_length=1, max_length=16,
        description="lm-eval tasks to evaluate the result on when training completes: an evaluation "
        "job named <experiment_name>-eval, linked from the status as eval_job (see POST /eval/start).",
    )
    eval_limit: int | None = Field(default=None, ge=1, le=100_000,
                                   description="eval_tasks: items evaluated per task; default: all.")
    report_to: list[TrackerName] | None = Field(
        default=None, max_length=3,
        description="Also report metrics, configuration and the final adapter to: tensorboard (event files "
        "in the run folder), mlflow (a store under the home unless MLFLOW_TRACKING_URI is set), wandb "
        "(offline, in the run folder, without WANDB_API_KEY). Each needs its extra installed.",
    )
    save_every: int = Field(default=100, ge=1, le=MAX_STEPS,
                            description="Checkpoint every this many steps (and at stop).")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, le=100_000,
        description="After this many validations without a new best eval_loss the run completes early. "
        "Needs validation rows.",
    )
    select_checkpoint: Literal["best", "last"] | None = Field(
        default=None,
        description="The weights the adapter publishes (served, fused, evaluated): best (lowest eval_loss) "
        "or last; default: best when there are validation rows, else last.",
    )

    @field_validator("lora_targets")
    @classmethod
    def _target_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not LAYER_PATH.fullmatch(name):
                raise ValueError(f"{name!r} is not a layer name such as q_proj or self_attn.q_proj")
        return value

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self):
        if self.eval_limit and not self.eval_tasks:
            raise ValueError("eval_limit applies with eval_tasks only")
        if self.hostfile and len(self.hosts) > 1:
            raise ValueError("hosts: a hostfile lists the hosts itself: name it alone")
        if self.quantization and self.training_type not in ("qlora", "dora", *PREFERENCE_TYPES):
            raise ValueError("quantization applies to training_type qlora, dora, dpo and orpo only")
        if self.lora_targets and self.training_type == "sft":
            raise ValueError("lora_targets applies to the LoRA-based training types, not sft")
        if self.packing and self.training_type in PREFERENCE_TYPES:
            raise ValueError(f"packing does not apply to {self.training_type}: a chosen and a rejected "
                             "answer are scored as a pair of rows, never packed")
        if self.training_type == "qlora" and self.quantization is None:
            self.quantization = "int4"
        if self.report_to:
            self.report_to = list(dict.fromkeys(self.report_to))  # each tracker once
        return self

    def check_rows(self, valid_rows: int) -> None:
        """Refuse, at submission, what needs validation rows when the split left none."""
        if valid_rows:
            return
        why = "needs validation rows: set validation_split above 0, or give a folder with a valid.jsonl"
        if self.early_stopping_patience is not None:
            raise InputError("early_stopping_patience", why)
        if self.select_checkpoint == "best":
            raise InputError("select_checkpoint", why)

    def check_format(self, fmt: str) -> None:
        """Refuse, at submission, preference training on rows that hold no preferences."""
        if self.training_type in PREFERENCE_TYPES and fmt != "preference":
            raise InputError(self.error_field, f"{self.training_type} trains on preference rows (a prompt or "
                             f"messages, then 'chosen' and 'rejected'); these rows are {fmt}: use "
                             "dataset_format preference, or the shipped sample 'preference'")

    @property
    def preference(self) -> bool:
        """Whether the run trains on preference pairs (dpo, orpo)."""
        return self.training_type in PREFERENCE_TYPES

    def selects_best(self, has_validation: bool) -> bool:
        """Whether the published adapter holds the best evaluation's weights rather than the last."""
        return has_validation and self.select_checkpoint != "last"

    @property
    def hostfile(self) -> str | None:
        """The hostfile `hosts` names, if it names one (a name ending in .json)."""
        return next((h for h in self.hosts or [] if h.endswith(".json")), None)

    @property
    def quantization_bits(self) -> int | None:
        return {"int4": 4, "int8": 8}.get(self.quantization or "")
