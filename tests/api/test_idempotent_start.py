"""A retried `POST /train/start` answers the job it started, never a second job (a client whose
connection dropped cannot know whether its first request arrived)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

CONFIG = {"experiment_name": "retried_start", "training_type": "lora", "dataset": "alpaca",
          "model_name": "mlx-community/Qwen3-1.7B-8bit", "batch_size": 2, "max_steps": 2}


@pytest.fixture
def stop_after(api):
    names = []
    yield names.append
    for name in names:
        api.post(f"/train/{name}/stop")


def jobs_named(api, name):
    return [job for job in api.get("/train/jobs").json() if job["experiment_name"] == name]


def test_a_retried_start_answers_the_same_job(api, stop_after):
    stop_after("retried_start")
    body = CONFIG | {"request_id": "client-42"}
    first = api.post("/train/start", json=body)
    assert first.status_code == 200, first.text
    again = api.post("/train/start", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert {k: v for k, v in again.json().items() if k != "state"} == \
        {k: v for k, v in first.json().items() if k != "state"}
    assert len(jobs_named(api, "retried_start")) == 1


def test_the_same_id_with_another_body_is_a_409_naming_request_id(api, stop_after):
    stop_after("retried_other")
    body = CONFIG | {"experiment_name": "retried_other", "request_id": "client-43"}
    assert api.post("/train/start", json=body).status_code == 200
    changed = api.post("/train/start", json=body | {"max_steps": 3})
    assert changed.status_code == 409
    assert changed.json()["detail"][0]["loc"] == ["body", "request_id"]
    assert len(jobs_named(api, "retried_other")) == 1


def test_the_idempotency_key_header_and_simultaneous_retries(api, stop_after):
    stop_after("retried_header")
    body = CONFIG | {"experiment_name": "retried_header"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: api.post("/train/start", json=body,
                                                   headers={"Idempotency-Key": "client-44"}), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert len(jobs_named(api, "retried_header")) == 1
    mixed = api.post("/train/start", json=body | {"request_id": "other"}, headers={"Idempotency-Key": "client-44"})
    assert mixed.status_code == 400 and mixed.json()["detail"][0]["loc"] == ["body", "request_id"]
