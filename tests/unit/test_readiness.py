"""Readiness: not ready while the default model is built and loaded, with what is loading; then ready."""

import threading

from workbench.core import Workbench
from workbench.settings import Settings


def test_health_is_not_ready_while_the_default_model_loads_then_ready(settings, monkeypatch):
    workbench = Workbench(settings, manage_jobs=False)
    # Hold the load until health was read: a build of the tiny model takes seconds, but not always.
    gate = threading.Event()
    load = workbench.local.model
    monkeypatch.setattr(workbench.local, "model", lambda name: gate.wait(30) and load(name))
    try:
        loading = workbench.warm_up()
        during = workbench.health()
        gate.set()
        loading.join(timeout=60)
        after = workbench.health()
        loaded = [m["name"] for m in workbench.local.loaded_models()]
    finally:
        workbench.close()

    assert during.ready is False
    assert [item.what for item in during.loading] == ["default model tiny"]
    assert during.status in ("healthy", "degraded") and during.memory_usage
    assert after.ready is True and after.loading == [] and after.failed == []
    assert loaded == ["tiny"]


def test_a_default_model_that_cannot_load_is_named_and_the_service_not_ready(tmp_path, models_dir):
    settings = Settings(home=tmp_path / "home", models_path=models_dir, hub_downloads=False,
                        default_model="no-such-model")
    workbench = Workbench(settings, manage_jobs=False)
    try:
        workbench.warm_up().join(timeout=60)
        health = workbench.health()
    finally:
        workbench.close()

    assert health.ready is False and health.status == "degraded"
    assert health.failed[0].what == "default model no-such-model"
    assert any("no-such-model" in problem for problem in health.problems)
