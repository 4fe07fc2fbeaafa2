"""The notebook panels, driven as a person would (set fields, click buttons), with no browser:
ipywidgets are plain Python objects, and `Button.click()` runs the same handlers a click does."""

from __future__ import annotations

import html
import json
import time

import ipywidgets as widgets
import pytest

from tests.api.conftest import run_service
from workbench.client import Client
from workbench.core import Workbench
from workbench.errors import ServiceError
from workbench.training.record import TERMINAL
from workbench.ui import (
    Dashboard,
    DatasetPanel,
    EvaluationPanel,
    JobsPanel,
    PlaygroundPanel,
    ProvidersPanel,
    TrainingPanel,
    connect,
)
from workbench.ui import connection as connect_module

PLANTED_KEY = "sk-planted-Zq8Xw4Rt1Yu6Io0P"


@pytest.fixture
def workbench(settings):
    made = Workbench(settings)
    yield made
    made.close()


def tree(widget: widgets.Widget):
    """The widget and everything inside it."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from tree(child)


def shown_state(panel) -> str:
    """Everything a panel's widgets would send to a browser (values, descriptions, HTML, options...)."""
    return json.dumps([w.get_state() for w in tree(panel.widget)], default=str)


def is_png(image: widgets.Image) -> bool:
    return bytes(image.value[:4]) == b"\x89PNG"


# Connecting -----------------------------------------------------------------------------------------


def test_connect_picks_the_workbench(workbench, settings, monkeypatch):
    assert connect(workbench) is workbench
    remote = connect("http://127.0.0.1:1/", token="t0ken")
    assert isinstance(remote, Client) and remote.url == "http://127.0.0.1:1" and "t0ken" not in repr(remote)
    assert connect(remote) is remote
    with pytest.raises(ServiceError, match="cannot reach"):
        remote.providers()
    remote.close()

    # No argument: one Workbench per process, made on first use (here over the test's home).
    monkeypatch.setattr(connect_module, "_default", None)
    monkeypatch.setattr(connect_module.atexit, "register", lambda fn: fn)
    monkeypatch.setenv("WORKBENCH_HOME", str(settings.home_dir / "default"))
    monkeypatch.setenv("WORKBENCH_MODELS_PATH", str(settings.models_dir))
    default = connect()
    try:
        assert connect() is default and default.settings.home_dir.name == "default"
    finally:
        default.close()


def test_every_panel_builds_and_displays(workbench, capsys):
    dashboard = Dashboard(workbench)
    try:
        assert set(dashboard.panels) == {"Providers", "Playground", "Datasets", "Training", "Jobs", "Evaluation"}
        assert isinstance(dashboard.tabs, widgets.Tab) and len(dashboard.tabs.children) == 6
        assert "this process" in dashboard.health.value and "MLX on" in dashboard.health.value
        for panel in dashboard.panels.values():
            assert isinstance(panel.widget, widgets.Box)
            panel._ipython_display_()  # no frontend: IPython's display prints the widget's repr
    finally:
        dashboard.close()
    assert capsys.readouterr().out


# Playground -----------------------------------------------------------------------------------------


def test_playground_streams_a_prompt_and_holds_a_chat(workbench):
    panel = PlaygroundPanel(workbench)
    panel.prompt.value = "Once upon a time"
    panel.max_tokens.value = 12
    panel.temperature.value = 0.0
    panel.generate_button.click()
    assert panel.message.value == ""
    assert "local_mlx" in panel.details.value and "attempts" in panel.details.value
    streamed = panel.output.value
    assert len(streamed) > len('<pre style="white-space:pre-wrap;margin:0"></pre>')

    panel.stream.value = False  # the same answer, whole (greedy)
    result = panel.run()
    assert result.provider_used == "local_mlx"
    assert html.escape(result.generated_text) in panel.output.value == streamed

    panel.mode.value = "chat"
    assert panel.system.layout.display == "" and panel.transcript.layout.display == ""
    panel.prompt.value = "Hello there"
    panel.generate_button.click()
    panel.prompt.value = "And then?"
    panel.generate_button.click()
    assert [turn["role"] for turn in panel.history] == ["user", "assistant", "user", "assistant"]
    assert "Hello there" in panel.transcript.value and panel.prompt.value == ""
    panel.new_chat_button.click()
    assert panel.history == [] and panel.transcript.value == ""

    panel.provider.value = "openai"  # not configured: the refusal is shown, nothing raised
    panel.generate_button.click()
    assert "openai is not configured" in panel.message.value


