"""Data-parallel training: two ranks under mlx.launch (ring backend) train the same curve as one
process at the same global batch, on this machine and across two hosts joined by a network (network
namespaces the test makes, reached as mlx.launch reaches a host: by ssh); impossible combinations
and hosts that cannot run a rank are refused before any process starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import mlx.core as mx
import psutil
import pytest

from workbench.core import Workbench
from workbench.errors import InputError
from workbench.settings import Settings
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


CURVE_RUN = RUN | {"max_steps": 10, "eval_steps": 5, "save_every": 100}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, models_dir) -> list[tuple]:
    """The curve one process trains: 10 training and 2 validation losses."""
    bench = Workbench(Settings(home=tmp_path_factory.mktemp("one"), models_path=models_dir, hub_downloads=False))
    try:
        bench.start_training(TrainingConfig(experiment_name="one-rank", **CURVE_RUN))
        assert (done := bench.wait("one-rank", timeout_s=300)).status == "completed", done.error
        return curve(bench, "one-rank")
    finally:
        bench.close()


def same_curve(single: list[tuple], shared: list[tuple]) -> None:
    assert [s[0] for s in shared] == [s[0] for s in single] == list(range(1, 11))
    gaps = [abs(a - b) for s, d in zip(single, shared) for a, b in zip(s[1:], d[1:]) if a is not None]
    assert len(gaps) == 12 and max(gaps) < 1e-4, (single, shared)  # 10 train and 2 validation losses


def test_two_ranks_stopped_and_resumed_train_the_curve_of_one_process(bench, one_process):
    bench.start_training(TrainingConfig(experiment_name="two-ranks", num_workers=2, distributed_backend="ring",
                                        **CURVE_RUN))
    rank_pid(bench, "two-ranks", rank=1, at_step=3)
    stopped = bench.stop_training("two-ranks")
    assert stopped.state == "stopped" and 3 <= stopped.current_step < 10 and stopped.checkpoint
    assert not ranks_left(bench, "two-ranks", within_s=15)  # every rank ended, and the launcher
    bench.resume_training("two-ranks")
    two = bench.wait("two-ranks", timeout_s=300)
    assert two.status == "completed", two.error

    same_curve(one_process, curve(bench, "two-ranks"))
    assert two.adapter_path and two.tokens_per_s > 0
    assert two.distributed["world_size"] == 2 and two.distributed["hosts"] == ["127.0.0.1"]
    assert [r["rank"] for r in two.distributed["ranks"]] == [0, 1]
    assert all(r["tokens_per_s"] > 0 for r in two.distributed["ranks"])  # each rank's own speed
    assert "2 ranks over ring" in [e.message for e in bench.events("two-ranks").events]


@pytest.fixture
def two_hosts(tmp_path, monkeypatch):
    """Two hosts on one network: network namespaces joined by a veth pair, 10.213.N.1 and .2, each
    reached by `ssh ADDRESS COMMAND` as mlx.launch reaches a host. There is no ssh server here: the
    `ssh` put first on PATH runs the command in that host's namespace with a login's bare
    environment, so the ranks get only what mlx.launch hands them."""
    tag, net = uuid.uuid4().hex[:6], 213
    names = {f"10.{net}.0.1": f"wb-{tag}-a", f"10.{net}.0.2": f"wb-{tag}-b"}
    (ns_a, ns_b) = names.values()
    commands = [f"ip netns add {ns_a}", f"ip netns add {ns_b}",
                f"ip link add wb{tag}a netns {ns_a} type veth peer name wb{tag}b netns {ns_b}"]
    for (address, ns), link in zip(names.items(), (f"wb{tag}a", f"wb{tag}b")):
        commands += [f"ip -n {ns} addr add {address}/24 dev {link}", f"ip -n {ns} link set {link} up",
                     f"ip -n {ns} link set lo up"]
    try:
        for command in commands:
            subprocess.run(command.split(), check=True, capture_output=True)
        shims = tmp_path / "bin"
        shims.mkdir()
        (shims / "ssh").write_text(SSH_INTO_NAMESPACE.format(
            cases="".join(f"  {address}) ns={ns};;\n" for address, ns in names.items())))
        (shims / "ssh").chmod(0o755)
        monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
        yield list(names)
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


SSH_INTO_NAMESPACE = """#!/bin/bash
while [[ $1 == -* ]]; do case $1 in -o|-p|-l|-i) shift 2;; *) shift;; esac; done
host=$1; shift
case $host in
{cases}  *) echo "ssh: connect to host $host port 22: No route to host" >&2; exit 255;;
esac
exec env -i PATH=/usr/bin:/bin HOME="$HOME" ip netns exec "$ns" bash -c "$*"
"""


def test_two_hosts_joined_by_a_network_train_the_curve_of_one_process(bench, one_process, two_hosts):
    bench.start_training(TrainingConfig(experiment_name="two-hosts", num_workers=2, hosts=two_hosts,
                                        **CURVE_RUN))
    done = bench.wait("two-hosts", timeout_s=300)
    assert done.status == "completed", done.error
    same_curve(one_process, curve(bench, "two-hosts"))
    assert done.distributed["hosts"] == two_hosts
    assert [(r["rank"], r["host"]) for r in done.distributed["ranks"]] == list(enumerate(two_hosts))


def test_hosts_that_cannot_run_a_rank_are_refused_naming_them(bench, settings, two_hosts):
    def refused(**fields) -> str:
        with pytest.raises(InputError) as error:
            bench.start_training(TrainingConfig(experiment_name="nowhere", **RUN | fields))
        assert error.value.field == "hosts"
        return error.value.message

    first, second = two_hosts
    assert "10.213.0.9 does not answer over ssh" in refused(num_workers=2, hosts=[first, "10.213.0.9"])
    assert "must divide by the 2 hosts" in refused(num_workers=3, batch_size=3, hosts=two_hosts)
    assert "127.0.0.1 cannot be reached" in refused(num_workers=2, hosts=["127.0.0.1", second])
    assert "no hostfile lab.json" in refused(num_workers=2, hosts="lab.json")

    # A hostfile in mlx.launch's format whose second host's ring address is on no network of the first.
    (settings.home_dir / "hosts").mkdir(parents=True, exist_ok=True)
    (settings.home_dir / "hosts" / "lab.json").write_text(json.dumps(
        [{"ssh": first, "ips": [first]}, {"ssh": second, "ips": ["10.99.0.2"]}]))
    assert f"{first} has no route to 10.99.0.2" in refused(num_workers=2, hosts="lab.json")
    assert bench.list_jobs() == []


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


def test_the_ranks_of_an_nccl_job_run_with_nvlink_multicast_off(settings, monkeypatch):
    from workbench.training import distributed

    monkeypatch.setattr(distributed, "_backend", lambda name, per_host: "nccl")  # as on a 2-GPU host
    config = TrainingConfig(experiment_name="gpus", training_type="lora", dataset="alpaca", num_workers=2,
                            batch_size=2)
    envs = distributed.check(config, settings.home_dir).envs
    assert {"NCCL_NVLS_ENABLE=0", "TORCH_SYMM_MEM_DISABLE_MULTICAST=1", "NVSHMEM_DISABLE_NVLS=1"} <= set(envs)
