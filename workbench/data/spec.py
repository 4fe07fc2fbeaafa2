"""The data fields of a training configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.training.config import TrainingConfig


@dataclass(frozen=True)
class DataSpec:
    """The data fields of a TrainingConfig (same names, same defaults)."""

    dataset: str
    dataset_path: str | None = None
    dataset_format: str = "auto"
    max_seq_length: int = 512
    mask_prompt: bool = True
    validation_split: float = 0.1
    seed: int = 0

    @classmethod
    def from_config(cls, config: TrainingConfig) -> DataSpec:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def field(self) -> str:
        """The input field errors name: dataset_path when set, else dataset."""
        return "dataset_path" if self.dataset_path else "dataset"
