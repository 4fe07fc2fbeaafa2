"""The fault suite, service side: a service killed with SIGKILL mid-run and a worker killed with
SIGKILL, then resumed, give exactly the uninterrupted run's losses; a disk that fills up mid-run
fails the job naming the cause and the file, keeps the previous checkpoint, degrades /health,
refuses new jobs, and the job resumes once there is room.

The disk test mounts a small tmpfs (CI runs as root). Where mount is not permitted it fails, saying so,
rather than skipping: a skipped disk-full test would hide exactly the failure it is there to catch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import psutil

from tests.api.conftest import MODEL, run_service, start, wait_for
from tests.unit.test_faults import RUN, SAMPLE


def curve(svc, name) -> dict[int, tuple]:
    return {row["step"]: (row["loss"], row["eval_loss"]) for row in svc.get(f"/train/{name}/metrics").json()["steps"]}


def service_pid(svc) -> int:
    port = int(svc.url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    raise AssertionError("no process listens on the service's port")


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.1)


def test_a_killed_service_and_a_killed_worker_resume_on_exactly_the_uninterrupted_curve(tmp_path, models_dir):
    home = tmp_path / "home"
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / "faults.jsonl").write_text("\n".join(SAMPLE.read_text().splitlines()[:40]) + "\n")
    with run_service(home, models_dir) as first:
        start(first, experiment_name="reference", **RUN)
        assert wait_for(first, "reference")["status"] == "completed"
        reference = curve(first, "reference")

        start(first, experiment_name="victim", **RUN)
        worker = wait_for(first, "victim", until={"running"}, step_at_least=6)["pid"]
        os.kill(worker, signal.SIGSTOP)  # hold it mid-run while its service dies
        os.kill(service_pid(first), signal.SIGKILL)
        os.kill(worker, signal.SIGCONT)
        wait_gone(worker)  # it saw its service gone, checkpointed and ended
    with run_service(home, models_dir) as again:
        status = again.get("/train/victim/status").json()
        assert status["status"] == "interrupted" and 6 <= status["current_step"] < 24
        assert "victim" in [job["experiment_name"] for job in again.get("/train/jobs").json()]
        assert again.post("/train/victim/resume").status_code == 200
        worker = wait_for(again, "victim", until={"running"}, step_at_least=status["current_step"] + 5)["pid"]
        os.kill(worker, signal.SIGKILL)
        assert wait_for(again, "victim", timeout=30)["status"] == "failed"
        assert again.post("/train/victim/resume").status_code == 200
        assert wait_for(again, "victim")["status"] == "completed"
        resumed = curve(again, "victim")
        events = again.get("/train/victim/events").text
    assert events.count("resuming from step") == 2
    assert sorted(resumed) == sorted(reference) == list(range(1, 25))
    for step in reference:
        assert resumed[step] == reference[step], f"step {step}: {resumed[step]} against {reference[step]}"


@contextmanager
def small_disk(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, (
        f"the disk-full test mounts a {size} tmpfs at {path} and needs root (CI runs as root); "
        f"mount said: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_fails_the_job_by_name_keeps_its_checkpoint_and_refuses_new_jobs(tmp_path, models_dir):
    home = tmp_path / "home"
    with small_disk(home / "runs", "16m") as runs, run_service(home, models_dir) as svc:
        config = {"training_type": "lora", "dataset": "alpaca", "batch_size": 2, "max_seq_length": 64,
                  "max_steps": 60, "save_every": 5}
        start(svc, experiment_name="filling", **config)
        worker = wait_for(svc, "filling", until={"running"}, step_at_least=6)["pid"]
        os.kill(worker, signal.SIGSTOP)  # the disk fills while it trains: its next checkpoint finds no room
        filler = fill(runs)
        os.kill(worker, signal.SIGCONT)

        failed = wait_for(svc, "filling")
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "disk_full"
        message = failed["error"]["message"]
        assert message.startswith("No space left on device writing ") and str(runs) in message

        checkpoints = Path(failed["checkpoint"]).parent  # the last checkpoint written, intact
        latest = json.loads((checkpoints / "latest.json").read_text())
        assert Path(failed["checkpoint"]).name == latest["path"] and latest["step"] % 5 == 0
        assert not list(checkpoints.glob(".*.tmp"))  # the partial write was removed
        assert mx.load(str(checkpoints / latest["path"] / "optimizer.safetensors"))

        health = svc.get("/health").json()
        assert health["status"] == "degraded"
        disk = next(d for d in health["disk"] if d["path"] == str(runs))
        assert disk["nearly_full"] and disk["free_mb"] < 1 and disk["total_mb"] == 16
        assert any("nearly full" in problem for problem in health["problems"])

        refused = svc.post("/train/start", json={"experiment_name": "no_room", "model_name": MODEL, **config})
        assert refused.status_code == 507, refused.text
        assert "No space left for a checkpoint" in refused.json()["detail"][0]["msg"]
        assert svc.post("/train/filling/resume").status_code == 507

        filler.unlink()
        assert not next(d for d in svc.get("/health").json()["disk"] if d["path"] == str(runs))["nearly_full"]
        assert svc.post("/train/filling/resume").status_code == 200
        assert wait_for(svc, "filling")["status"] == "completed"
        steps = [row["step"] for row in svc.get("/train/filling/metrics").json()["steps"]]
        assert steps == list(range(1, 61))
        assert f"resuming from step {latest['step']}" in svc.get("/train/filling/events").text
