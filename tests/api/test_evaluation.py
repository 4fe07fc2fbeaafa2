"""Evaluation jobs over HTTP: lm-eval's tasks over a model or an experiment's adapter (never fused),
with results, scored items and progress, in the training jobs' queue; what cannot run is refused
before any job starts."""

from __future__ import annotations

import time

from tests.api.conftest import MODEL, start, wait_for


def evaluate(svc, name: str, **config) -> dict:
    """An evaluation run to its end through the service: its final status, as JSON."""
    answer = svc.post("/eval/start", json={"name": name, "tasks": ["workbench_arith_mc"], "limit": 6} | config)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "started" and answer.json()["state"] in ("queued", "running")
    with svc.client() as client:
        return client.wait_evaluation(name, timeout_s=300).model_dump(mode="json")


def test_an_experiment_is_evaluated_through_its_adapter_without_fusing(api):
    start(api, experiment_name="to-evaluate", max_steps=4, learning_rate=1e-3,
          eval_tasks=["workbench_arith_mc"], eval_limit=3)
    trained = wait_for(api, "to-evaluate", until={"completed"})
    folders_before = sorted(p.name for p in api.home.rglob("*") if p.is_dir())

    tuned = evaluate(api, "tuned-arith", model="to-evaluate")
    assert tuned["status"] == "completed", tuned["error"]
    metrics = tuned["results"]["workbench_arith_mc"]
    assert 0 <= metrics["acc,none"] <= 1 and metrics["acc_stderr,none"] >= 0  # as lm-eval reports them
    assert tuned["done"] == tuned["total"] > 0 and tuned["progress"] == 1.0

    assert evaluate(api, "base-arith", model=MODEL)["status"] == "completed"
    tuned_items = api.get("/eval/tuned-arith/samples").json()
    base_items = api.get("/eval/base-arith/samples").json()
    assert tuned_items["total"] == base_items["total"] == 6
    first = tuned_items["items"][0]
    assert {"prompt", "target", "response", "acc"} <= set(first) and first["task"] == "workbench_arith_mc"
    # The same items scored with and without the adapter: different log-likelihoods.
    assert [i["loglikelihoods"] for i in tuned_items["items"]] != [i["loglikelihoods"] for i in base_items["items"]]

    new = sorted(p.name for p in api.home.rglob("*") if p.is_dir() and p.name not in folders_before)
    assert not [name for name in new if "fused" in name], new  # evaluated in place, never fused

    # The evaluation the training job asked for (eval_tasks), linked from its status.
    with api.client() as client:
        linked = client.job_status("to-evaluate").eval_job
        assert linked == "to-evaluate-eval" and trained["status"] == "completed"
        asked = client.wait_evaluation(linked, timeout_s=300)
    assert asked.status == "completed" and asked.model == "to-evaluate", asked.error
    assert api.get(f"/eval/{linked}/samples").json()["total"] == 3

    page = api.get("/eval/tuned-arith/samples", params={"offset": 4, "limit": 5}).json()
    assert [item["doc_id"] for item in page["items"]] == [4, 5] and page["offset"] == 4
    events = api.get("/eval/tuned-arith/events", params={"follow": "false"}).json()
    progress = [e["data"] for e in events["events"] if e["type"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"]
    assert events["ended"] and {"tuned-arith", "base-arith"} <= {j["name"] for j in api.get("/eval/jobs").json()}


def test_a_running_evaluation_stops(api):
    answer = api.post("/eval/start", json={"name": "long-eval", "tasks": ["workbench_arith_gen"], "batch_size": 1,
                                           "max_tokens": 32})
    assert answer.status_code == 200, answer.text
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
