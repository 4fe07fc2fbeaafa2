"""What an evaluation job asks for: a model, lm-eval tasks, and how many items of each.

One pydantic model validates the API's input, the command line's and the notebooks' forms, as
TrainingConfig does for training.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.providers.params import ProviderName
from workbench.training.config import EXPERIMENT_NAME, EXPERIMENT_NAME_PATTERN, TASK_NAME_PATTERN

# Bounds that keep a job's size inside what a request may ask for (DESIGN, decision 12).
MAX_TASKS = 16
MAX_LIMIT = 100_000
MAX_FEWSHOT = 64
MAX_BATCH = 1024
MAX_TOKENS = 32_768
# Names only, not paths: lm-eval would also load a YAML file named by its path, and a YAML can import
# code (`!function`); only folders the user set up as task roots may provide them.
TASK_NAME = re.compile(TASK_NAME_PATTERN)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Unique name of the evaluation: letters, digits, . _ -; up to 64 characters.",
        json_schema_extra={"pattern": EXPERIMENT_NAME_PATTERN},
    )
    model: str | None = Field(
        default=None, min_length=1,
        description="What to evaluate: a model name or alias, an experiment's name (its selected "
        "adapter over its base, applied without fusing), or a model folder; default: the settings' "
        "default model.",
    )
    provider: ProviderName | None = Field(
        default=None,
        description="A configured remote provider (openai, anthropic, together, ollama) to evaluate instead "
        "of a local model, with `model` as its model name (default: the provider's configured model); "
        "generation tasks only. Default: the model runs here (local_mlx).",
    )
    tasks: list[str] = Field(
        min_length=1, max_length=MAX_TASKS,
        description="lm-eval task, group or tag names: lm-eval's registered tasks, the workbench's "
        "shipped ones (workbench_zorbish_mc, workbench_zorbish_gen, workbench_arith_mc, "
        "workbench_arith_gen, workbench_count_gen), or the "
        "`task:` name of a YAML in <home>/tasks or a folder of WORKBENCH_TASK_ROOTS.",
    )
    limit: int | None = Field(
        default=None, ge=1, le=MAX_LIMIT,
        description="Items evaluated per task (the first ones); default: all of them.",
    )
    num_fewshot: int | None = Field(
        default=None, ge=0, le=MAX_FEWSHOT,
        description="Examples put before each item; default: the task's own setting.",
    )
    batch_size: int = Field(
        default=8, ge=1, le=MAX_BATCH, description="Sequences scored or generated at once."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS,
        description="Tokens generated per item in generation tasks; default: the task's own "
        "max_gen_toks.",
    )
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1,
        description="Seed of lm-eval's random choices (few-shot examples, sampling).",
    )
    apply_chat_template: bool | None = Field(
        default=None,
        description="Wrap each prompt in the model's chat template; default: when the model has one.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not EXPERIMENT_NAME.fullmatch(value):
            raise ValueError("use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not TASK_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a task name: use letters, digits and . _ : -")
        if len(set(value)) != len(value):
            raise ValueError("a task is named twice")
        return value


def eval_root(settings, name: str):
    """Where an evaluation's jobs keep their files: <home>/evals/<name>/<job_id>/."""
    return settings.home_dir / "evals" / name


def remote(config: EvalConfig) -> bool:
    """Whether a remote provider answers the evaluation, not a model loaded here."""
    return config.provider not in (None, "local_mlx")
