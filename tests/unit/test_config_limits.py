"""The training config refuses what a worker would die on later: every float must be finite, and
integers stay inside what MLX takes (a uint64 seed, a size_t of bytes for memory limits)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workbench.training.config import TrainingConfig

BASE = {"experiment_name": "limits", "training_type": "lora", "dataset": "alpaca"}
FLOATS = ["learning_rate", "weight_decay", "max_grad_norm", "lora_alpha", "lora_dropout", "validation_split"]


def refused_fields(**fields) -> list:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig(**(BASE | fields))
    return [error["loc"][0] for error in caught.value.errors()]


@pytest.mark.parametrize("field", FLOATS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e309])
def test_every_float_must_be_finite(field, value):
    assert refused_fields(**{field: value}) == [field]


@pytest.mark.parametrize("field, value", [
    ("seed", 2**64), ("seed", -1), ("memory_limit_mb", 10**15), ("cache_limit_mb", 10**15),
    ("max_steps", 10**12), ("warmup_steps", 10**12), ("eval_steps", 10**12), ("save_every", 10**12),
    ("weight_decay", 5.0),
])
def test_integers_and_rates_stay_in_range(field, value):
    assert refused_fields(**{field: value}) == [field]


@pytest.mark.parametrize("name", ["trailing\n", "x\ny", "\nlead", "a" * 65])
def test_an_experiment_name_is_matched_whole(name):
    assert refused_fields(experiment_name=name) == ["experiment_name"]


def test_the_edges_of_the_ranges_are_accepted():
    config = TrainingConfig(**BASE, seed=2**64 - 1, memory_limit_mb=16 * 1024 * 1024, weight_decay=1.0)
    assert config.seed == 2**64 - 1
