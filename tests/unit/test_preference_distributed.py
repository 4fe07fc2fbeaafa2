"""DPO on two data-parallel ranks (mlx.launch, ring) trains the curve of one process: the pairs of each
batch are shared out like rows, and the rewards add up over both ranks."""

from __future__ import annotations

import pytest

from workbench.core import Workbench
from workbench.training.config import TrainingConfig

RUN = {"model_name": "tiny", "training_type": "dpo", "dataset": "preference", "batch_size": 4, "max_steps": 4,
       "max_seq_length": 96, "learning_rate": 1e-3, "lr_schedule": "constant", "validation_split": 0.0,
       "save_every": 100, "seed": 3}
MEASURES = ("loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward")


@pytest.fixture
def bench(settings):
    made = Workbench(settings)
    yield made
    made.close()


def curve(bench: Workbench, name: str, **fields) -> list[dict]:
    bench.start_training(TrainingConfig(experiment_name=name, **RUN, **fields))
    assert (done := bench.wait(name, timeout_s=300)).status == "completed", done.error
    return [s.model_dump() for s in bench.metrics(name).steps]


def test_two_ranks_train_the_dpo_curve_of_one_process(bench):
    one = curve(bench, "dpo-one")
    two = curve(bench, "dpo-two", num_workers=2, distributed_backend="ring")

    assert [s["step"] for s in two] == [s["step"] for s in one] == [1, 2, 3, 4]
    for single, shared in zip(one, two):
        for name in MEASURES:
            assert shared[name] == pytest.approx(single[name], abs=1e-4), (name, single, shared)
        assert shared["tokens"] == single["tokens"]  # both ranks' answer tokens, counted once
