"""Data-parallel training: two ranks under mlx.launch (ring backend, on this machine) train the same
curve as one process at the same global batch, and impossible combinations are refused before any
process starts."""

from __future__ import annotations

import os
import signal
import time

import mlx.core as mx
import psutil
import pytest

from workbench.core import Workbench
from workbench.errors import InputError
from workbench.training.config import TrainingConfig

RUN = {"model_name": "tiny", "training_type": "lora", "dataset": "alpaca", "batch_size": 4, "max_steps": 6,
       "learning_rate": 1e-3, "eval_steps": 3, "eval_batches": 1, "seed": 3}


@pytest.fixture
def bench(settings):
    made = Workbench(settings)
    yield made
    made.close()


def curve(bench: Workbench, name: str) -> list[tuple]:
    return [(s.step, s.loss, s.eval_loss) for s in bench.metrics(name).steps]


def test_two_ranks_stopped_and_resumed_train_the_curve_of_one_process(bench):
    run = RUN | {"max_steps": 10, "eval_steps": 5, "save_every": 100}
    bench.start_training(TrainingConfig(experiment_name="one-rank", **run))
    one = bench.wait("one-rank", timeout_s=300)
    assert one.status == "completed", one.error

    bench.start_training(TrainingConfig(experiment_name="two-ranks", num_workers=2, distributed_backend="ring",
                                        **run))
    rank_pid(bench, "two-ranks", rank=1, at_step=3)
    stopped = bench.stop_training("two-ranks")
    assert stopped.state == "stopped" and 3 <= stopped.current_step < 10 and stopped.checkpoint
    assert not ranks_left(bench, "two-ranks", within_s=15)  # every rank ended, and the launcher
    bench.resume_training("two-ranks")
    two = bench.wait("two-ranks", timeout_s=300)
    assert two.status == "completed", two.error

    single, shared = curve(bench, "one-rank"), curve(bench, "two-ranks")
    assert [s[0] for s in shared] == [s[0] for s in single] == list(range(1, 11))
    gaps = [abs(a - b) for s, d in zip(single, shared) for a, b in zip(s[1:], d[1:]) if a is not None]
    assert len(gaps) == 12 and max(gaps) < 1e-4, (single, shared)  # 10 train and 2 validation losses
    assert two.adapter_path and two.tokens_per_s > 0
    assert two.distributed["world_size"] == 2 and len(two.distributed["ranks"]) == 2
    assert "2 ranks over ring" in [e.message for e in bench.events("two-ranks").events]


def test_impossible_combinations_are_refused_before_any_process_starts(bench):
    with pytest.raises(InputError, match=r"batch_size \(5\) must divide by num_workers \(2\)") as error:
        bench.start_training(TrainingConfig(experiment_name="odd", num_workers=2, **RUN | {"batch_size": 5}))
    assert error.value.field == "batch_size"
    missing = next(name for name in ("mpi", "jaccl", "nccl") if not mx.distributed.is_available(name))
    with pytest.raises(InputError, match=f"{missing} is not available") as error:
        bench.start_training(TrainingConfig(experiment_name="other", num_workers=2, distributed_backend=missing,
                                            **RUN))
    assert error.value.field == "distributed_backend"
    assert bench.list_jobs() == []


def test_a_rank_killed_or_frozen_fails_the_job_naming_it_and_the_job_resumes(bench):
    run = RUN | {"max_steps": 12, "save_every": 2, "eval_steps": 100, "num_workers": 2,
                 "distributed_timeout_s": 5}
    bench.start_training(TrainingConfig(experiment_name="lost-rank", **run))

    # Killed: mlx.launch reports the rank, rank 0 loses its peer; nothing is left running.
    rank_1 = rank_pid(bench, "lost-rank", rank=1, at_step=3)
    os.kill(rank_1, signal.SIGKILL)
    assert bench.wait("lost-rank", timeout_s=60).status == "failed"
    assert not ranks_left(bench, "lost-rank", within_s=15)
    assert "rank 1 exited with code -9" in error_with_ranks(bench, "lost-rank")["message"]
    bench.resume_training("lost-rank")

    # Frozen: no step within distributed_timeout_s; the watchdog names it and kills every rank.
    frozen = rank_pid(bench, "lost-rank", rank=1, at_step=7)
    os.kill(frozen, signal.SIGSTOP)
    assert bench.wait("lost-rank", timeout_s=60).status == "failed"
    error = error_with_ranks(bench, "lost-rank")
    assert error["code"] == "rank_hung" and "rank 1 is stopped" in error["message"], error
    assert not ranks_left(bench, "lost-rank", within_s=15)

    bench.resume_training("lost-rank")
    assert bench.wait("lost-rank", timeout_s=300).status == "completed"
    resumed = [int(e.message.split()[-1]) for e in bench.events("lost-rank").events
               if e.message.startswith("resuming from")]
    assert len(resumed) == 2 and all(step % 2 == 0 and step >= 2 for step in resumed)  # last checkpoints
    assert [s.step for s in bench.metrics("lost-rank").steps] == list(range(1, 13))


def rank_pid(bench: Workbench, name: str, rank: int, at_step: int) -> int:
    """The pid of a rank of the job, once the job has done `at_step` steps."""
    deadline = time.monotonic() + 300
    while (status := bench.job_status(name)).current_step < at_step or status.phase != "training":
        assert status.status in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.1)
    return next(r["pid"] for r in status.distributed["ranks"] if r["rank"] == rank)


def error_with_ranks(bench: Workbench, name: str) -> dict:
    """The job's error once the job manager has added which ranks ended (it reads mlx.launch's report
    when the launcher exits)."""
    deadline = time.monotonic() + 15
    while not (error := bench.job_status(name).error or {}).get("ranks") and time.monotonic() < deadline:
        time.sleep(0.2)
    return error


def ranks_left(bench: Workbench, name: str, within_s: float) -> list[int]:
    """The job's processes (launcher and ranks, found by their command line) still alive after
    `within_s` seconds of letting them exit."""
    job_id = bench.job_status(name).job_id
    deadline = time.monotonic() + within_s
    while True:
        left = [p.pid for p in psutil.process_iter(["cmdline", "status"])
                if p.info["status"] != psutil.STATUS_ZOMBIE and job_id in (p.info["cmdline"] or [])]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)
