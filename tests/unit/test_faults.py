"""The fault suite, worker side: a training worker killed with SIGKILL at exact places of a run
(mid-step, inside a checkpoint write, right after an evaluation, across epoch boundaries), then
resumed, ends with every loss (train and eval) equal to an uninterrupted run's.

The kills come from the `WORKBENCH_FAULT` test hook (workbench/training/faults.py), so each lands at
a known step. One job is killed three times in a row and resumed after each kill: fewer worker
start-ups than one job per fault, and each resume starts from a different kind of checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from workbench.models.resolver import ModelResolver
from workbench.training.config import TrainingConfig
from workbench.training.manager import JobManager
from workbench.training.store import JobStore

SAMPLE = Path(__file__).parents[2] / "workbench" / "data" / "samples" / "alpaca.jsonl"

# 40 rows, 8 held out: 32 training rows in batches of 4 make 8 steps an epoch (boundaries at 8, 16,
# 24). Validation draws 4 of the 8 held-out rows each time; dropout draws from mx.random.
RUN = {"training_type": "lora", "dataset": "alpaca", "dataset_path": "faults.jsonl", "validation_split": 0.2,
       "batch_size": 4, "max_seq_length": 128, "max_steps": 24, "learning_rate": 1e-3, "lora_dropout": 0.1,
       "eval_steps": 3, "eval_batches": 1, "save_every": 4, "seed": 11}
BEST = ("best_step", "best_eval_loss")


@pytest.fixture
def jobs(settings):
    datasets = settings.home_dir / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    rows = SAMPLE.read_text().splitlines()[:40]
    (datasets / "faults.jsonl").write_text("\n".join(rows) + "\n")
    store = JobStore(settings.home_dir / "workbench.db")
    manager = JobManager(settings, ModelResolver(settings), store, manage=False)
    yield manager
    store.close()


def run_worker(manager: JobManager, job_id: str, fault: str | None = None) -> int:
    env = os.environ | manager.settings.as_env()
    env.pop("WORKBENCH_FAULT", None)
    if fault:
        env["WORKBENCH_FAULT"] = fault
    worker = subprocess.run([sys.executable, "-m", "workbench.training.worker", job_id], env=env,
                            capture_output=True, text=True, timeout=300)
    return worker.returncode


def curve(store: JobStore, job_id: str) -> dict[int, tuple]:
    return {row["step"]: (row["loss"], row["eval_loss"]) for row in store.metrics(job_id)}


def test_a_worker_killed_anywhere_resumes_on_exactly_the_uninterrupted_curve(jobs):
    reference_job = jobs.start(TrainingConfig(experiment_name="reference", **RUN), launch=False)
    assert run_worker(jobs, reference_job["job_id"]) == 0
    reference = curve(jobs.store, reference_job["job_id"])
    assert sorted(reference) == list(range(1, 25))
    assert [s for s, (_, e) in reference.items() if e is not None] == [3, 6, 9, 12, 15, 18, 21, 24]

    job = jobs.start(TrainingConfig(experiment_name="killed", **RUN), launch=False)
    faults = [
        ("step:10", 8),  # mid-step, two steps past the checkpoint at the first epoch boundary
        ("checkpoint:16", 12),  # inside the write of step 16's checkpoint: step 12's stays in force
        ("after_eval:21", 20),  # right after an evaluation, mid-epoch
    ]
    for fault, checkpoint_step in faults:
        assert run_worker(jobs, job["job_id"], fault) == -9, fault
        latest = json.loads((Path(job["run_dir"]) / "checkpoints" / "latest.json").read_text())
        assert latest["step"] == checkpoint_step, fault
        jobs._recover()  # as a service does at start: a job whose worker is gone is interrupted
        jobs.resume("killed", launch=False)
    assert run_worker(jobs, job["job_id"]) == 0
    assert jobs.store.get(job["job_id"])["status"] == "completed"

    resumed_from = [e["message"] for e in jobs.store.events(job["job_id"]) if "resuming from" in e["message"]]
    assert resumed_from == [f"resuming from step {step}" for _, step in faults]
    resumed = curve(jobs.store, job["job_id"])
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], f"step {step}: {resumed[step]} against {reference[step]}"
    # ... and publishes the same best weights.
    done, expected = jobs.store.get(job["job_id"]), jobs.store.get(reference_job["job_id"])
    assert [done[k] for k in BEST] == [expected[k] for k in BEST] and done["selected_checkpoint"] == "best"
    adapter, same = (mx.load(str(Path(j["adapter_path"]) / "adapters.safetensors")) for j in (done, expected))
    assert all(mx.array_equal(adapter[k], same[k]) for k in same)


def test_the_data_order_continues_exactly_from_a_saved_position():
    from workbench.training.batching import DataOrder

    rows = [(list(range(i, i + 3 + i % 7)), 1) for i in range(22)]  # 5 batches of 4 an epoch
    whole = DataOrder(rows, 4, 64, seed=5)
    first = [next(whole).arrays[0].tolist() for _ in range(13)]  # past two epoch boundaries
    part = DataOrder(rows, 4, 64, seed=5)
    part.skip(7)
    again = DataOrder(rows, 4, 64, seed=5, position=part.position())
    assert [next(again).arrays[0].tolist() for _ in range(6)] == first[7:]
    other_seed = DataOrder(rows, 4, 64, seed=6)
    assert [next(other_seed).arrays[0].tolist() for _ in range(5)] != first[:5]
