"""Evaluation jobs over HTTP: lm-eval's tasks over a model or an experiment's adapter (never fused),
with results, scored items and progress, in the training jobs' queue; what cannot run is refused
before any job starts."""

from __future__ import annotations

import time

from tests.api.conftest import MODEL, start, wait_for
from tests.fakes.llm_servers import FakeLLMServer


def test_a_trained_experiment_is_evaluated_through_its_adapter_without_fusing(api):
    # eval_tasks: the training job queues its evaluation when it completes, and links it.
    start(api, experiment_name="to-evaluate", max_steps=4, learning_rate=1e-3,
          eval_tasks=["workbench_arith_mc"], eval_limit=6)
    assert wait_for(api, "to-evaluate", until={"completed"})["eval_job"] == "to-evaluate-eval"
    with api.client() as client:
        evaluated = client.wait_evaluation("to-evaluate-eval", timeout_s=300).model_dump(mode="json")
    assert evaluated["status"] == "completed" and evaluated["model"] == "to-evaluate", evaluated["error"]
    metrics = evaluated["results"]["workbench_arith_mc"]
    assert 0 <= metrics["acc,none"] <= 1 and metrics["acc_stderr,none"] >= 0  # as lm-eval reports them
    assert evaluated["done"] == evaluated["total"] > 0 and evaluated["progress"] == 1.0
    assert not list(api.home.rglob("*fused*"))  # the adapter was applied in place, never fused

    items = api.get("/eval/to-evaluate-eval/samples").json()
    assert items["total"] == 6
    first = items["items"][0]
    assert {"prompt", "target", "response", "acc"} <= set(first) and first["task"] == "workbench_arith_mc"
    page = api.get("/eval/to-evaluate-eval/samples", params={"offset": 4, "limit": 5}).json()
    assert [item["doc_id"] for item in page["items"]] == [4, 5] and page["offset"] == 4
    events = api.get("/eval/to-evaluate-eval/events", params={"follow": "false"}).json()
    progress = [e["data"] for e in events["events"] if e["type"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] and events["ended"]
    assert "to-evaluate-eval" in {job["name"] for job in api.get("/eval/jobs").json()}


def test_a_running_evaluation_stops(api):
    answer = api.post("/eval/start", json={"name": "long-eval", "model": MODEL, "tasks": ["workbench_arith_gen"],
                                           "batch_size": 1, "max_tokens": 32})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "started" and answer.json()["state"] in ("queued", "running")
    deadline = time.monotonic() + 120
    while (status := api.get("/eval/long-eval/status").json())["done"] < 1:
        assert status["status"] in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.2)
    stopped = api.post("/eval/long-eval/stop").json()
    assert stopped["status"] == "stopped" and stopped["done"] < stopped["total"], stopped
    assert api.post("/eval/long-eval/stop").status_code == 409  # nothing left to stop


def test_evaluations_that_cannot_run_are_refused_naming_the_field(api):
    def refused(status: int, **config) -> str:
        answer = api.post("/eval/start", json={"name": "refused", "tasks": ["workbench_arith_mc"]} | config)
        assert answer.status_code == status, answer.text
        return answer.text

    unknown = refused(400, tasks=["no_such_task"])
    assert "tasks" in unknown and "no_such_task" in unknown
    assert "model" in refused(400, model="no-such-model")
    training = api.post("/train/start", json={"experiment_name": "refused-too", "training_type": "lora",
                                              "dataset": "alpaca", "eval_tasks": ["no_such_task"]})
    assert training.status_code == 400 and "eval_tasks" in training.text, training.text
    assert "tasks" in refused(422, tasks=[])
    assert "limit" in refused(422, limit=0)
    assert "tasks" in refused(422, tasks=["../escape.yaml"])

    broken = api.home / "tasks" / "broken.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text("task: broken\ndataset_path: [unclosed\n")
    try:
        assert "broken.yaml line" in refused(400)
    finally:
        broken.unlink()

    assert api.get("/eval/never-ran/status").status_code == 404
    assert api.get("/eval/never-ran/samples", params={"limit": 10_000}).status_code == 422
    assert "refused" not in {job["name"] for job in api.get("/eval/jobs").json()}


def test_a_remote_provider_is_evaluated_on_generation_tasks(api):
    with FakeLLMServer("openai", reply_text="47 plus 25 is 72.") as server:
        assert "provider" in api.post("/eval/start", json={"name": "remote", "provider": "openai",
                                                           "tasks": ["workbench_arith_gen"]}).text  # not configured
        configured = api.post("/providers/configure", json={"provider": "openai", "model": "fake-model",
                                                            "api_key": "sk-fake-0123456789abcdef",
                                                            "api_base": server.api_base})
        assert configured.status_code == 200, configured.text
        try:
            scored = api.post("/eval/start", json={"name": "remote", "provider": "openai",
                                                   "tasks": ["workbench_arith_mc"]})
            assert scored.status_code == 400 and "workbench_arith_mc" in scored.text  # needs log-likelihoods
            answer = api.post("/eval/start", json={"name": "remote", "provider": "openai",
                                                   "tasks": ["workbench_arith_gen"], "limit": 3})
            assert answer.status_code == 200, answer.text
            with api.client() as client:
                done = client.wait_evaluation("remote", timeout_s=120)
            assert done.status == "completed", done.error
            assert 0 <= done.results["workbench_arith_gen"]["exact_match,last_number"] <= 1
            items = api.get("/eval/remote/samples").json()["items"]
            assert [item["raw_response"] or item["response"] for item in items] == ["47 plus 25 is 72."] * 3
            asked = [r["json"]["messages"][-1]["content"] for r in server.requests_to("/chat/completions")]
            assert len(asked) == 3 and all(item["prompt"] in asked for item in items)
        finally:
            api.delete("/providers/openai")
