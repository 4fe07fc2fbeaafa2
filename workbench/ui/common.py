"""What every panel shares: the base class, messages, HTML tables, a polling thread and PNG plots."""

from __future__ import annotations

import html
import io
import threading
import time
import weakref
from collections.abc import Callable, Iterable

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workbench.ui.connection import connect, explain

ERROR_STYLE = "color:#b00020"
MUTED_STYLE = "color:#666;font-size:90%"


class Panel:
    """A panel: `.widget` is what shows; a bare panel expression in a notebook displays it."""

    widget: widgets.Widget

    def __init__(self, workbench=None):
        self.workbench = connect(workbench)  # a Workbench, or a Client of a running service
        self.message = widgets.HTML()  # the outcome of the last action, or what went wrong

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def say(self, text: str, error: bool = False) -> None:
        self.message.value = f'<span style="{ERROR_STYLE}">{escape(text)}</span>' if error else escape(text)

    def fail(self, exc: Exception) -> None:
        """Shows an error as a person can act on it: the field at fault and why."""
        self.say(explain(exc), error=True)

    def close(self) -> None:
        """Closes the widgets (panels with a background refresh stop it first)."""
        _close_tree(self.widget)


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def button(description: str, on_click: Callable[[], object], style: str = "",
           tooltip: str = "") -> widgets.Button:
    """A button that calls a panel method (the same one notebooks and tests call directly)."""
    made = widgets.Button(description=description, button_style=style, tooltip=tooltip or description)
    made.on_click(lambda _: on_click())
    return made


def escape(value) -> str:
    return html.escape("" if value is None else str(value))


def muted(text: str) -> str:
    return f'<span style="{MUTED_STYLE}">{escape(text)}</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable]) -> str:
    """An HTML table; cells are escaped text, or HTML when wrapped in `Markup`."""
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="padding:2px 8px">{_cell(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """HTML a panel made itself, put in a table cell as it is."""


def _cell(value) -> str:
    if isinstance(value, Markup):
        return value
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    return escape("" if value is None else value)


def when(epoch: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else ""


class Ticker:
    """Calls `owner.<method>()` every `interval` seconds on a daemon thread until it answers False, the
    ticker is stopped, or the owner is gone. Updates come from the kernel, not from the browser, so they
    happen whether or not a frontend is attached (nbmake, a script, a closed tab)."""

    def __init__(self, method: Callable[[], bool], interval: float):
        self._method = weakref.WeakMethod(method)  # a forgotten panel is not kept alive by its thread
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._asked = False  # start() was called since the current call began

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            self._asked = True
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="ui-ticker",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self._thread, self._asked = None, False

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            with self._lock:
                self._asked = False
            method = self._method()
            if method is not None and method() is not False:
                continue
            with self._lock:
                # A start() while that call ran (a job resumed just as the last one ended) keeps it going.
                if self._asked and method is not None and not stop.is_set():
                    continue
                if self._thread is threading.current_thread():
                    self._thread = None
                return


class Plot:
    """A matplotlib figure shown as a PNG in a `widgets.Image`.

    The figure is drawn with the Agg canvas directly (no pyplot): nothing depends on a display or on
    the notebook's matplotlib backend, a background thread may redraw it, and the image renders in
    JupyterLab, in saved widget state and under headless nbmake alike.
    """

    def __init__(self, width: float = 6.4, height: float = 3.4):
        self.figure = Figure(figsize=(width, height), dpi=96)
        FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width=f"{int(width * 96)}px"))

    def clear(self):
        self.axes.clear()
        return self.axes

    def render(self) -> None:
        self.figure.tight_layout()
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        self.image.value = buffer.getvalue()


def draw_losses(axes, steps: list, label: str = "", color=None) -> tuple[int, int]:
    """Train loss per step (a line) and validation loss (points) on `axes`; answers how many of each."""
    train = [(s.step, s.loss) for s in steps if s.loss is not None]
    valid = [(s.step, s.eval_loss) for s in steps if s.eval_loss is not None]
    prefix = f"{label} " if label else ""
    line = None
    if train:
        (line,) = axes.plot(*zip(*train), color=color, label=f"{prefix}train")
    if valid:
        axes.plot(*zip(*valid), "o--", color=line.get_color() if line else color, label=f"{prefix}validation")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    return len(train), len(valid)


def draw_test_loss(axes, steps: list, label: str = "", color=None) -> int:
    """The test loss (a star at the step it was computed, the end of a completed run) on `axes`, in the
    colour of the train line drawn before it; answers how many points."""
    test = [(s.step, s.test_loss) for s in steps if s.test_loss is not None]
    if test:
        color = color or (axes.lines[0].get_color() if axes.lines else None)
        axes.plot(*zip(*test), "*", markersize=11, color=color, label=f"{label} test" if label else "test")
    return len(test)
