"""Training over real HTTP: the user's training, integration and resource checks, and the reliability
promises (stop, resume, a killed worker)."""

import json
import os
import re
import shutil
import signal
import time

import mlx.core as mx
import mlx_lm
import pytest

from tests.api.conftest import MODEL, run_service, start, wait_for


@pytest.fixture(scope="module")
def svc(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("training-home"), models_dir) as service:
        yield service




def losses(svc, name):
    return {row["step"]: row["loss"] for row in svc.get(f"/train/{name}/metrics").json()["steps"]}


def test_start_training_job(svc):
    training_config = {
        "experiment_name": "test_training_001", "model_name": MODEL, "training_type": "sft",
        "dataset": "alpaca", "batch_size": 2, "learning_rate": 1e-5, "num_epochs": 1, "max_steps": 10,
    }
    response = svc.post("/train/start", json=training_config)
    assert response.status_code == 200
    result = response.json()
    assert result["experiment_name"] == "test_training_001"
    assert result["status"] == "started"
    assert result["state"] in ("queued", "running")
    assert "job_id" in result

    done = wait_for(svc, "test_training_001")
    assert done["status"] == "completed", done["error"]
    assert done["current_step"] == done["total_steps"] == 10
    assert done["model_path"].endswith("/tiny")  # the folder the alias resolved to


def test_training_status(svc):
    status = svc.get("/train/test_training_001/status").json()
    for key in ("experiment_name", "current_step", "total_steps", "loss", "status", "eval_loss", "tokens_per_s",
                "peak_memory_mb", "checkpoint", "model_path", "error", "phase"):
        assert key in status
    assert status["loss"] > 0 and status["tokens_per_s"] > 0 and status["peak_memory_mb"] > 0
    assert status["checkpoint"] and status["backend"] == "cpu"


def test_list_training_jobs(svc):
    jobs = svc.get("/train/jobs").json()
    assert isinstance(jobs, list) and jobs
    job = jobs[0]
    for key in ("experiment_name", "status", "created_at"):
        assert key in job


def test_valid_training_configs_each_run_to_completion(svc):
    configs = [
        {"experiment_name": "sft_alpaca_test", "training_type": "sft", "dataset": "alpaca",
         "model_name": MODEL, "batch_size": 1, "max_steps": 5},
        {"experiment_name": "lora_test", "training_type": "lora", "dataset": "sharegpt",
         "model_name": MODEL, "lora_rank": 8, "max_steps": 5},
        {"experiment_name": "qlora_test", "training_type": "qlora", "dataset": "custom",
         "model_name": MODEL, "quantization": "int4", "max_steps": 5},
    ]
    for config in configs:
        response = svc.post("/train/start", json=config)
        assert response.status_code == 200
        assert response.json()["status"] == "started"
    for config in configs:
        done = wait_for(svc, config["experiment_name"])
        assert done["status"] == "completed", done["error"]
        assert done["current_step"] == 5 and done["training_type"] == config["training_type"]


def test_every_kind_of_adapter_describes_itself_and_serves(svc):
    quantized = {"bits": 4, "group_size": 64, "mode": "affine"}  # QLoRA quantized the full-precision base
    for name, fine_tune_type, quantization in [("sft_alpaca_test", "full", None), ("lora_test", "lora", None),
                                               ("qlora_test", "lora", quantized)]:
        done = svc.get(f"/train/{name}/status").json()
        config = json.loads(open(os.path.join(done["adapter_path"], "adapter_config.json")).read())
        assert config["fine_tune_type"] == fine_tune_type and config["quantization"] == quantization
        assert config["base_model"] == done["model_path"] and config["model_name"] == MODEL
        answer = svc.post("/generate", json={"model": name, "prompt": "Hi", "max_tokens": 2})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("config, field", [
    ({"experiment_name": "missing_fields"}, "training_type"),
    ({"experiment_name": "invalid_type", "training_type": "invalid_type", "dataset": "alpaca"}, "training_type"),
    ({"experiment_name": "invalid_model", "training_type": "sft", "model_name": "nonexistent/model",
      "dataset": "alpaca"}, "model_name"),
    ({"experiment_name": "../escape", "training_type": "lora", "dataset": "alpaca"}, "experiment_name"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "batch_size": 0}, "batch_size"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "learning_rate": -1}, "learning_rate"),
    ({"experiment_name": "x", "training_type": "sft", "dataset": "alpaca", "quantization": "int4"}, "body"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "dataset_path": "/etc/passwd"},
     "dataset_path"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "no/such-dataset"}, "dataset"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "memory_limit_mb": 1},
     "memory_limit_mb"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "packing": "sometimes"}, "packing"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "lora_targets": []}, "lora_targets"),
    ({"experiment_name": "x", "training_type": "lora", "dataset": "alpaca", "lora_targets": ["q proj"]},
     "lora_targets"),
    ({"experiment_name": "x", "training_type": "sft", "dataset": "alpaca", "lora_targets": ["q_proj"]}, "body"),
])
def test_invalid_training_configs(svc, config, field):
    response = svc.post("/train/start", json=config)
    assert response.status_code in (400, 422), response.text
    assert any(field in item["loc"] for item in response.json()["detail"]), response.text


