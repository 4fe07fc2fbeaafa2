"""Jobs: every training job with its state, kept fresh, and the loss curves of several runs on one plot."""

from __future__ import annotations

import ipywidgets as widgets

from workbench.ui.common import Markup, Panel, Plot, Ticker, button, draw_losses, escape, table, when
from workbench.ui.rewards import draw_rewards

STATUS_COLOURS = {"running": "#0969da", "queued": "#8250df", "completed": "#1a7f37", "failed": "#b00020",
                  "stopped": "#9a6700", "interrupted": "#9a6700"}


class JobsPanel(Panel):
    """    panel = JobsPanel()                  # refreshes every 2 s while `auto refresh` is ticked
    panel.compare(["run-a", "run-b"])     # their train and validation loss on one plot
    """

    def __init__(self, workbench=None, refresh_s: float | None = 2.0):
        super().__init__(workbench)
        self.jobs: list = []
        self.compared: dict[str, tuple[int, int]] = {}  # experiment -> (train points, validation points)
        self.table = widgets.HTML()
        self.auto = widgets.Checkbox(value=refresh_s is not None, indent=False,
                                     description=f"auto refresh ({refresh_s or 2.0:g} s)")
        self.select = widgets.SelectMultiple(options=[], rows=6, description="experiments",
                                             tooltip="Pick runs to compare (shift or ctrl for several)")
        self.plot = Plot()
        self._ticker = Ticker(self._tick, refresh_s or 2.0)
        self.auto.observe(lambda change: self._ticker.start() if change["new"] else self._ticker.stop(),
                          names="value")
        self.refresh_button = button("Refresh", self.refresh)
        self.compare_button = button("Compare", self.compare, "primary", "Plot the selected runs' losses")
        self.widget = widgets.VBox([
            widgets.HBox([self.refresh_button, self.auto]), self.table, self.message,
            widgets.HBox([self.select, self.compare_button]), self.plot.image,
        ])
        self.refresh()
        if self.auto.value:
            self._ticker.start()

    def refresh(self) -> list | None:
        try:
            self.jobs = self.workbench.list_jobs()
        except Exception as exc:
            self.fail(exc)
            return None
        self.table.value = table(
            ["experiment", "job", "type", "ranks", "status", "phase", "step", "loss", "val loss", "tokens/s",
             "peak MB", "created", "finished"],
            [_row(job) for job in self.jobs],
        )
        names = tuple(dict.fromkeys(job.experiment_name for job in self.jobs))
        if names != self.select.options:  # reassigning options would drop the selection
            chosen = [n for n in self.select.value if n in names]
            self.select.options = names
            self.select.value = tuple(chosen)
        return self.jobs

    def compare(self, names: list[str] | None = None) -> dict[str, tuple[int, int]]:
        """Plots the latest job of each experiment (the selected ones by default) on one figure."""
        names = list(names if names is not None else self.select.value)
        axes = self.plot.clear()
        self.compared = {}
        try:
            for index, name in enumerate(names):
                steps = self.workbench.metrics(name).steps
                self.compared[name] = draw_losses(axes, steps, label=name, color=f"C{index % 10}")
                draw_rewards(axes, steps, label=name, color=f"C{index % 10}", fresh=index == 0)  # dpo, orpo
        except Exception as exc:
            self.fail(exc)
        axes.set_title("loss: " + ", ".join(names) if names else "pick experiments to compare", fontsize=10)
        if any(sum(counts) for counts in self.compared.values()):
            axes.legend(fontsize=8)
        self.plot.render()
        return self.compared

    def close(self) -> None:
        self._ticker.stop()
        super().close()

    def _tick(self) -> bool:
        return self.auto.value and self.refresh() is not None


def _row(job) -> list:
    colour = STATUS_COLOURS.get(job.status.value, "#444")
    total = job.total_steps
    return [
        job.experiment_name, job.job_id, job.training_type,
        _ranks(job.distributed),
        Markup(f'<b style="color:{colour}">{escape(job.status)}</b>'), job.phase,
        f"{job.current_step}/{total}" if total else str(job.current_step),
        job.loss, job.eval_loss, job.tokens_per_s, job.peak_memory_mb,
        when(job.created_at), when(job.finished_at),
    ]


def _ranks(shown: dict | None):
    """How many ranks on how many hosts; each rank's host, pid and speed when the pointer rests on it."""
    if not shown:
        return 1
    each = "; ".join(f"rank {r['rank']} on {r.get('host', '?')}, pid {r['pid']}, "
                     f"{r.get('tokens_per_s') or 0:.0f} tokens/s" for r in shown["ranks"])
    hosts = len(shown.get("hosts") or [None])
    return Markup(f'<span title="{escape(each)}">{shown["world_size"]} on {hosts} '
                  f'host{"s" if hosts > 1 else ""}</span>')
