"""DPO and ORPO runs on the shipped preference sample and the tiny model: each step reports the
rewards a user plots, the adapter publishes, and a stopped run resumed repeats the uninterrupted one."""

from __future__ import annotations

import math

import pytest

import workbench  # noqa: F401  (before mlx)
from workbench.data import prepare
from workbench.training.config import TrainingConfig
from workbench.training.reporter import Reporter
from workbench.training.run import TrainingRun

REWARDS = ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")


class Collect(Reporter):
    def __init__(self):
        self.steps, self.evaluations = [], []

    def step(self, step, total, metrics):
        self.steps.append((step, metrics))

    def evaluation(self, step, metrics):
        self.evaluations.append((step, metrics))


def config(training_type: str, **fields) -> TrainingConfig:
    base = dict(experiment_name=training_type, training_type=training_type, dataset="preference",
                batch_size=4, max_seq_length=96, max_steps=6, learning_rate=5e-4, lr_schedule="constant",
                validation_split=0.0, save_every=100)
    return TrainingConfig(**{**base, **fields})


def train(cfg: TrainingConfig, settings, models_dir, run_dir, resume=False, should_stop=lambda: None):
    reporter = Collect()
    run = TrainingRun(cfg, f"{models_dir}/tiny", prepare(cfg, settings), run_dir, settings, reporter,
                      should_stop=should_stop)
    return run.run(resume=resume), reporter


def test_dpo_reports_rewards_every_step_and_its_margin_grows(settings, models_dir, tmp_path):
    outcome, reporter = train(config("dpo", max_steps=10, learning_rate=1e-3, validation_split=0.1, eval_steps=10,
                                     test_split=0.05),
                              settings, models_dir, tmp_path / "run")

    assert outcome.status == "completed" and outcome.adapter_path is not None
    first = reporter.steps[0][1]
    for _, metrics in reporter.steps:
        assert set(REWARDS) <= set(metrics)
        assert 0.0 <= metrics["reward_accuracy"] <= 1.0
        assert math.isclose(metrics["reward_margin"], metrics["chosen_reward"] - metrics["rejected_reward"],
                            abs_tol=1e-6)
        assert metrics["tokens"] > 0
    # Step 1's adapter adds nothing (LoRA's B starts at 0): the policy is the reference.
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    margins = [metrics["reward_margin"] for _, metrics in reporter.steps]
    assert sum(margins[-5:]) / 5 > sum(margins[:5]) / 5 + 0.05  # each step's batch differs: means of 5
    evaluated = {name: value for _, metrics in reporter.evaluations for name, value in metrics.items()}
    assert evaluated["eval_loss"] < math.log(2)  # held-out pairs ranked better too
    assert math.isfinite(evaluated["test_loss"])  # the 15 test pairs, with the published weights


def test_orpo_trains_a_few_steps_with_rewards(settings, models_dir, tmp_path):
    # 30 held-out pairs in 6 batches of 5: each evaluation scores all of them.
    cfg = config("orpo", beta=0.5, batch_size=5, validation_split=0.1, eval_steps=1, eval_batches=6,
                 max_steps=4)
    outcome, reporter = train(cfg, settings, models_dir, tmp_path / "run")

    assert outcome.status == "completed"
    assert all(math.isfinite(metrics["loss"]) for _, metrics in reporter.steps)
    for _, metrics in reporter.steps:
        assert 0.0 <= metrics["reward_accuracy"] <= 1.0
        assert metrics["chosen_reward"] < 0 and metrics["rejected_reward"] < 0  # λ · mean log-probability
    held_out = [metrics["eval_loss"] for _, metrics in reporter.evaluations]
    assert len(held_out) == 4 and held_out[-1] < held_out[0]


def test_a_stopped_dpo_run_resumed_repeats_the_uninterrupted_one(settings, models_dir, tmp_path):
    cfg = config("dpo", max_steps=6)
    _, whole = train(cfg, settings, models_dir, tmp_path / "whole")
    asked = iter([None, None, None, "stopped"])
    stopped, first = train(cfg, settings, models_dir, tmp_path / "parts", should_stop=lambda: next(asked))
    assert stopped.status == "stopped" and stopped.step == 3
    resumed, second = train(cfg, settings, models_dir, tmp_path / "parts", resume=True)

    assert resumed.status == "completed"
    pieces = first.steps + second.steps
    assert [step for step, _ in pieces] == list(range(1, 7))
    for (_, a), (_, b) in zip(whole.steps, pieces):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
        assert b["reward_margin"] == pytest.approx(a["reward_margin"], abs=1e-4)