def test_a_malformed_row_is_named_before_training_starts(svc):
    folder = svc.home / "datasets"
    folder.mkdir(exist_ok=True)
    (folder / "broken.jsonl").write_text(
        '{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Say bye", "output": "bye"}\n{"oops": 1}\n'
    )
    response = svc.post("/train/start", json={"experiment_name": "broken_data", "training_type": "lora",
                                              "dataset": "alpaca", "dataset_path": "broken.jsonl"})
    assert response.status_code in (400, 422)
    message = response.json()["detail"][0]["msg"]
    assert "broken.jsonl" in message and "line 3" in message
    assert svc.get("/train/broken_data/status").status_code == 404  # no job was created


def test_rows_whose_prompt_fills_max_seq_length_are_left_out_not_trained_into_nan(svc):
    # At 32 tokens, about a fifth of the alpaca sample's prompts fill the whole sequence: a batch of
    # those would have no token to learn from (a division by zero that turns the weights to NaN).
    start(svc, experiment_name="short_rows", max_seq_length=32, batch_size=1, max_steps=12)
    done = wait_for(svc, "short_rows")
    assert done["status"] == "completed", done["error"]
    steps = svc.get("/train/short_rows/metrics").json()["steps"]
    assert len(steps) == 12 and all(row["loss"] is not None and row["tokens"] > 0 for row in steps)
    left_out = re.search(r"(\d+) of (\d+) training rows are left out", svc.get("/train/short_rows/events").text)
    assert left_out and 0 < int(left_out[1]) < int(left_out[2])


def test_when_no_row_has_a_token_to_learn_the_job_fails_naming_max_seq_length(svc):
    start(svc, experiment_name="too_short", max_seq_length=16, max_steps=3)
    done = wait_for(svc, "too_short")
    assert done["status"] == "failed"
    assert done["error"]["field"] == "max_seq_length" and "mask_prompt" in done["error"]["message"]


