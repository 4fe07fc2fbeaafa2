"""Data-parallel training over `mx.distributed`: every rank holds the whole model, takes its share of
each global batch, and the ranks sum their gradients weighted by trained tokens, so a step equals one
process's step at the same global batch (docs/architecture.md, "Distributed training").

The ranks are started by MLX's own launcher, `mlx.launch`, which gives each its `MLX_RANK` and, for
the ring backend, `MLX_HOSTFILE`; nothing here opens a socket of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx._distributed_utils.common import Hostfile
from mlx.utils import tree_map

from workbench.errors import InputError
from workbench.training import hosts

STOP_FILE = "stop-request"  # in the run folder: why the ranks should stop (manager.py writes it)
KERNELS = ("loss", "swiglu", "attention")  # the fast kernels a rank may run: all ranks run rank 0's


def available() -> list[str]:
    return [name for name in ("ring", "jaccl", "mpi", "nccl") if mx.distributed.is_available(name)]


def visible_gpus() -> int:
    """CUDA devices this machine lets its processes see (0 without CUDA)."""
    if not mx.cuda.is_available():
        return 0
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        return len([d for d in chosen.split(",") if d.strip()])
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return max(sum(line.startswith("GPU ") for line in listed.splitlines()), 1)


# NVLink multicast (NVLS) off in every rank of an NCCL job, unless the environment says otherwise: a
# program that uses it can put a shared host's GPUs out of service (docs/architecture.md,
# "Distributed training").
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}


def check(config, home: Path) -> Hostfile:
    """What a data-parallel job needs before any process starts: ranks that share each batch evenly,
    a backend this MLX has, and hosts that can run them (InputError naming the field otherwise).
    Answers the hosts, one a rank, as mlx.launch's Hostfile, with the backend resolved and the
    environment the ranks need: the job keeps it (hosts.save), and its ranks read it."""
    if config.batch_size % config.num_workers:
        raise InputError("batch_size", f"batch_size ({config.batch_size}) must divide by num_workers "
                         f"({config.num_workers}): it is the global batch, shared evenly by the ranks")
    found = hosts.resolve(config, home)
    found.backend = _backend(config.distributed_backend, hosts.per_host(found))
    if found.backend == "ring":
        hosts.require_ips(found)
    hosts.split_cores(found, hosts.check(found, home))
    if found.backend == "nccl":
        found.envs += [f"{name}={value}" for name, value in MULTICAST_OFF.items() if name not in os.environ]
    return found


def _backend(name: str, per_host: int) -> str:
    """`auto`: NCCL where every rank of a host has a GPU of its own (mlx.launch gives each its own
    device), else the ring (TCP). NCCL asked for with fewer GPUs than ranks is refused: the extra
    ranks would see no device."""
    if name != "auto" and not mx.distributed.is_available(name):
        raise InputError("distributed_backend", f"{name} is not available in this MLX build "
                         f"(available: {', '.join(available()) or 'none'})")
    gpus = visible_gpus()
    if name == "auto":
        return "nccl" if gpus and per_host <= gpus and mx.distributed.is_available("nccl") else "ring"
    if name == "nccl" and per_host > gpus:
        raise InputError("distributed_backend", f"nccl runs one rank a GPU, and this machine shows {gpus} "
                         f"for {per_host} ranks a host: use ring, or fewer num_workers")
    return name


class Ranks:
    """This process's place among the job's ranks; a world of one does no communication at all."""

    def __init__(self, group=None):
        self.group = group
        self.rank = group.rank() if group is not None else 0
        self.size = group.size() if group is not None else 1

    @classmethod
    def join(cls, backend: str | None, world: int) -> Ranks:
        """The group of a job of `world` ranks (started by mlx.launch), or a world of one."""
        if world <= 1:
            return cls()
        group = mx.distributed.init(strict=True, backend=backend)
        if group.size() != world:
            raise RuntimeError(f"mlx.launch started {group.size()} ranks where the job asked for {world}")
        return cls(group)

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes the store, checkpoints and adapters."""
        return self.rank == 0

    def total(self, values: mx.array) -> mx.array:
        """`values` summed over the ranks."""
        return values if self.size == 1 else mx.distributed.all_sum(values, group=self.group)

    def any(self, flag: bool) -> bool:
        """Whether any rank says yes: every rank gets the same answer at the same step."""
        if self.size == 1:
            return flag
        return bool(self.total(mx.array([1.0 if flag else 0.0])).item() > 0)

    def describe(self, placed: Hostfile | None) -> dict | None:
        """What the job's status shows of its ranks: backend, world size, hosts, each rank's host and
        pid (one all-reduce: every rank contributes its own)."""
        if self.size == 1:
            return None
        pids = [0] * self.size
        pids[self.rank] = os.getpid()
        everyone = self.total(mx.array(pids, dtype=mx.int32)).tolist()
        where = [h.ssh_hostname for h in placed.hosts]
        return {"backend": placed.backend, "world_size": self.size, "hosts": list(dict.fromkeys(where)),
                "ranks": [{"rank": rank, "host": host, "pid": pid}
                          for rank, (host, pid) in enumerate(zip(where, everyone))]}

    def lead_kernels(self, kernels: tuple[str, ...]) -> tuple[str, ...]:
        """Rank 0's fast kernels on every rank: each rank's calibration may measure differently, and
        ranks that computed with different kernels would not hold the same weights."""
        if self.size == 1:
            return kernels
        mine = [1.0 if name in kernels and self.lead else 0.0 for name in KERNELS]
        chosen = self.total(mx.array(mine)).tolist()
        return tuple(name for name, on in zip(KERNELS, chosen) if on > 0)

    def weighted_gradients(self, grads, tokens: mx.array):
        """The mean gradient over every rank's trained tokens, from this rank's mean gradient over
        its own `tokens`: sum(g_r * n_r) / sum(n_r), in mlx-lm's batched all-reduce."""
        if self.size == 1:
            return grads
        everyone = self.total(tokens.astype(mx.float32))
        scale = tokens.astype(mx.float32) * self.size / everyone
        return nn.average_gradients(tree_map(lambda g: g * scale, grads), group=self.group)

    def mean_loss(self, loss: mx.array, tokens: mx.array) -> tuple[mx.array, mx.array]:
        """The loss over every rank's tokens, and their number."""
        if self.size == 1:
            return loss, tokens
        both = self.total(mx.stack([loss * tokens, tokens.astype(mx.float32)]))
        return both[0] / both[1], both[1]


