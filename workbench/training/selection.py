"""Which weights a run publishes, and when it stops early: the best validation loss followed.

mlx-lm's adapter holds the last weights, however far validation loss rose after its best (mlx-lm
issues 331, 509). `Selection` follows each evaluation; its state goes into every checkpoint, so a
resumed run keeps the same best and stops at the same evaluation as an uninterrupted one. The best
weights themselves are kept by `checkpoint.save_best`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Selection:
    patience: int | None  # evaluations without a new best before the run stops early
    best_step: int | None = None
    best_eval_loss: float | None = None
    since_best: int = 0  # evaluations since the best one

    def observe(self, step: int, eval_loss: float) -> bool:
        """Count an evaluation; True when it is a new best (strictly lower)."""
        if self.best_eval_loss is None or eval_loss < self.best_eval_loss:
            self.best_step, self.best_eval_loss, self.since_best = step, eval_loss, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        """Whether patience ran out: the run should stop now."""
        return self.patience is not None and self.since_best >= self.patience

    def early_stop(self, step: int) -> str:
        """What an early stop at `step` tells."""
        return (f"early stop at step {step}: {self.since_best} evaluations without a lower eval_loss than "
                f"step {self.best_step}'s ({self.best_eval_loss:.4f})")

    def state(self) -> dict:
        """What a checkpoint keeps."""
        return {"best_step": self.best_step, "best_eval_loss": self.best_eval_loss,
                "evaluations_since_best": self.since_best}

    @classmethod
    def restored(cls, patience: int | None, saved: dict) -> Selection:
        """As a checkpoint's state left it (a checkpoint from before selection: nothing seen yet)."""
        return cls(patience, saved.get("best_step"), saved.get("best_eval_loss"),
                   saved.get("evaluations_since_best", 0))
