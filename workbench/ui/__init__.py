"""ipywidgets panels over the workbench, for JupyterLab.

    from workbench.ui import connect, dashboard, EvaluationPanel, PlaygroundPanel, TrainingPanel
    dashboard()                                   # every panel, in tabs, over this process's Workbench
    PlaygroundPanel()                             # one panel; a bare panel expression displays it
    TrainingPanel(connect("http://127.0.0.1:8200"), experiment_name="x")   # over a running service

Each panel has `.widget` and plain methods its buttons call (`run`, `start`, `wait`, `refresh`...),
which code and tests call too. The workbench outside this package never imports ipywidgets.
"""

from workbench.ui.connection import connect, where
from workbench.ui.datasets import DatasetPanel
from workbench.ui.evaluation import EvaluationPanel
from workbench.ui.jobs import JobsPanel
from workbench.ui.playground import PlaygroundPanel
from workbench.ui.providers import ProvidersPanel
from workbench.ui.training import TrainingPanel


class Dashboard:
    """Every panel over one workbench, one tab each (`.panels` by name, `.tabs`), under a health line."""

    def __init__(self, workbench=None):
        import ipywidgets as widgets

        workbench = connect(workbench)
        self.panels = {
            "Providers": ProvidersPanel(workbench), "Playground": PlaygroundPanel(workbench),
            "Datasets": DatasetPanel(workbench), "Training": TrainingPanel(workbench),
            "Jobs": JobsPanel(workbench), "Evaluation": EvaluationPanel(workbench),
        }
        self.tabs = widgets.Tab(children=[p.widget for p in self.panels.values()], titles=list(self.panels))
        self.health = widgets.HTML(_health(workbench))
        self.widget = widgets.VBox([self.health, self.tabs])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def close(self) -> None:
        for panel in self.panels.values():
            panel.close()


def _health(workbench) -> str:
    from workbench.ui.common import ERROR_STYLE, escape

    try:
        health = workbench.health()
    except Exception as exc:
        return f'<span style="{ERROR_STYLE}">{escape(exc)}</span>'
    colour = "#1a7f37" if health.status == "healthy" else "#9a6700"
    problems = "".join(f"<li>{escape(p)}</li>" for p in health.problems)
    return (f'<b>Workbench</b> ({escape(where(workbench))}): <b style="color:{colour}">'
            f"{escape(health.status)}</b> · MLX on {escape(health.device.get('backend', '?'))}"
            + (f"<ul>{problems}</ul>" if problems else ""))


def dashboard(target=None) -> Dashboard:
    """Every panel, over `connect(target)`."""
    return Dashboard(connect(target))


__all__ = [
    "Dashboard", "DatasetPanel", "EvaluationPanel", "JobsPanel", "PlaygroundPanel", "ProvidersPanel",
    "TrainingPanel", "connect", "dashboard",
]
