"""Where a training run tells its progress.

`Reporter` tells no one: the worker's `StoreReporter` writes to the job store, the command line's
`BarReporter` draws a progress bar as well, a test's collects what it checks; each overrides what it
uses. It imports nothing heavy, so the command line can subclass it before MLX loads.
"""

from __future__ import annotations

from pathlib import Path


class Reporter:
    def phase(self, name: str, message: str) -> None:
        """A part of the run begins: loading_model, loading_data, training, evaluating, saving."""

    def step(self, step: int, total: int, metrics: dict) -> None:
        """A step is done: its loss, learning rate, token counts and rates, peak memory."""

    def ranks(self, figures: dict[str, list[float]]) -> None:
        """A data-parallel step is done: each rank's own tokens_per_s and peak_memory_mb, by rank."""

    def evaluation(self, step: int, metrics: dict) -> None:
        """A validation loss (eval_loss), or a judge's score (judge_score)."""

    def best(self, step: int, eval_loss: float) -> None:
        """The validation loss of `step` is the run's lowest so far."""

    def published(self, selected: str, step: int, path: Path) -> None:
        """The adapter at `path` holds the `selected` weights ("best" or "last"), those of `step`."""

    def checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint of `step` is written at `path`."""

    def note(self, message: str, data: dict | None = None) -> None:
        """Something worth telling, with its figures."""

    def policy(self, chosen: dict) -> None:
        """How the run computes (training/policy.py)."""
