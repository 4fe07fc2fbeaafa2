"""The training chart shows the test loss of a completed run (a star at its step), beside the train
line and the validation points, in the run's colour."""

from __future__ import annotations

from workbench.training.record import StepMetrics
from workbench.ui.common import Plot, draw_losses, draw_test_loss


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
