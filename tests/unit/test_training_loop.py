"""The training loop as a user reads it: every step reported in order, with the rate its update used
and a time of its own; a stop keeps every step it reported; a job trains on the rows its submission
read."""

from __future__ import annotations

import json

import mlx.core as mx
from mlx_lm.tuner.utils import build_schedule

import workbench  # noqa: F401  (before mlx)
from workbench.data import prepare
from workbench.models.resolver import ModelResolver
from workbench.training.config import TrainingConfig
from workbench.training.manager import JobManager
from workbench.training.reporter import Reporter
from workbench.training.run import TrainingRun
from workbench.training.store import JobStore
from workbench.training.worker import run_job


class Collect(Reporter):
    def __init__(self):
        self.steps, self.checkpoints = [], []

    def step(self, step, total, metrics):
        self.steps.append((step, metrics))

    def checkpoint(self, step, path):
        self.checkpoints.append(step)


def test_each_step_reports_the_learning_rate_its_update_used_and_its_own_time(settings, models_dir, tmp_path):
    config = TrainingConfig(experiment_name="loop", training_type="lora", dataset="alpaca", batch_size=2,
                            max_seq_length=64, max_steps=7, learning_rate=1e-3, lr_schedule="linear",
                            warmup_steps=3, save_every=4, validation_split=0.0)
    reporter = Collect()
    examples = prepare(config, settings)
    outcome = TrainingRun(config, f"{models_dir}/tiny", examples, tmp_path / "run", settings, reporter).run()

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
    run = TrainingRun(config, f"{models_dir}/tiny", prepare(config, settings), tmp_path / "run", settings,
                      reporter, should_stop=lambda: next(asked, "stopped"))
    outcome = run.run()

    assert outcome.status == "stopped"
    assert [step for step, _ in reporter.steps] == list(range(1, outcome.step + 1))
    assert reporter.checkpoints == [outcome.step]  # the checkpoint holds every reported step


def test_a_job_trains_on_the_rows_read_at_submission_without_reading_its_source_again(settings):
    source = settings.home_dir / "datasets" / "mine.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("".join(json.dumps({"prompt": f"Double {i}.", "completion": str(2 * i)}) + "\n"
                              for i in range(12)))
    store = JobStore(settings.home_dir / "workbench.db")
    config = TrainingConfig(experiment_name="kept", training_type="lora", dataset="mine", dataset_path="mine.jsonl",
                            batch_size=2, max_seq_length=64, max_steps=2, validation_split=0.25)
    job = JobManager(settings, ModelResolver(settings), store, manage=False).start(config, launch=False)
    source.unlink()  # only what the submission kept is left

    assert run_job(job["job_id"], settings, store, stop=lambda: None) == "completed"
    assert store.get(job["job_id"])["total_steps"] == 2
    store.close()
