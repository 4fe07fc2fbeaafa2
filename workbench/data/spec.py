"""The data fields of a training job, declared once: `TrainingConfig` inherits them, so the API, the
command line's YAML and the notebooks' forms take them flat beside the other fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

if TYPE_CHECKING:
    from workbench.training.config import TrainingConfig

# Bound of the seed: the worker hands it to MLX, whose seed is a uint64.
MAX_SEED = 2**64 - 1

DatasetFormat = Literal["auto", "alpaca", "sharegpt", "chat", "completions", "text", "preference"]


class DataSpec(BaseModel):
    """Which rows a job trains on and how they become token batches (workbench/data/sources.py says
    where rows may come from)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(
        min_length=1,
        description="alpaca, sharegpt, custom or zorbish (samples shipped with the workbench), or a "
        "Hugging Face dataset id or folder loaded with `datasets` (local or cached).",
    )
    dataset_path: str | None = Field(
        default=None,
        description="Your own file or folder (.jsonl, .json, .csv, .parquet) under an allowed root.",
    )
    dataset_format: DatasetFormat = Field(default="auto", description="How rows are read; auto detects it.")
    max_seq_length: int = Field(default=512, ge=16, le=131072, description="Longer samples are truncated.")
    mask_prompt: bool = Field(default=True, description="Train on the answers only, not on the prompts.")
    group_by_length: bool = Field(
        default=True, description="Batch rows of similar token length together (less padding)."
    )
    packing: bool = Field(
        default=False,
        description="Pack several rows into each max_seq_length sequence, attention kept within each row.",
    )
    validation_split: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Share of rows held out for validation loss."
    )
    test_split: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="Share of rows held out of training and validation; test_loss over them at the end.",
    )
    # The split, the batch order and dropout all draw from it.
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("test_split")
    @classmethod
    def _rows_left_to_train(cls, value: float, info: ValidationInfo) -> float:
        held = info.data.get("validation_split")  # absent when it failed its own checks
        if held is not None and held + value >= 1:
            raise ValueError(f"validation_split ({held}) and test_split ({value}) together must stay "
                             "below 1, leaving rows to train on")
        return value

    @classmethod
    def from_config(cls, config: TrainingConfig) -> DataSpec:
        """The data fields alone (a TrainingConfig is a DataSpec already: this drops the other fields)."""
        return cls.model_validate(config.model_dump(include=set(cls.model_fields)))

    @property
    def error_field(self) -> str:
        """The input field errors name: dataset_path when set, else dataset."""
        return "dataset_path" if self.dataset_path else "dataset"
