"""Evaluation: models and experiments on lm-eval tasks side by side (a results table with standard
errors and a bar chart), each evaluation followed live, and the items it scored to browse."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ipywidgets as widgets

import workbench.evaluation.shipped as shipped
from workbench.evaluation.config import EvalConfig
from workbench.training.record import ACTIVE, TERMINAL
from workbench.ui.common import Markup, Panel, Plot, Ticker, button, escape, muted, table
from workbench.ui.jobs import STATUS_COLOURS

DEFAULT_MODEL = "(default model)"
SHIPPED_TASKS = sorted(path.stem for path in Path(shipped.__file__).parent.glob("workbench_*.yaml"))
ITEM_COLUMNS = ("task", "doc_id", "prompt", "target", "response")
POLL_S = 1.0
PAGE = 10


class EvaluationPanel(Panel):
    """    panel = EvaluationPanel(models=[None, "my-lora"], tasks=["workbench_zorbish_mc"])
    panel.start(); panel.wait()          # one evaluation per model; the table and chart follow them
    panel.browse("eval-my-lora", task="workbench_zorbish_mc")   # the items it scored
    """

    def __init__(self, workbench=None, models: list[str | None] | None = None, tasks: list[str] | None = None,
                 prefix: str = "eval", limit: int | None = None, poll_s: float = POLL_S):
        super().__init__(workbench)
        self.names: list[str] = []  # the evaluations shown: the last started, or those picked
        self.statuses: dict = {}  # name -> EvalStatus
        self.items: list[dict] = []  # the page of items shown
        self._lock = threading.RLock()
        self._ticker = Ticker(self._tick, poll_s)
        self.models = widgets.SelectMultiple(description="models", rows=5,
                                             tooltip="The base model and experiments (their adapters) to "
                                             "evaluate; shift or ctrl for several")
        self.other_model = widgets.Text(description="or a model", placeholder="a name, an alias or a folder")
        self.tasks = widgets.SelectMultiple(options=SHIPPED_TASKS, rows=5, description="tasks",
                                            tooltip="The workbench's shipped tasks")
        self.other_tasks = widgets.Text(description="other tasks",
                                        placeholder="lm-eval names, comma-separated")
        self.prefix = widgets.Text(value=prefix, description="name prefix",
                                   tooltip="Each evaluation is named <prefix>-<model>")
        self.limit = widgets.BoundedIntText(value=limit or 0, min=0, max=100_000, description="limit",
                                            tooltip="Items per task (the first ones); 0: all of them")
        self.start_button = button("Start", self.start, "primary", "Evaluate each model on the tasks")
        self.refresh_button = button("Refresh", self.refresh)
        self.progress = widgets.HTML()  # one line per evaluation: state, phase, requests done
        self.results = widgets.HTML()  # metric ± stderr per model and task
        self.plot = Plot(width=7.0, height=3.4)
        self.browse_name = widgets.Dropdown(description="evaluation", options=[])
        self.browse_task = widgets.Dropdown(description="task", options=[])
        self.offset = widgets.BoundedIntText(value=0, min=0, max=10**9, step=PAGE, description="from item")
        self.browse_button = button("Show items", self.browse)
        self.next_button = button("Next", lambda: self.browse(offset=self.offset.value + PAGE))
        self.item_table = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.models, self.other_model]),
                          widgets.VBox([self.tasks, self.other_tasks])]),
            widgets.HBox([self.prefix, self.limit]),
            widgets.HBox([self.start_button, self.refresh_button]), self.message, self.progress,
            self.results, self.plot.image,
            widgets.HBox([self.browse_name, self.browse_task, self.offset]),
            widgets.HBox([self.browse_button, self.next_button]), self.item_table,
        ])
        self.list_models()
        if models is not None:
            self.models.value = tuple(DEFAULT_MODEL if m is None else m for m in models
                                      if (DEFAULT_MODEL if m is None else m) in self.models.options)
            self.other_model.value = ", ".join(m for m in models if m and m not in self.models.options)
        if tasks is not None:
            self.tasks.value = tuple(t for t in tasks if t in SHIPPED_TASKS)
            self.other_tasks.value = ", ".join(t for t in tasks if t not in SHIPPED_TASKS)

    # Actions (the buttons call these) -----------------------------------------------------------

    def list_models(self) -> tuple:
        """The base model and every experiment with a completed training job, as the models to pick."""
        try:
            trained = [job.experiment_name for job in self.workbench.list_jobs() if job.status == "completed"]
        except Exception as exc:
            self.fail(exc)
            trained = []
        options = (DEFAULT_MODEL, *dict.fromkeys(trained))
        chosen = tuple(m for m in self.models.value if m in options)
        self.models.options = options
        self.models.value = chosen
        return options

    def chosen_models(self) -> list[str | None]:
        picked = [None if m == DEFAULT_MODEL else m for m in self.models.value]
        return picked + [m.strip() for m in self.other_model.value.split(",") if m.strip()]

    def chosen_tasks(self) -> list[str]:
        return list(self.tasks.value) + [t.strip() for t in self.other_tasks.value.split(",") if t.strip()]

    def start(self) -> list:
        """One evaluation per chosen model on the chosen tasks; answers the EvalStartResponses."""
        self.say("")
        models, tasks = self.chosen_models(), self.chosen_tasks()
        if not models or not tasks:
            self.say("Not started: pick at least one model and one task", error=True)
            return []
        started, refused = [], None
        try:
            for model in models:
                name = f"{self.prefix.value.strip() or 'eval'}-{_label(model)}"
                config = EvalConfig(name=name, model=model, tasks=tasks, limit=self.limit.value or None)
                started.append(self.workbench.start_evaluation(config))
        except Exception as exc:
            refused = exc
        if started:
            self.names = [s.name for s in started]
            self.refresh()
        if refused is not None:  # said last, so that it stays in view beside what did start
            self.fail(refused)
        else:
            self.say(f"started {', '.join(f'{s.name} ({s.state})' for s in started)}")
        return started

    def show(self, names: list[str]) -> dict:
        """Shows evaluations already run (by name) in the table, the chart and the item browser."""
        self.names = list(names)
        return self.refresh()

    def refresh(self) -> dict:
        """Reads each shown evaluation's status and redraws; answers them by name."""
        try:
            return self._refresh()
        except Exception as exc:
            self.fail(exc)
            return self.statuses

    def wait(self, timeout: float = 600.0, interval: float = POLL_S) -> dict:
        """Polls until every shown evaluation has ended, updating the panel; answers their statuses.
        Runs in the caller's thread, so it works with no browser attached (nbmake)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self._refresh()
            if all(s.status in TERMINAL for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluations still running after {timeout:.0f} s")
            time.sleep(interval)

    def browse(self, name: str | None = None, task: str | None = None,
               offset: int | None = None) -> list[dict]:
        """A page of the items an evaluation scored: prompt, target, response and score."""
        if name is not None:
            self.browse_name.value = name
        if task is not None:
            self.browse_task.value = task
        if offset is not None:
            self.offset.value = max(offset, 0)
        if not self.browse_name.value:
            self.say("No evaluation to browse yet", error=True)
            return []
        try:
            page = self.workbench.evaluation_samples(self.browse_name.value, offset=self.offset.value,
                                                     limit=PAGE, task=self.browse_task.value or None)
        except Exception as exc:
            self.fail(exc)
            return []
        self.items = page.items
        scores = [k for k in dict.fromkeys(k for item in page.items for k in item) if _is_score(k)]
        rows = [[*(item.get(c) for c in ITEM_COLUMNS), *(item.get(s) for s in scores)] for item in page.items]
        shown = f"items {page.offset + 1}-{page.offset + len(page.items)} of {page.total}" if page.items \
            else f"no items from {page.offset + 1} (of {page.total})"
        self.item_table.value = muted(shown) + table([*ITEM_COLUMNS, *scores], rows)
        return self.items

    def close(self) -> None:
        self._ticker.stop()
        super().close()

    # Helpers ------------------------------------------------------------------------------------

    def _tick(self) -> bool:
        statuses = self.refresh()
        return any(s.status in ACTIVE for s in statuses.values())

    def _refresh(self) -> dict:
        with self._lock:
            self.statuses = {name: self.workbench.evaluation_status(name) for name in self.names}
            self.progress.value = table(["evaluation", "model", "status", "phase", "requests"],
                                        [_progress_row(s) for s in self.statuses.values()])
            self._show_results()
            self._browse_options()
        if any(s.status in ACTIVE for s in self.statuses.values()):
            self._ticker.start()
        return self.statuses

    def _show_results(self) -> None:
        scored = [s for s in self.statuses.values() if s.results]
        tasks = list(dict.fromkeys(task for s in scored for task in s.results))
        rows = []
        for status in scored:
            cells = []
            for task in tasks:
                metric = headline(status.results.get(task, {}))
                cells.append("" if metric is None else f"{metric[1]:.3f} ± {metric[2] or 0:.3f}")
            rows.append([status.name, model_label(status), *cells])
        headers = ["evaluation", "model",
                   *(f"{t} ({(headline(_any(scored, t)) or ('?',))[0]})" for t in tasks)]
        self.results.value = table(headers, rows) if rows else muted("no results yet")
        self._draw(scored, tasks)

    def _draw(self, scored: list, tasks: list[str]) -> None:
        axes = self.plot.clear()
        width = 0.8 / max(len(scored), 1)
        for index, status in enumerate(scored):
            values = [headline(status.results.get(t, {})) or ("", 0.0, 0.0) for t in tasks]
            positions = [i + (index - (len(scored) - 1) / 2) * width for i in range(len(tasks))]
            axes.bar(positions, [v[1] for v in values], width, yerr=[v[2] or 0 for v in values], capsize=3,
                     label=model_label(status), color=f"C{index % 10}")
        axes.set_xticks(range(len(tasks)), [t.removeprefix("workbench_") for t in tasks], fontsize=8)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("score (± standard error)")
        axes.set_title("evaluation results" if scored else "no results yet", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        if scored:
            axes.legend(fontsize=8)
        self.plot.render()

    def _browse_options(self) -> None:
        done = [s for s in self.statuses.values() if s.status == "completed"]
        _offer(self.browse_name, tuple(s.name for s in done))
        _offer(self.browse_task, tuple(dict.fromkeys(t for s in done for t in s.tasks)))


def headline(metrics: dict) -> tuple[str, float, float | None] | None:
    """A task's first metric as lm-eval reports it: (name, value, standard error)."""
    for key, value in metrics.items():
        name, _, filtered = key.partition(",")
        if "_stderr" not in name and isinstance(value, (int, float)):
            return key, float(value), metrics.get(f"{name}_stderr,{filtered}")
    return None


