"""What used to be accepted and then fail later (or hang, or answer 500) is refused at submission
with a 4xx naming the field; what can only fail during training fails clearly and is never served.

(NaN and Infinity in float fields are refused by the training config: tests/unit/test_config_limits.py.
Over HTTP their 422 also needs an error renderer that can print a non-finite input.)"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import mlx.core as mx
import pytest
import requests

from tests.api.conftest import MODEL, wait_for


def body(**fields) -> dict:
    return {"experiment_name": "refused", "model_name": MODEL, "training_type": "lora", "dataset": "alpaca",
            "max_steps": 2} | fields


def named_fields(response: requests.Response) -> list:
    return [part for item in response.json()["detail"] for part in item["loc"]]


@pytest.mark.parametrize("fields, field", [
    ({"seed": 2**64}, "seed"),
    ({"seed": -1}, "seed"),
    ({"memory_limit_mb": 10**15}, "memory_limit_mb"),
    ({"cache_limit_mb": 10**15}, "cache_limit_mb"),
    ({"max_steps": 10**12}, "max_steps"),
    ({"experiment_name": "trailing_newline\n"}, "experiment_name"),
    ({"eval_provider": "openai"}, "eval_provider"),  # no openai key configured in the test service
    ({"validation_split": 0.5, "test_split": 0.5}, "test_split"),  # no rows left to train on
    ({"validation_split": 0.0, "early_stopping_patience": 2}, "early_stopping_patience"),
    ({"validation_split": 0.0, "select_checkpoint": "best"}, "select_checkpoint"),
])
def test_what_would_fail_in_the_worker_is_refused_at_submission(api, fields, field):
    response = api.post("/train/start", json=body(**fields))
    assert 400 <= response.status_code < 500, response.text
    assert field in named_fields(response), response.text


def test_the_largest_seed_is_accepted(api):
    response = api.post("/train/start", json=body(experiment_name="largest_seed", seed=2**64 - 1, max_steps=1))
    assert response.status_code == 200, response.text
    assert wait_for(api, "largest_seed", timeout=120)["status"] == "completed"


def test_a_batch_larger_than_the_training_rows_is_refused_at_submission(api):
    folder = api.home / "datasets"
    folder.mkdir(exist_ok=True)
    rows = [{"instruction": f"Say {n}", "output": str(n)} for n in range(5)]
    (folder / "five.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    response = api.post("/train/start", json=body(experiment_name="big_batch", dataset_path="five.jsonl",
                                                  batch_size=8, validation_split=0.2))
    assert response.status_code == 400, response.text
    assert named_fields(response) == ["body", "batch_size"]
    assert "4 training rows" in response.json()["detail"][0]["msg"]


def test_bad_dataset_paths_are_a_4xx_naming_dataset_path_never_a_500_or_a_hang(api):
    folder = api.home / "datasets"
    folder.mkdir(exist_ok=True)
    fifo = folder / "pipe.jsonl"
    if not fifo.exists():
        os.mkfifo(fifo)
    (folder / "with_a_pipe").mkdir(exist_ok=True)
    if not (folder / "with_a_pipe" / "train.jsonl").exists():
        os.mkfifo(folder / "with_a_pipe" / "train.jsonl")
    (folder / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    if not (folder / "nested" / "deeper" / "rows.jsonl").exists():
        os.mkfifo(folder / "nested" / "deeper" / "rows.jsonl")
    for path in ["data\x00.jsonl", "x" * 300 + ".jsonl", "pipe.jsonl", "with_a_pipe", "nested", "/dev/zero"]:
        started = time.monotonic()
        response = api.post("/train/start", json=body(experiment_name="bad_path", dataset_path=path))
        assert 400 <= response.status_code < 500, (path[:20], response.text)
        assert named_fields(response) == ["body", "dataset_path"], response.text
        assert time.monotonic() - started < 10, path[:20]
    assert api.get("/train/bad_path/status").status_code == 404


def test_a_dataset_name_no_file_could_have_is_a_4xx_naming_dataset(api):
    # 180 characters but 300 bytes in UTF-8, over a file name's 255 (found by schemathesis), and a NUL.
    for name in ["T\u0330\u033a" * 60, "alp\x00aca"]:
        response = api.post("/train/start", json=body(experiment_name="bad_name", dataset=name))
        assert response.status_code == 400, response.text
        assert named_fields(response) == ["body", "dataset"], response.text
    assert api.get("/train/bad_name/status").status_code == 404


def test_a_stop_during_start_up_reports_stopped(api):
    assert api.post("/train/start", json=body(experiment_name="early_stop", max_steps=50)).status_code == 200
    stopped = api.post("/train/early_stop/stop").json()  # the worker is still importing MLX
    assert stopped["state"] == "stopped"
    status = api.get("/train/early_stop/status").json()
    assert status["status"] == "stopped" and status["error"] is None


def test_a_loss_that_turns_nan_fails_the_run_and_nothing_is_served(api, models_dir):
    # A base model with a NaN in its final norm: every loss is NaN from the first step.
    broken = Path(models_dir) / "tiny-nan"
    if not broken.exists():
        shutil.copytree(Path(models_dir) / "tiny", broken)
        weights = mx.load(str(broken / "model.safetensors"))
        weights["model.norm.weight"] = mx.full(weights["model.norm.weight"].shape, float("nan"))
        mx.save_safetensors(str(broken / "model.safetensors"), weights)
    response = api.post("/train/start", json=body(experiment_name="diverged", model_name=str(broken),
                                                  max_steps=5))
    assert response.status_code == 200, response.text
    done = wait_for(api, "diverged", timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "loss_not_finite"
    assert "nan at step 1" in done["error"]["message"] and "no adapter was published" in done["error"]["message"]
    assert done["adapter_path"] is None
    served = api.post("/generate", json={"model": "diverged", "prompt": "Hi", "max_tokens": 2})
    assert 400 <= served.status_code < 500, served.text


def test_fusing_after_the_adapter_folder_was_deleted_is_a_409_naming_it(api):
    assert api.post("/train/start", json=body(experiment_name="deleted_adapter", max_steps=1)).status_code == 200
    done = wait_for(api, "deleted_adapter", timeout=120)
    assert done["status"] == "completed", done["error"]
    shutil.rmtree(done["adapter_path"])
    response = api.post("/train/deleted_adapter/fuse")
    assert response.status_code == 409, response.text
    assert named_fields(response) == ["body", "experiment_name"]
    assert "adapter folder" in response.json()["detail"][0]["msg"]
    served = api.post("/generate", json={"model": "deleted_adapter", "prompt": "Hi", "max_tokens": 2})
    assert 400 <= served.status_code < 500, served.text
    assert "adapter" in served.text
    assert api.post("/generate", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200  # others unharmed
