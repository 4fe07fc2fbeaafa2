"""The panels and the new ways to train: the training chart shows the test loss of a completed run (a
star at its step) beside the train line and the validation points, in the run's colour; the training
form takes an optimizer's settings as JSON and the trackers as a list."""

from __future__ import annotations

from workbench.training.config import TrainingConfig
from workbench.training.record import StepMetrics
from workbench.ui.common import Plot, draw_losses, draw_test_loss
from workbench.ui.forms import Form


def test_the_test_loss_is_a_point_on_the_chart_at_the_step_it_was_computed():
    steps = [StepMetrics(step=1, time=0.0, loss=3.0), StepMetrics(step=2, time=0.0, loss=2.5, eval_loss=2.7),
             StepMetrics(step=3, time=0.0, loss=2.2), StepMetrics(step=4, time=0.0, loss=2.0, eval_loss=2.4, test_loss=2.35)]
    plot = Plot()
    axes = plot.clear()
    draw_losses(axes, steps)

    assert draw_test_loss(axes, steps) == 1
    train, _, test = axes.lines
    assert (list(test.get_xdata()), list(test.get_ydata())) == ([4], [2.35])
    assert test.get_marker() == "*" and test.get_label() == "test"
    assert test.get_color() == train.get_color()
    plot.render()
    assert bytes(plot.image.value[:4]) == b"\x89PNG"


def test_a_run_without_a_test_split_draws_no_test_point():
    axes = Plot().clear()
    assert draw_test_loss(axes, [StepMetrics(step=1, time=0.0, loss=3.0)]) == 0 and len(axes.lines) == 0


def test_the_form_takes_the_optimizer_its_settings_and_the_trackers():
    form = Form(TrainingConfig, initial={"experiment_name": "form", "training_type": "dora", "dataset": "alpaca"})
    form.fields["optimizer"].widget.value = "sgd"
    form.fields["optimizer_config"].widget.value = ' {"momentum": 0.9, "nesterov": true} '
    form.fields["report_to"].widget.value = "tensorboard, mlflow"

    config = form.validate()
    assert config is not None, form.errors()
    assert (config.training_type, config.optimizer) == ("dora", "sgd")
    assert config.optimizer_config == {"momentum": 0.9, "nesterov": True}
    assert config.report_to == ["tensorboard", "mlflow"]

    form.set_values(optimizer_config={"ns_steps": 3})
    assert form.fields["optimizer_config"].widget.value == '{"ns_steps": 3}'
    form.fields["optimizer_config"].widget.value = "momentum 0.9"
    assert form.validate() is None and "optimizer_config" in form.errors()
    form.fields["optimizer_config"].widget.value = ""
    assert form.validate().optimizer_config is None
