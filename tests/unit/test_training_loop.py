"""The training loop as a user reads it: every step reported in order, with the rate its update used
and a time of its own; a stop keeps every step it reported."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.tuner.utils import build_schedule

import workbench  # noqa: F401  (before mlx)
from workbench.training.config import TrainingConfig
from workbench.training.run import TrainingRun


class Collect:
    def __init__(self):
        self.steps, self.checkpoints = [], []

    def phase(self, name, message): ...
    def evaluation(self, step, metrics): ...
    def note(self, message, data=None): ...
    def policy(self, chosen): ...

    def step(self, step, total, metrics):
        self.steps.append((step, metrics))

    def checkpoint(self, step, path):
        self.checkpoints.append(step)


def test_each_step_reports_the_learning_rate_its_update_used_and_its_own_time(settings, models_dir, tmp_path):
    config = TrainingConfig(experiment_name="loop", training_type="lora", dataset="alpaca", batch_size=2,
                            max_seq_length=64, max_steps=7, learning_rate=1e-3, lr_schedule="linear",
                            warmup_steps=3, save_every=4, validation_split=0.0)
    reporter = Collect()
    outcome = TrainingRun(config, f"{models_dir}/tiny", tmp_path / "run", settings, reporter).run()

    assert outcome.status == "completed" and outcome.step == 7
    assert [step for step, _ in reporter.steps] == list(range(1, 8))
    assert reporter.checkpoints == [4, 7]  # save_every, and the end
    schedule = build_schedule({"name": "linear_schedule", "arguments": [1e-3, 1e-4, 4], "warmup": 3})
    used = [metrics["learning_rate"] for _, metrics in reporter.steps]
    assert used == [mx.array(schedule(mx.array(u))).item() for u in range(7)]
    assert all(metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0 for _, metrics in reporter.steps)


def test_a_stop_asked_for_mid_run_checkpoints_every_step_it_reported(settings, models_dir, tmp_path):
    config = TrainingConfig(experiment_name="stopping", training_type="lora", dataset="alpaca", batch_size=2,
                            max_seq_length=64, max_steps=20, save_every=100, validation_split=0.0)
    reporter = Collect()
    asked = iter([None, None, None, "stopped"])
    run = TrainingRun(config, f"{models_dir}/tiny", tmp_path / "run", settings, reporter,
                      should_stop=lambda: next(asked, "stopped"))
    outcome = run.run()

    assert outcome.status == "stopped"
    assert [step for step, _ in reporter.steps] == list(range(1, outcome.step + 1))
    assert reporter.checkpoints == [outcome.step]  # the checkpoint holds every reported step
