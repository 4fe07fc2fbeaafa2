"""A DPO run from the training panel: its reward margin and accuracy drawn beside the loss, and in the
jobs panel's comparison."""

from __future__ import annotations

import pytest

from workbench.core import Workbench
from workbench.ui import JobsPanel, TrainingPanel


@pytest.fixture
def workbench(settings):
    made = Workbench(settings)
    yield made
    made.close()


def test_a_dpo_run_draws_its_reward_margin_beside_the_loss(workbench):
    panel = TrainingPanel(workbench, experiment_name="ui-dpo", training_type="dpo", dataset="preference",
                          max_steps=3, batch_size=2, max_seq_length=96, learning_rate=5e-4)
    panel.start_button.click()
    status = panel.wait(timeout=120, interval=0.3)
    assert status.status == "completed", status.error

    assert panel.train_points == 3 and panel.reward_points == 3
    (right,) = [axes for axes in panel.plot.figure.axes if axes is not panel.plot.axes]
    labels = [line.get_label() for line in right.lines]
    assert labels == ["reward margin", "reward accuracy"] and len(right.lines[0].get_xdata()) == 3
    assert "reward margin" in panel.stats.value
    panel.refresh()  # drawn again: still one axis of rewards
    assert len(panel.plot.figure.axes) == 2

    jobs = JobsPanel(workbench, refresh_s=None)
    try:
        jobs.compare(["ui-dpo"])
        (right,) = [axes for axes in jobs.plot.figure.axes if axes is not jobs.plot.axes]
        assert [line.get_label() for line in right.lines] == ["ui-dpo reward margin"]
    finally:
        jobs.close()
