"""Training: the whole configuration as a form, start / stop / resume, and the job followed live
(progress bar, train and validation loss, tokens/s and memory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from workbench.data import SAMPLES
from workbench.errors import InputError
from workbench.training.config import TrainingConfig
from workbench.training.record import ACTIVE, TERMINAL, JobStatus
from workbench.ui.common import Panel, Plot, Ticker, button, draw_losses, draw_test_loss, escape, muted
from workbench.ui.forms import Form
from workbench.ui.rewards import draw_rewards

# Where each section of the form begins (later fields join the section above them).
SECTIONS = {"experiment_name": "What to train", "dataset": "Data", "batch_size": "Optimisation",
            "lora_rank": "LoRA", "eval_steps": "Evaluation and checkpoints"}
# Filled in so that Start works at once on the default (tiny) model; only a name is left to give.
STARTER = {"training_type": "lora", "dataset": "alpaca"}
BAR_STYLES = {"completed": "success", "failed": "danger", "stopped": "warning", "interrupted": "warning"}
POLL_S = 1.0


class TrainingPanel(Panel):
    """    panel = TrainingPanel(experiment_name="my-lora", max_steps=20)   # any TrainingConfig field
    panel.start(); panel.wait()          # or click Start; the plot and progress follow the job
    panel.stop(); panel.resume()
    """

    def __init__(self, workbench=None, poll_s: float = POLL_S, **values):
        super().__init__(workbench)
        self.form = Form(TrainingConfig, SECTIONS, STARTER | values, suggestions={"dataset": list(SAMPLES)})
        self.fields = self.form.fields
        self.experiment: str | None = None  # the job followed: the last started or resumed
        self.last_status: JobStatus | None = None
        self.train_points = self.valid_points = self.test_points = 0
        self.reward_points = 0  # dpo, orpo: reward margins drawn
        self._drawn: tuple | None = None
        self._lock = threading.RLock()  # the poller and wait() both refresh
        self._ticker = Ticker(self._tick, poll_s)
        self.start_button = button("Start", self.start, "primary", "Validate the form and start a job")
        self.stop_button = button("Stop", self.stop, "danger", "Checkpoint and stop the job")
        self.resume_button = button("Resume", self.resume, tooltip="Continue from the last checkpoint")
        self.refresh_button = button("Refresh", self.refresh)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="step",
                                            layout=widgets.Layout(width="30em"))
        self.state = widgets.HTML()  # experiment, status, phase, step
        self.stats = widgets.HTML()  # tokens/s, memory, losses, checkpoint, error
        self.plot = Plot()
        self.widget = widgets.VBox([
            self.form.widget,
            widgets.HBox([self.start_button, self.stop_button, self.resume_button, self.refresh_button]),
            self.message, widgets.HBox([self.progress, self.state]),
            widgets.HBox([self.plot.image, self.stats]),
        ])

    # Actions (the buttons call these) -----------------------------------------------------------

    def values(self) -> dict:
        return self.form.values()

    def set_values(self, **values) -> None:
        self.form.set_values(**values)

    def validate(self) -> TrainingConfig | None:
        config = self.form.validate()
        if config is None:
            problems = [f"{name}: {message}" for name, message in self.form.errors().items()]
            self.say("Not started: " + "; ".join(problems + self.form.loose), error=True)
        return config

    def start(self):
        """Validates the form and starts a job; answers the StartResponse, None when refused."""
        self.say("")
        config = self.validate()
        if config is None:
            return None
        try:
            started = self.workbench.start_training(config)
        except InputError as exc:  # the workbench's own checks: data files, model, a name in use
            self.form.show_errors(exc.errors)
            self.say(f"Not started: {exc}", error=True)
            return None
        except Exception as exc:
            self.fail(exc)
            return None
        self.experiment = config.experiment_name
        self.say(f"{self.experiment} {started.state} (job {started.job_id})")
        self.refresh()
        return started

    def stop(self):
        """Stops the form's experiment (a running job checkpoints first); answers the JobAction."""
        return self._act(self.workbench.stop_training)

    def resume(self):
        """Continues the form's experiment from its last checkpoint; answers the JobAction."""
        return self._act(self.workbench.resume_training)

    def refresh(self) -> JobStatus | None:
        """Reads the job's status and metrics and redraws; answers the status (None on an error)."""
        try:
            return self._refresh()
        except Exception as exc:
            self.fail(exc)
            return None

    def wait(self, timeout: float = 600.0, interval: float = POLL_S,
             until: Callable[[JobStatus], bool] | None = None) -> JobStatus:
        """Polls until the job ends (or `until(status)` holds), updating the panel as it goes; answers
        the last status. Runs in the caller's thread, so it works with no browser attached (nbmake)."""
        until = until or (lambda status: status.status in TERMINAL)
        deadline = time.monotonic() + timeout
        while True:
            status = self._refresh()
            if until(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{status.experiment_name} still {status.status} after {timeout:.0f} s")
            time.sleep(interval)

    def close(self) -> None:
        self._ticker.stop()
        super().close()

    # Helpers ------------------------------------------------------------------------------------

    def _name(self, form_first: bool = False) -> str:
        """The experiment acted on: Stop and Resume take the form's name (what the person sees), while
        refreshing follows the job last started or resumed, whatever is typed meanwhile."""
        typed = self.fields["experiment_name"].get()
        name = (typed or self.experiment) if form_first else (self.experiment or typed)
        if not name:
            raise InputError("experiment_name", "give the experiment's name")
        return name

    def _act(self, action: Callable):
        try:
            name = self._name(form_first=True)
            answer = action(name)
        except Exception as exc:
            self.fail(exc)
            return None
        self.experiment = name
        self.say(f"{name} {answer.action}: {answer.state} at step {answer.current_step}")
        self.refresh()
        return answer

    def _tick(self) -> bool:
        """The poller's call: keep going while the job is queued or running."""
        status = self.refresh()
        return status is not None and status.status in ACTIVE

    def _refresh(self) -> JobStatus:
        with self._lock:
            name = self._name()
            status = self.workbench.job_status(name)
            steps = self.workbench.metrics(name).steps
            self.last_status = status
            self._show_status(status)
            self._draw(status, steps)
        if status.status in ACTIVE:
            self._ticker.start()  # live updates from the kernel, whoever asked first (no-op if running)
        return status

    def _show_status(self, status: JobStatus) -> None:
        total, step = status.total_steps or 0, status.current_step
        self.progress.max = max(total, step, 1)
        self.progress.value = step
        self.progress.bar_style = BAR_STYLES.get(status.status.value, "info")
        self.state.value = (f"<b>{escape(status.experiment_name)}</b> · {escape(status.status)}"
                            f" · {escape(status.phase or '')} · step {step}/{total or '?'}")
        self.stats.value = _stats(status)
        if status.status not in ACTIVE:
            # The job has ended: the message from Start or Resume ("... running") would be stale.
            ended = f"{status.experiment_name} {status.status} at step {step}"
            self.say(ended, error=status.status == "failed")

    def _draw(self, status: JobStatus, steps: list) -> None:
        key = (status.job_id, status.status, len(steps), steps[-1] if steps else None)
        if key == self._drawn:
            return  # nothing new: leave the image as it is
        axes = self.plot.clear()
        self.train_points, self.valid_points = draw_losses(axes, steps)
        self.test_points = draw_test_loss(axes, steps)
        self.reward_points = draw_rewards(axes, steps)  # dpo, orpo
        axes.set_title(f"{status.experiment_name} ({status.status})", fontsize=10)
        if self.train_points or self.valid_points or self.test_points:
            axes.legend(fontsize=8)
        self.plot.render()
        self._drawn = key


def _stats(status: JobStatus) -> str:
    def number(value, unit="", digits=4):
        return "–" if value is None else f"{value:.{digits}g}{unit}"

    lines = [
        f"<b>tokens/s</b>: {number(status.tokens_per_s, digits=5)}",
        f"<b>peak memory</b>: {number(status.peak_memory_mb, ' MB', 5)}",
        f"<b>train loss</b>: {number(status.loss)}",
        f"<b>validation loss</b>: {number(status.eval_loss)}",
    ]
    if status.best_step is not None:
        lines.append(f"<b>best validation loss</b>: {number(status.best_eval_loss)}, step {status.best_step}")
    if status.test_loss is not None:
        lines.append(f"<b>test loss</b>: {number(status.test_loss)}")
    if status.judge_score is not None:
        lines.append(f"<b>judge score</b>: {number(status.judge_score)}")
    if status.reward_margin is not None:
        lines.append(f"<b>reward margin</b>: {number(status.reward_margin)}, accuracy "
                     f"{number(status.reward_accuracy, digits=3)}")
    lines += [f"<b>type</b>: {escape(status.training_type)} on {escape(status.backend or '?')}",
              muted(f"checkpoint: {status.checkpoint or '–'}")]
    if status.selected_checkpoint:
        lines.append(muted(f"adapter: the {status.selected_checkpoint} weights"))
    error = status.error
    if error:
        lines.append(f'<span style="color:#b00020">{escape(error.get("message"))}</span>')
        if error.get("log_tail"):
            lines.append(f'<pre style="font-size:80%;white-space:pre-wrap">{escape(error["log_tail"])}</pre>')
    return '<div style="margin-left:1em">' + "<br>".join(lines) + "</div>"

