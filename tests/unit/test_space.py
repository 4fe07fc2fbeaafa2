"""The room a job is refused without: its trainable parameters, read from the model's safetensors
headers, are those training actually has."""

from __future__ import annotations

import copy

import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers

from workbench.training.config import TrainingConfig
from workbench.training.run import lora_keys
from workbench.training.space import trainable_parameters


def count(params) -> int:
    return sum(v.size for _, v in tree_flatten(params))


@pytest.mark.parametrize("fields", [
    {"training_type": "sft"},
    {"training_type": "lora"},
    {"training_type": "lora", "lora_rank": 4, "lora_layers": 1, "lora_targets": ["q_proj", "self_attn.v_proj"]},
    {"training_type": "dora", "lora_layers": 1},
])
def test_the_estimate_counts_the_parameters_training_has(models_dir, tiny, fields):
    config = TrainingConfig(experiment_name="room", dataset="alpaca", **fields)
    model = copy.deepcopy(tiny[0])
    if config.training_type == "sft":
        model.unfreeze()
    else:
        model.freeze()
        chosen = {"rank": config.lora_rank, "scale": 1.0, "dropout": 0.0}
        if config.lora_targets:
            chosen["keys"] = lora_keys(model, config.lora_targets)
        layers = len(model.layers) if config.lora_layers == -1 else config.lora_layers
        linear_to_lora_layers(model, layers, chosen, use_dora=config.training_type == "dora")
    assert trainable_parameters(f"{models_dir}/tiny", config) == count(model.trainable_parameters())
