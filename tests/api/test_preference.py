"""DPO and ORPO over real HTTP, as a user runs them: a job on the shipped preference sample whose
rewards show in the status, the metrics series and the events; bad preference data refused at
submission."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import MODEL, run_service, wait_for

REWARDS = ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("preference-home"), models_dir) as service:
        yield service


def job(**fields) -> dict:
    return {"model_name": MODEL, "training_type": "dpo", "dataset": "preference", "batch_size": 4,
            "max_seq_length": 96, "max_steps": 4, "learning_rate": 5e-4, "validation_split": 0.0} | fields


def test_a_dpo_job_reports_its_rewards_in_status_metrics_and_events(svc):
    response = svc.post("/train/start", json=job(experiment_name="dpo_http"))
    assert response.status_code == 200, response.text

    done = wait_for(svc, "dpo_http")
    assert done["status"] == "completed", done["error"]
    assert done["training_type"] == "dpo" and done["adapter_path"]
    assert 0.0 <= done["reward_accuracy"] <= 1.0
    assert done["reward_margin"] == pytest.approx(done["chosen_reward"] - done["rejected_reward"], abs=1e-6)
    steps = svc.get("/train/dpo_http/metrics").json()["steps"]
    assert [row["step"] for row in steps] == [1, 2, 3, 4]
    assert all(row[name] is not None for row in steps for name in REWARDS)
    assert steps[-1]["reward_margin"] > steps[0]["reward_margin"]
    events = [json.loads(line[6:]) for line in svc.get("/train/dpo_http/events").text.splitlines()
              if line.startswith("data: ")]
    metrics = [event["data"] for event in events if event["type"] == "metrics" and event.get("data")]
    assert any(set(REWARDS) <= set(data) for data in metrics)
    # The published adapter answers through /generate, as a LoRA adapter does.
    answer = svc.post("/generate", json={"model": "dpo_http", "prompt": "What is 2 plus 3?", "max_tokens": 8})
    assert answer.status_code == 200, answer.text


def test_an_orpo_job_over_an_int8_base_trains(svc):
    response = svc.post("/train/start", json=job(experiment_name="orpo_int8", training_type="orpo",
                                                 quantization="int8", max_steps=3))
    assert response.status_code == 200, response.text

    done = wait_for(svc, "orpo_int8")
    assert done["status"] == "completed", done["error"]
    assert done["config"]["quantization"] == "int8"
    assert done["chosen_reward"] < 0 and 0.0 <= done["reward_accuracy"] <= 1.0


def test_dpo_on_a_dataset_without_preferences_is_a_400_naming_dataset(svc):
    response = svc.post("/train/start", json=job(experiment_name="dpo_alpaca", dataset="alpaca"))

    assert response.status_code == 400, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "dataset"] and "preference" in item["msg"]


@pytest.mark.parametrize("missing", ["chosen", "rejected"])
def test_a_preference_row_without_an_answer_is_refused_by_file_and_line(svc, missing):
    rows = [{"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": "No."} for i in range(6)]
    del rows[3][missing]
    folder = svc.home / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"no_{missing}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    response = svc.post("/train/start", json=job(experiment_name=f"no_{missing}", dataset="custom",
                                                 dataset_path=f"no_{missing}.jsonl",
                                                 dataset_format="preference"))

    assert response.status_code == 400, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "dataset_path"]
    assert f"no_{missing}.jsonl line 4" in item["msg"] and f"missing key '{missing}'" in item["msg"]


def test_packing_does_not_apply_to_pairs(svc):
    response = svc.post("/train/start", json=job(experiment_name="packed_pairs", packing=True))

    assert response.status_code in (400, 422), response.text
    assert "packing" in response.text
