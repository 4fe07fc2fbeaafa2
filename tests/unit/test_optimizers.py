"""The optimizer a user picks: mlx's own class with the settings given, under the run's schedule; bad
settings refused naming the field; and a run stopped and resumed with each optimizer continues on the
uninterrupted run's curve (its state comes back from the checkpoint as AdamW's does)."""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim
import pytest

import workbench  # noqa: F401  (before mlx)
from workbench.data import prepare
from workbench.errors import InputError
from workbench.training import optimizers
from workbench.training.config import TrainingConfig
from workbench.training.reporter import Reporter
from workbench.training.run import TrainingRun


def config(**fields) -> TrainingConfig:
    base = {"experiment_name": "opt", "training_type": "lora", "dataset": "alpaca", "batch_size": 2,
            "max_seq_length": 64, "max_steps": 4, "learning_rate": 1e-3, "validation_split": 0.0,
            "save_every": 100, "fast_kernels": "off"}
    return TrainingConfig(**base | fields)


@pytest.mark.parametrize(("name", "settings", "kind", "attribute", "expected"), [
    ("adamw", None, optim.AdamW, "betas", (0.9, 0.999)),
    ("adam", {"betas": [0.8, 0.99], "eps": 1e-6}, optim.Adam, "betas", (0.8, 0.99)),
    ("sgd", {"momentum": 0.9, "nesterov": True}, optim.SGD, "momentum", 0.9),
    ("adafactor", {"beta_1": 0.9}, optim.Adafactor, "beta_1", 0.9),
    ("muon", {"ns_steps": 3}, optim.Muon, "ns_steps", 3),
])
def test_each_optimizer_is_mlxs_own_with_the_settings_given(name, settings, kind, attribute, expected):
    chosen = config(optimizer=name, optimizer_config=settings, weight_decay=0.0 if name == "adam" else 0.01)
    optimizer = optimizers.build(chosen, 1e-3)

    assert type(optimizer) is kind
    assert tuple(getattr(optimizer, attribute)) == expected if attribute == "betas" else \
        getattr(optimizer, attribute) == expected
    if name != "adam":
        assert optimizer.weight_decay == 0.01


def test_the_learning_rate_schedule_drives_every_optimizer():
    schedule = optim.linear_schedule(1e-2, 1e-3, 4)
    for name in optimizers.CLASSES:
        optimizer = optimizers.build(config(optimizer=name), schedule)
        params = {"w": mx.ones((4, 4))}
        optimizer.init(params)
        rates = []
        for _ in range(3):
            params = optimizer.apply_gradients({"w": mx.full((4, 4), 0.5)}, params)
            rates.append(round(optimizer.learning_rate.item(), 6))
        assert rates == [0.01, 0.00775, 0.0055], name  # the schedule at updates 0, 1, 2


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"optimizer": "sgd", "optimizer_config": {"betas": [0.9, 0.99]}}, "optimizer_config.betas",
     "sgd takes no setting 'betas'; it takes momentum, dampening, nesterov"),
    ({"optimizer": "adamw", "optimizer_config": {"betas": [0.9, 1.5]}}, "optimizer_config.betas.1",
     "less than 1"),
    ({"optimizer": "muon", "optimizer_config": {"ns_steps": 0}}, "optimizer_config.ns_steps",
     "greater than or equal to 1"),
    ({"optimizer": "sgd", "optimizer_config": {"nesterov": True}}, "optimizer_config.nesterov",
     "needs momentum above 0"),
    ({"optimizer": "adam", "weight_decay": 0.1}, "weight_decay", "adam has no weight decay"),
])
def test_bad_optimizer_settings_are_refused_naming_the_field(fields, field, words):
    with pytest.raises(InputError) as refused:
        optimizers.check(config(**fields))
    assert refused.value.field == field and refused.value.status == 400
    assert words in refused.value.message


class Losses(Reporter):
    def __init__(self):
        self.losses = {}

    def step(self, step, total, metrics):
        self.losses[step] = metrics["loss"]


@pytest.mark.parametrize(("name", "settings"), [
    ("sgd", {"momentum": 0.9}), ("muon", None), ("adafactor", {"beta_1": 0.9}),
])
def test_a_run_stopped_and_resumed_follows_the_uninterrupted_curve(name, settings, tmp_path, models_dir):
    from workbench.settings import Settings

    home = Settings(home=tmp_path / "home", models_path=models_dir, hub_downloads=False)
    chosen = config(optimizer=name, optimizer_config=settings, learning_rate=1e-2)
    examples = prepare(chosen, home)
    model = f"{models_dir}/tiny"

    whole = Losses()
    TrainingRun(chosen, model, examples, tmp_path / "whole", home, whole).run()
    first, then = Losses(), Losses()
    asked = iter([None, None, "stopped"])
    stopped = TrainingRun(chosen, model, examples, tmp_path / "split", home, first,
                          should_stop=lambda: next(asked)).run()
    resumed = TrainingRun(chosen, model, examples, tmp_path / "split", home, then).run(resume=True)

    assert (stopped.status, stopped.step, resumed.status, resumed.step) == ("stopped", 2, "completed", 4)
    assert sorted(then.losses) == [3, 4]
    assert {**first.losses, **then.losses} == pytest.approx(whole.losses, abs=1e-5)
    # The optimizer did move the weights: the loss is not flat.
    assert whole.losses[4] != pytest.approx(whole.losses[1], abs=1e-3)


@pytest.mark.parametrize("settings", [{"eps": float("inf")}, {"betas": [0.9] * 9}, {"x" * 65: 1.0},
                                      {f"s{i}": 1.0 for i in range(17)}])
def test_optimizer_settings_are_bounded_before_any_check(settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        config(optimizer_config=settings)
    assert {error["loc"][0] for error in refused.value.errors()} == {"optimizer_config"}