# Providers ------------------------------------------------------------------------------------------


def test_providers_panel_configures_and_orders_providers(workbench):
    panel = ProvidersPanel(workbench)
    assert "local_mlx" in panel.table.value and panel.order.value == ["local_mlx"]
    panel.provider.value = "ollama"
    panel.api_base.value = "http://127.0.0.1:9"
    panel.configure_button.click()
    assert "ollama configured" in panel.message.value
    assert panel.listing["ollama"].configured and "http://127.0.0.1:9" in panel.table.value

    panel.order.value = ["local_mlx", "ollama"]
    panel.fallback_button.click()
    assert workbench.fallback().order == ["local_mlx", "ollama"] and "local_mlx → ollama" in panel.chain.value
    panel.default_button.click()
    assert workbench.fallback().order == ["ollama", "local_mlx"]

    panel.api_base.value = "ftp://nowhere"
    panel.configure_button.click()
    assert "api_base" in panel.message.value and "http://" in panel.message.value


def test_a_typed_key_is_never_shown(workbench):
    panel = ProvidersPanel(workbench)
    assert isinstance(panel.api_key, widgets.Password)
    panel.provider.value = "openai"
    panel.api_key.value = PLANTED_KEY
    panel.configure_button.click()
    assert "openai configured" in panel.message.value
    assert panel.api_key.value == ""
    assert panel.listing["openai"].api_key == "..." + PLANTED_KEY[-3:]  # masked, as the workbench gives it
    assert PLANTED_KEY not in shown_state(panel)

    # Refused (a bad api_base): the key is cleared all the same, and the error does not echo it.
    panel.provider.value = "together"
    panel.api_key.value = PLANTED_KEY + "x"
    panel.api_base.value = "not a url"
    panel.configure_button.click()
    assert "api_base" in panel.message.value and panel.api_key.value == ""
    assert PLANTED_KEY not in shown_state(panel)
    assert PLANTED_KEY not in shown_state(PlaygroundPanel(workbench))


# Datasets -------------------------------------------------------------------------------------------


