"""Dataset preview over HTTP: what the dashboard shows of a training configuration's data, remotely."""

from __future__ import annotations

from tests.api.conftest import MODEL


def test_a_preview_shows_rows_as_the_model_sees_them(api):
    response = api.post("/datasets/preview", json={"dataset": "alpaca", "model_name": MODEL, "rows": 2,
                                                   "token_lengths": True})
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["summary"]["rows"] == 300 and preview["summary"]["format"] == "alpaca"
    assert len(preview["rows"]) == 2 and "<|im_start|>" in preview["rows"][0]["text"]
    assert all(row["masked_tokens"] > 0 for row in preview["rows"])  # the prompt is masked
    assert len(preview["token_lengths"]) == 300 and min(preview["token_lengths"]) > 0


def test_a_preview_of_bad_data_names_the_field(api):
    missing = api.post("/datasets/preview", json={"dataset": "custom", "dataset_path": "missing.jsonl"})
    assert missing.status_code == 400
    assert missing.json()["detail"][0]["loc"] == ["body", "dataset_path"]
    assert "no such file" in missing.json()["detail"][0]["msg"]
    too_many = api.post("/datasets/preview", json={"dataset": "alpaca", "rows": 1000})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "rows"]
    no_model = api.post("/datasets/preview", json={"dataset": "alpaca", "model_name": "no/such-model"})
    assert no_model.status_code == 400 and no_model.json()["detail"][0]["loc"] == ["body", "model_name"]