def request_stop(run_dir: Path, reason: str | None) -> None:
    """Ask a data-parallel job's ranks to stop (`stopped`, `interrupted`), or withdraw the request."""
    path = run_dir / STOP_FILE
    if reason is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(reason)


def stop_requested(run_dir: Path) -> str | None:
    try:
        return (run_dir / STOP_FILE).read_text().strip() or "stopped"
    except OSError:
        return None


def settle_blas_core(home: Path) -> None:
    """Measure OpenBLAS's fastest core type on this machine (once; cached in the home) before the
    ranks start, as a single worker measures it at its start: ranks that each measured it reached
    the ring's rendezvous seconds apart, and on a busy machine past MLX's connect retries (about
    30 s), which failed the job."""
    from workbench.training.policy import current_backend

    if "WORKBENCH_BLAS_CORETYPE" not in os.environ and current_backend() == "cpu":
        from workbench.training.calibration import blas_core

        blas_core(home)


def calm_launcher(pid: int, ranks: int) -> bool:
    """mlx.launch's threads poll its ranks' pipes with a select that never waits (a rank's stdin is
    always writable), so the launcher spins most of a core for the whole job: on a small CPU, a
    rank's share (bench/RESULTS.md, "Data-parallel jobs"). Once it has started all its ranks (which
    would have inherited the policy), its threads go under SCHED_IDLE: they then run only on a core
    nothing else wants. Linux only. Answers whether there is nothing more to do."""
    if not hasattr(os, "SCHED_IDLE"):
        return True
    import psutil

    try:
        launcher = psutil.Process(pid)
        if len(launcher.children()) < ranks:
            return False
        for thread in launcher.threads():
            os.sched_setscheduler(thread.id, os.SCHED_IDLE, os.sched_param(0))
    except (psutil.Error, OSError):  # it ended, or is not ours to change
        pass
    return True


def launcher() -> str:
    """mlx.launch beside this Python (the environment the workbench runs in), else on PATH."""
    here = Path(sys.executable).with_name("mlx.launch")
    found = str(here) if here.exists() else shutil.which("mlx.launch")
    if found is None:
        raise RuntimeError("mlx.launch is not installed beside this Python: reinstall mlx")
    return found


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports free on this host now (the ring listens on them)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count < 65536 and all(_free(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def launch_command(job_id: str, hostfile: Path) -> list[str]:
    """The command that starts a job's worker ranks under mlx.launch, on the hosts and backend its
    hostfile holds (hosts.save). `-n` is still given: under NCCL, mlx.launch picks each rank's GPU
    from it."""
    placed = Hostfile.from_file(hostfile)
    command = [launcher(), "--backend", placed.backend, "--hostfile", str(hostfile),
               "-n", str(hosts.per_host(placed))]
    if placed.backend == "ring":
        command += ["--starting-port", str(free_ports(len(placed.hosts)))]
    elif placed.backend == "nccl":  # its default port would be shared by every job at once
        command += ["--nccl-port", str(free_ports(1))]
    return command + ["--", sys.executable, "-m", "workbench.training.worker", job_id]