def model_label(status) -> str:
    """What was evaluated: the model or experiment asked for, else the default model's folder name."""
    return status.model or Path(status.model_path).name


def _label(model: str | None) -> str:
    """A model as part of an evaluation's name: letters, digits, . _ - only."""
    text = "base" if model is None else Path(model).name
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:40] or "model"


def _offer(dropdown: widgets.Dropdown, options: tuple) -> None:
    """New options for a dropdown, keeping its choice when it is still offered."""
    if options != dropdown.options:
        keep = dropdown.value if dropdown.value in options else (options[0] if options else None)
        dropdown.options = options
        dropdown.value = keep


def _any(statuses: list, task: str) -> dict:
    return next((s.results[task] for s in statuses if task in s.results), {})


def _is_score(key: str) -> bool:
    return key not in (*ITEM_COLUMNS, "filter", "raw_response", "choices", "loglikelihoods")


def _progress_row(status) -> list:
    colour = STATUS_COLOURS.get(status.status, "#444")
    error = (status.error or {}).get("message")
    return [status.name, model_label(status),
            Markup(f'<b style="color:{colour}">{escape(status.status)}</b>'
                   + (f' <span style="color:#b00020">{escape(error)}</span>' if error else "")),
            status.phase, f"{status.done}/{status.total}" if status.total else str(status.done)]