def test_lora_can_target_some_projections_only_and_the_adapter_serves(svc):
    start(svc, experiment_name="q_and_v", lora_targets=["q_proj", "self_attn.v_proj"], max_steps=3)
    done = wait_for(svc, "q_and_v")
    assert done["status"] == "completed", done["error"]
    adapter = done["adapter_path"]
    config = json.loads(open(os.path.join(adapter, "adapter_config.json")).read())
    assert config["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    trained = mx.load(os.path.join(adapter, "adapters.safetensors"))
    assert trained and {name.split(".")[-2] for name in trained} == {"q_proj", "v_proj"}
    answer = svc.post("/generate", json={"model": "q_and_v", "max_tokens": 4,
                                         "messages": [{"role": "user", "content": "Say hi"}]})
    assert answer.status_code == 200, answer.text


def test_a_target_the_model_lacks_fails_the_job_naming_lora_targets_and_the_layers_it_has(svc):
    start(svc, experiment_name="no_such_layer", lora_targets=["qkv_proj"], max_steps=3)
    done = wait_for(svc, "no_such_layer")
    assert done["status"] == "failed"
    assert done["error"]["field"] == "lora_targets"
    assert "qkv_proj" in done["error"]["message"] and "q_proj" in done["error"]["message"]


def test_unknown_experiment_is_a_404(svc):
    for method, path in [("get", "/train/nobody/status"), ("post", "/train/nobody/stop"),
                         ("post", "/train/nobody/resume"), ("get", "/train/nobody/metrics")]:
        assert getattr(svc, method)(path).status_code == 404


def test_loss_falls_and_validation_loss_is_recorded(svc):
    start(svc, experiment_name="loss_falls", max_steps=30, batch_size=4, learning_rate=1e-3, eval_steps=10)
    done = wait_for(svc, "loss_falls")
    assert done["status"] == "completed"
    steps = svc.get("/train/loss_falls/metrics").json()["steps"]
    assert [s["step"] for s in steps] == list(range(1, 31))
    first, last = sum(s["loss"] for s in steps[:5]) / 5, sum(s["loss"] for s in steps[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert [s["step"] for s in steps if s["eval_loss"] is not None] == [10, 20, 30]


def test_a_name_in_use_is_a_409(svc):
    start(svc, experiment_name="busy", max_steps=400)
    again = svc.post("/train/start", json={"experiment_name": "busy", "training_type": "lora", "dataset": "alpaca"})
    assert again.status_code == 409
    assert svc.post("/train/busy/stop").json()["action"] == "stopped"


def test_stop_then_resume_continues_the_same_loss_curve(svc):
    common = {"max_steps": 40, "batch_size": 2, "learning_rate": 5e-4, "save_every": 1000, "seed": 3}
    start(svc, experiment_name="uninterrupted", **common)
    reference = losses(svc, wait_for(svc, "uninterrupted")["experiment_name"])

    start(svc, experiment_name="test_stop", **common)
    wait_for(svc, "test_stop", until={"running"}, step_at_least=5)
    stopped = svc.post("/train/test_stop/stop")
    assert stopped.status_code == 200
    result = stopped.json()
    assert result["experiment_name"] == "test_stop" and result["action"] == "stopped"
    assert result["state"] == "stopped" and result["checkpoint"]
    at = result["current_step"]
    assert 5 <= at < 40

    resumed = svc.post("/train/test_stop/resume").json()
    assert resumed["action"] == "resumed" and resumed["state"] in ("queued", "running")
    assert wait_for(svc, "test_stop")["status"] == "completed"

    curve = losses(svc, "test_stop")
    assert sorted(curve) == list(range(1, 41))  # no step repeated, none missing: no restart from 0
    for step in range(1, 41):
        assert curve[step] == pytest.approx(reference[step], rel=1e-3, abs=1e-4), step


def test_a_killed_worker_fails_with_a_reason_and_resumes_from_its_checkpoint(svc):
    start(svc, experiment_name="killed", max_steps=60, save_every=5)
    status = wait_for(svc, "killed", until={"running"}, step_at_least=12)
    os.kill(status["pid"], signal.SIGKILL)

    killed_at = time.monotonic()
    failed = wait_for(svc, "killed", timeout=20)
    assert time.monotonic() - killed_at < 10
    assert failed["status"] == "failed"
    assert "signal 9" in failed["error"]["message"]

    svc.post("/train/killed/resume")
    assert wait_for(svc, "killed")["status"] == "completed"
    steps = [s["step"] for s in svc.get("/train/killed/metrics").json()["steps"]]
    assert steps == list(range(1, 61))
    events = svc.get("/train/killed/events").text
    assert "resuming from step" in events and "resuming from step 0" not in events


def test_events_stream_progress_and_replay_from_last_event_id(svc):
    response = svc.get("/train/loss_falls/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.strip().split("\n\n")]
    ids = [int(line[4:]) for block in events for line in block.splitlines() if line.startswith("id: ")]
    assert ids == sorted(ids) and len(ids) > 30
    kinds = {line[7:] for block in events for line in block.splitlines() if line.startswith("event: ")}
    assert {"state", "message", "metrics"} <= kinds
    later = svc.get("/train/loss_falls/events", headers={"Last-Event-ID": str(ids[-5])}).text
    assert [int(line[4:]) for line in later.splitlines() if line.startswith("id: ")] == ids[-4:]


def test_the_api_answers_while_a_job_trains(svc):
    start(svc, experiment_name="responsive", max_steps=400)
    wait_for(svc, "responsive", until={"running"}, step_at_least=2)
    for _ in range(3):
        started = time.monotonic()
        assert svc.get("/status").status_code == 200
        assert svc.post("/generate", json={"prompt": "Hello", "max_tokens": 5}).status_code == 200
        assert time.monotonic() - started < 5
    status = svc.get("/status").json()
    assert "memory_usage" in status and status["training_jobs"]["running"] == 1
    assert status["training_jobs"]["active"][0]["experiment_name"] == "responsive"
    svc.post("/train/responsive/stop")


def test_training_with_different_providers(svc):
    config = {"experiment_name": "provider_integration_test", "training_type": "sft", "dataset": "alpaca",
              "model_name": MODEL, "max_steps": 2, "eval_steps": 1, "eval_provider": "local_mlx"}
    assert svc.post("/train/start", json=config).status_code == 200
    done = wait_for(svc, "provider_integration_test")
    assert done["status"] == "completed", done["error"]
    events = svc.get("/train/provider_integration_test/events").text
    assert "judged by local_mlx" in events


def test_what_was_trained_can_be_served_and_fused(svc):
    ask = {"messages": [{"role": "user", "content": "Add the two numbers.\n\n12 and 30"}],
           "max_tokens": 12, "temperature": 0}
    base = svc.post("/generate", json=ask).json()
    tuned = svc.post("/generate", json=ask | {"model": "loss_falls"})
    assert tuned.status_code == 200, tuned.text
    assert tuned.json()["model"] == "loss_falls"
    assert tuned.json()["generated_text"] != base["generated_text"]  # the adapter changed the answers
    loaded = svc.get("/providers").json()["local_mlx"]["loaded_models"]
    assert any(m["name"] == "loss_falls" and m["adapter_path"] for m in loaded)

    fused = svc.post("/train/loss_falls/fuse")
    assert fused.status_code == 200, fused.text
    folder = fused.json()["path"]
    model, tokenizer = mlx_lm.load(folder)  # a plain model folder now
    assert model.layers[0].self_attn.q_proj.__class__.__name__ == "Linear"
    same = svc.post("/generate", json=ask | {"model": folder}).json()
    assert same["generated_text"] == tuned.json()["generated_text"]


def test_an_adapter_folder_copied_elsewhere_is_served_by_its_path(svc):
    ask = {"messages": [{"role": "user", "content": "Add the two numbers.\n\n12 and 30"}],
           "max_tokens": 12, "temperature": 0}
    tuned = svc.post("/generate", json=ask | {"model": "loss_falls"}).json()
    copy = shutil.copytree(svc.get("/train/loss_falls/status").json()["adapter_path"], svc.home / "shared-adapter")
    served = svc.post("/generate", json=ask | {"model": str(copy)})
    assert served.status_code == 200, served.text
    assert served.json()["generated_text"] == tuned["generated_text"]
    assert served.json()["model_path"].endswith("/tiny")  # the base its adapter_config.json names


def test_a_job_reports_how_it_computes_and_its_useful_and_raw_throughput(svc):
    start(svc, experiment_name="packed_qlora", training_type="qlora", quantization="int8", packing=True,
          max_seq_length=256, batch_size=1, max_steps=4, memory_limit_mb=4096, cache_limit_mb=64)
    done = wait_for(svc, "packed_qlora")
    assert done["status"] == "completed", done["error"]
    assert done["policy"]["compute_dtype"] == "float32"
    assert done["policy"]["quantized_products"] == "dequantize-to-fp32"
    assert done["policy"]["memory_limit_mb"] == 4096 and done["policy"]["cache_limit_mb"] == 64
    # The CPU kernels were measured on this machine, and the figures they were chosen on are shown.
    measured = done["policy"]["calibration"]
    assert set(measured["timings_ms"]) == {"block", "loss"}  # the cache limit was forced: not measured
    block = measured["timings_ms"]["block"]
    assert ("swiglu" in done["policy"]["fast_kernels"]) == (block["swiglu"] < block["mlx"])
    assert done["policy"]["blas_core"] and measured["blas"]["choice"] in measured["blas"]["gflops"]
    assert 0 < done["useful_tokens_per_s"] <= done["raw_tokens_per_s"]
    steps = svc.get("/train/packed_qlora/metrics").json()["steps"]
    assert all(row["useful_tokens_per_s"] and row["peak_memory_mb"] for row in steps)
    events = svc.get("/train/packed_qlora/events").text  # the stream ends with the job
    assert "quantized layers multiply through BLAS" in events


def test_training_resource_usage(svc):
    start(svc, experiment_name="resource_test", training_type="sft", batch_size=1, max_steps=3)
    time.sleep(2)
    status = svc.get("/status").json()
    assert "memory_usage" in status
    assert "training_jobs" in status
    done = wait_for(svc, "resource_test")
    assert 0 < done["peak_memory_mb"] < 16 * 1024
