"""More ways to train, over HTTP: a DoRA job trained, served by its experiment's name, fused into a
plain model (over a full-precision base, and over one it quantized), and evaluated by its name; an optimizer's bad setting, or a tracker whose package is missing, is a 400 naming
the field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx_lm

from tests.api.conftest import run_service, start, wait_for

ASK = {"messages": [{"role": "user", "content": "Add the two numbers.\n\n12 and 30"}], "max_tokens": 12,
       "temperature": 0}


def adapter_config(status: dict) -> dict:
    return json.loads((Path(status["adapter_path"]) / "adapter_config.json").read_text())


def test_a_dora_job_is_trained_served_by_its_name_and_fused(api):
    start(api, experiment_name="dora_job", training_type="dora", max_steps=15, batch_size=4,
          learning_rate=5e-3, validation_split=0.0, fast_kernels="off", optimizer="adam")
    done = wait_for(api, "dora_job")
    assert done["status"] == "completed", done["error"]
    assert adapter_config(done)["fine_tune_type"] == "dora"  # what mlx_lm.load reads to build DoRA layers

    base = api.post("/generate", json=ASK).json()
    tuned = api.post("/generate", json=ASK | {"model": "dora_job"})
    assert tuned.status_code == 200, tuned.text
    assert tuned.json()["generated_text"] != base["generated_text"]  # the adapter changed the answers

    fused = api.post("/train/dora_job/fuse")
    assert fused.status_code == 200, fused.text
    model, _ = mlx_lm.load(fused.json()["path"])  # a plain model folder now
    assert type(model.layers[0].self_attn.q_proj).__name__ == "Linear"
    same = api.post("/generate", json=ASK | {"model": fused.json()["path"]}).json()
    assert same["generated_text"] == tuned.json()["generated_text"]

    # Evaluated by its name: the evaluation loads the DoRA layers from its adapter_config.json (LoRA
    # layers would refuse its magnitudes).
    answer = api.post("/eval/start", json={"name": "dora-eval", "model": "dora_job", "tasks": ["workbench_arith_mc"],
                                           "limit": 4})
    assert answer.status_code == 200, answer.text
    with api.client() as client:
        done = client.wait_evaluation("dora-eval", timeout_s=120)
    assert done.status == "completed", done.error
    assert 0 <= done.results["workbench_arith_mc"]["acc,none"] <= 1


def test_dora_over_a_base_it_quantized_is_served_and_fused(api):
    start(api, experiment_name="qdora_job", training_type="dora", quantization="int8", max_steps=3,
          validation_split=0.0, fast_kernels="off")
    done = wait_for(api, "qdora_job")
    assert done["status"] == "completed", done["error"]
    written = adapter_config(done)
    assert written["fine_tune_type"] == "dora" and written["quantization"]["bits"] == 8

    tuned = api.post("/generate", json=ASK | {"model": "qdora_job"})
    assert tuned.status_code == 200, tuned.text
    fused = api.post("/train/qdora_job/fuse")
    assert fused.status_code == 200, fused.text
    again = api.post("/generate", json=ASK | {"model": fused.json()["path"]})
    assert again.status_code == 200, again.text


def test_an_optimizer_setting_it_does_not_take_is_a_400_naming_it(api):
    body = {"experiment_name": "bad_optimizer", "training_type": "lora", "dataset": "alpaca",
            "optimizer": "sgd", "optimizer_config": {"betas": [0.9, 0.99]}}
    refused = api.post("/train/start", json=body)

    assert refused.status_code == 400, refused.text
    assert "optimizer_config.betas" in refused.text and "sgd takes no setting 'betas'" in refused.text
    assert api.get("/train/bad_optimizer/status").status_code == 404  # no job was made


def test_a_tracker_whose_package_is_missing_is_a_400_naming_report_to(tmp_path, models_dir):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    # The service's Python then fails to import wandb, as where the extra is not installed.
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    path = os.pathsep.join(p for p in (str(hidden), os.environ.get("PYTHONPATH")) if p)
    with run_service(tmp_path / "home", models_dir, PYTHONPATH=path) as svc:
        refused = svc.post("/train/start", json={"experiment_name": "tracked", "training_type": "lora",
                                                 "dataset": "alpaca", "report_to": ["tensorboard", "wandb"]})
        assert refused.status_code == 400, refused.text
        (item,) = refused.json()["detail"]
        assert item["loc"][-1] == "report_to" and "mlx-workbench[wandb]" in item["msg"]
        assert svc.get("/train/tracked/status").status_code == 404  # no job was made