def test_dataset_panel_previews_rows_as_the_model_sees_them(workbench, settings):
    panel = DatasetPanel(workbench)
    panel.rows.value = 2
    panel.preview_button.click()
    assert panel.message.value == ""
    assert "&lt;|im_start|&gt;" in panel.samples.value  # the chat template, applied
    assert "300 rows" in panel.summary.value and "prompts masked" in panel.summary.value
    masked = [int(part.split(" masked")[0].rsplit(" ", 1)[1]) for part in panel.samples.value.split("row ")[1:]]
    assert len(masked) == 2 and all(n > 0 for n in masked)
    assert len(panel.lengths) == 300 and is_png(panel.plot.image) and panel.plot.axes.patches

    panel.mask_prompt.value = False
    panel.preview()
    assert "0 masked (prompt)" in panel.samples.value and "nothing masked" in panel.summary.value

    # Your own file, under <home>/datasets.
    rows = [{"instruction": f"Say {i}", "output": f"{i}"} for i in range(4)]
    (settings.home_dir / "datasets").mkdir(exist_ok=True)
    (settings.home_dir / "datasets" / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    panel.source.value = "file"
    assert panel.path.layout.display == ""
    panel.path.value = "mine.jsonl"
    panel.preview_button.click()
    assert "mine.jsonl" in panel.summary.value and "4 rows" in panel.summary.value
    panel.path.value = "missing.jsonl"
    panel.preview_button.click()
    assert "dataset_path" in panel.message.value and "no such file" in panel.message.value


# Training and jobs ----------------------------------------------------------------------------------


def test_training_form_shows_errors_beside_fields_and_starts_nothing(workbench):
    panel = TrainingPanel(workbench, batch_size=0)
    assert panel.fields["training_type"].widget.options == (("sft", "sft"), ("lora", "lora"), ("qlora", "qlora"),
                                                               ("dora", "dora"), ("dpo", "dpo"), ("orpo", "orpo"))
    assert panel.fields["max_steps"].widget.tooltip.startswith("Stop after this many steps")  # the description
    assert panel.fields["lr_schedule"].get() == "cosine" and panel.fields["max_steps"].get() is None
    panel.start_button.click()
    errors = panel.form.errors()
    assert set(errors) == {"experiment_name", "batch_size"}
    batch = panel.fields["batch_size"]
    assert batch.error.layout.display == "" and "greater than or equal to 1" in batch.error.value
    assert batch.error in batch.row.children  # next to its field
    assert panel.fields["seed"].error.layout.display == "none"
    assert panel.form.widget.selected_index == 0  # the section of the first faulty field, open
    assert "Not started" in panel.message.value and workbench.list_jobs() == []

    # The model's own checks, and the workbench's (a missing file), land beside their fields too.
    panel.set_values(experiment_name="bad", batch_size=2, quantization="int8")
    panel.start_button.click()
    assert "quantization applies to training_type qlora, dora, dpo and orpo only" in panel.message.value
    assert panel.form.errors() == {}
    panel.set_values(quantization=None, dataset_path="missing.jsonl")
    panel.start_button.click()
    assert "no such file" in panel.form.errors()["dataset_path"] and workbench.list_jobs() == []
    assert panel.form.widget.selected_index == 1  # the Data section
    with pytest.raises(ValueError, match="not fields of TrainingConfig: max_step"):
        TrainingPanel(workbench, max_step=3)


def test_a_list_field_takes_comma_separated_items(workbench):
    panel = TrainingPanel(workbench, experiment_name="targets", training_type="lora", dataset="alpaca")
    targets = panel.fields["lora_targets"]
    assert targets.get() is None  # empty: every layer, the default
    targets.widget.value = " q_proj, self_attn.v_proj ,"
    assert panel.form.validate().lora_targets == ["q_proj", "self_attn.v_proj"]
    panel.form.set_values(lora_targets=["k_proj", "o_proj"])
    assert targets.widget.value == "k_proj, o_proj"
    targets.widget.value = "q proj"
    assert panel.form.validate() is None and "q proj" in panel.form.errors()["lora_targets"]


def test_training_run_started_by_a_click_completes_and_is_listed(workbench):
    panel = TrainingPanel(workbench, experiment_name="ui-lora", training_type="lora", dataset="alpaca",
                          max_steps=3, batch_size=2)
    panel.start_button.click()
    assert "ui-lora" in panel.message.value and "⚠" not in panel.message.value
    status = panel.wait(timeout=120, interval=0.3)
    assert status.status == "completed", status.error
    assert panel.train_points == 3 and len(panel.plot.axes.lines[0].get_xdata()) == 3
    assert panel.valid_points >= 1  # the validation loss at the last step
    assert "ui-lora" in panel.plot.axes.get_title() and panel.plot.axes.get_xlabel() == "step"
    assert is_png(panel.plot.image)
    assert (panel.progress.value, panel.progress.max, panel.progress.bar_style) == (3, 3, "success")
    assert "tokens/s" in panel.stats.value and "peak memory" in panel.stats.value and " MB" in panel.stats.value

    jobs = JobsPanel(workbench, refresh_s=None)
    try:
        assert "ui-lora" in jobs.table.value and "completed" in jobs.table.value
        jobs.select.value = ("ui-lora",)
        jobs.compare_button.click()
        assert jobs.compared == {"ui-lora": (3, panel.valid_points)} and is_png(jobs.plot.image)
        assert "ui-lora" in jobs.plot.axes.get_title()
    finally:
        jobs.close()
        panel.close()


def test_stop_and_resume_a_longer_job_with_live_updates(workbench):
    panel = TrainingPanel(workbench, poll_s=0.3, experiment_name="ui-long", max_steps=40, batch_size=2,
                          save_every=1000, eval_steps=1000)
    panel.start_button.click()
    panel.wait(timeout=120, interval=0.2, until=lambda s: s.current_step >= 2 or s.status in TERMINAL)
    panel.stop_button.click()
    assert "ui-long stopped" in panel.message.value, panel.message.value
    stopped_at = panel.last_status.current_step
    assert panel.last_status.status == "stopped" and 2 <= stopped_at < 40
    assert panel.progress.bar_style == "warning"

    panel.resume_button.click()
    assert "resumed" in panel.message.value
    deadline = time.monotonic() + 120  # no wait(): the panel's own poller follows the job
    while panel.last_status.status != "completed" and time.monotonic() < deadline:
        assert panel.last_status.status in ("queued", "running"), panel.last_status.error
        time.sleep(0.2)
    assert panel.last_status.current_step == 40 and panel.progress.value == 40
    panel.close()


# Evaluation ---------------------------------------------------------------------------------------


def test_evaluation_panel_scores_the_base_and_shows_its_items(workbench):
    panel = EvaluationPanel(workbench, models=[None], tasks=["workbench_zorbish_mc", "workbench_zorbish_gen"],
                            prefix="ui", limit=3)
    assert "workbench_zorbish_mc" in panel.tasks.options and panel.models.value == ("(default model)",)
    panel.start_button.click()
    assert "ui-base" in panel.message.value, panel.message.value
    statuses = panel.wait(timeout=180, interval=0.3)
    assert statuses["ui-base"].status == "completed", statuses["ui-base"].error
    assert "ui-base" in panel.progress.value and "completed" in panel.progress.value
    # metric ± standard error for each task, named as lm-eval names it; one bar per task
    assert "acc,none" in panel.results.value and "exact_match,two_words" in panel.results.value
    assert panel.results.value.count(" ± ") == 2
    assert len(panel.plot.axes.patches) == 2 and is_png(panel.plot.image)

    items = panel.browse(task="workbench_zorbish_mc")
    assert len(items) == 3 and panel.browse_name.value == "ui-base"
    assert "Translate into Zorbish" in panel.item_table.value and "items 1-3 of 3" in panel.item_table.value
    assert all(item["response"] in item["choices"] for item in items) and "<th" in panel.item_table.value
    panel.next_button.click()
    assert panel.items == [] and "no items from 11" in panel.item_table.value
    panel.close()


def test_evaluation_panel_says_what_is_wrong_and_starts_nothing(workbench):
    panel = EvaluationPanel(workbench, tasks=["workbench_zorbish_mc"])
    panel.start_button.click()
    assert "pick at least one model" in panel.message.value
    panel.other_model.value = "no-such-model-here"  # checked before the tasks are indexed: cheap
    panel.start_button.click()
    assert "model: " in panel.message.value and "no-such-model-here" in panel.message.value
    panel.other_model.value, panel.prefix.value = "", "not a name!"  # refused by EvalConfig itself
    panel.models.value = ("(default model)",)
    panel.start_button.click()
    assert "name: " in panel.message.value
    assert workbench.list_evaluations() == [] and panel.names == []
    panel.close()


# Over HTTP ------------------------------------------------------------------------------------------


def test_panels_over_a_running_service(tmp_path, models_dir):
    with run_service(tmp_path / "service-home", models_dir) as service:
        client = connect(service.url)
        try:
            panel = PlaygroundPanel(client)
            panel.prompt.value = "Hello"
            panel.max_tokens.value = 12
            panel.generate_button.click()  # streamed: server-sent events
            assert panel.message.value == "" and "local_mlx" in panel.details.value
            panel.stream.value = False
            result = panel.run()
            assert result.generated_text and html.escape(result.generated_text) in panel.output.value

            assert "local_mlx" in ProvidersPanel(client).table.value
            training = TrainingPanel(client, experiment_name="http-bad", dataset_path="missing.jsonl")
            training.start_button.click()
            assert "no such file" in training.form.errors()["dataset_path"]
            datasets = DatasetPanel(client)  # the preview is an endpoint too: the same rows, remotely
            datasets.rows.value = 2
            datasets.preview_button.click()
            assert datasets.message.value == "" and "300 rows" in datasets.summary.value
            assert "&lt;|im_start|&gt;" in datasets.samples.value and len(datasets.lengths) == 300
            evaluation = EvaluationPanel(client, models=["no-such-model"], tasks=["workbench_zorbish_mc"])
            evaluation.start_button.click()  # refused by the service, shown as the library's own refusal
            assert "model: " in evaluation.message.value and "no-such-model" in evaluation.message.value
        finally:
            client.close()
