"""The job manager: validates and queues jobs, runs each in its own worker process, watches them.

More jobs than `job_concurrency` wait `queued`. A worker that dies without saying how it ended is
found here and its job marked `failed` with the reason. At start, jobs a previous service left
`running` are marked `interrupted`; any stopped, failed or interrupted job can be resumed from its
last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from workbench.data import prepare
from workbench.errors import InputError
from workbench.models.resolver import ModelNotFound, ModelResolver
from workbench.settings import Settings
from workbench.training import space
from workbench.training.config import TrainingConfig
from workbench.training.record import ACTIVE, RESUMABLE
from workbench.training.store import JobStore

log = logging.getLogger(__name__)

class JobManager:
    def __init__(self, settings: Settings, resolver: ModelResolver, store: JobStore, manage: bool = True,
                 provider_configured: Callable[[str], bool] | None = None):
        self.settings = settings
        self.resolver = resolver
        self.store = store
        # Whether an eval_provider can answer; without a router (the command line) only local_mlx can.
        self.provider_configured = provider_configured or (lambda name: name == "local_mlx")
        self._workers: dict[str, subprocess.Popen] = {}
        self._stopping: set[str] = set()  # jobs asked to stop: a SIGTERM that ends one is a stop
        self._deaths: dict[str, dict] = {}  # the error of a dead worker whose job is not yet settled
        self._ranked: dict[str, int] = {}  # jobs whose worker is mlx.launch, with their ranks
        self._calmed: set[str] = set()  # those whose launcher no longer competes with its ranks
        self._lock = threading.RLock()
        self._closed = threading.Event()
        # Only the service manages workers; the command line runs its one job in its own process.
        self.manage = manage
        if manage:
            self._recover()
            threading.Thread(target=self._watch, name="job-watcher", daemon=True).start()

    # Requests -----------------------------------------------------------------------------------

    def start(self, config: TrainingConfig, launch: bool = True, request_id: str | None = None) -> dict:
        """Check everything a worker would trip on, then queue the job (and start it if there is room).
        With launch=False the job is marked running for the caller to run in its own process.
        A `request_id` seen before answers the job it started (a client's retry), never a second one."""
        if request_id is not None:
            with self._lock:
                earlier = self.store.by_request(request_id)
            if earlier is not None:
                return self._replayed(earlier, config, request_id)
        model_name = config.model_name or self.settings.default_model
        try:
            resolved = self.resolver.resolve(model_name)
        except ModelNotFound as exc:
            raise InputError("model_name", str(exc)) from None
        if config.eval_tasks:
            self._check_tasks(config.eval_tasks, "eval_tasks")
        if config.eval_provider and not self.provider_configured(config.eval_provider):
            raise InputError("eval_provider", f"{config.eval_provider} is not configured: POST "
                             "/providers/configure first, or use local_mlx")
        from workbench.training import optimizers, trackers

        optimizers.check(config)
        trackers.check(config.report_to)
        summary = (examples := prepare(config, self.settings)).summary  # kept with the job, for its worker
        config.check_format(summary.format)
        if config.batch_size > summary.train_rows:
            raise InputError("batch_size", f"{config.batch_size} exceeds the {summary.train_rows} training "
                             f"rows of {summary.source} (after validation_split {config.validation_split})")
        config.check_rows(summary.valid_rows)
        ranks_at = None
        if config.num_workers > 1:
            from workbench.training import distributed

            ranks_at = distributed.check(config, self.settings.home_dir)
        name = config.experiment_name
        space.require_room(self.run_root(name), space.checkpoint_bytes(resolved.path, config))
        with self._lock:
            if request_id is not None and (earlier := self.store.by_request(request_id)) is not None:
                return self._replayed(earlier, config, request_id)  # the same retry, sent twice at once
            current = self.store.latest(name)
            if current and current["status"] in ACTIVE:
                raise InputError("experiment_name", f"{name} is already {current['status']}", status=409)
            job = self.store.create(name, config.model_dump(), self.run_root(name), resolved.path,
                                    status="queued" if launch else "running", request_id=request_id)
            examples.save(Path(job["run_dir"]))
            if ranks_at is not None:
                from workbench.training import hosts

                hosts.save(ranks_at, Path(job["run_dir"]), self.settings.as_env())
            if launch:
                self._schedule()
        return self.store.get(job["job_id"])

    @staticmethod
    def _replayed(job: dict, config: TrainingConfig, request_id: str) -> dict:
        if json.loads(json.dumps(config.model_dump())) != job["config"]:
            raise InputError("request_id", f"{request_id!r} already started job {job['job_id']} with a "
                             "different configuration: send a new request_id for a new job", status=409)
        return job

    def stop(self, experiment_name: str, kind: str = "train") -> dict:
        job = self.job(experiment_name, kind)
        with self._lock:
            if job["status"] == "queued":
                self.store.set_status(job["job_id"], "stopped", "stopped before it started", phase="stopped")
            elif job["status"] == "running":
                worker = self._workers.get(job["job_id"])
                if worker is not None and worker.poll() is None:
                    self._stopping.add(job["job_id"])
                    self._ask_to_stop(job, worker, "stopped")  # it checkpoints, then marks itself stopped
                    self.store.event(job["job_id"], "message", "stop requested")
                else:
                    self.store.set_status(job["job_id"], "stopped", "stopped (no live worker)",
                                          phase="stopped")
            else:
                raise InputError("experiment_name" if kind == "train" else "name",
                                 f"{experiment_name} is {job['status']}; nothing to stop", status=409)
        return self.store.get(job["job_id"])

    def resume(self, experiment_name: str, launch: bool = True) -> dict:
        job = self.job(experiment_name)
        with self._lock:
            if job["status"] not in RESUMABLE:
                why = f"{experiment_name} is {job['status']}; only stopped, failed or interrupted jobs resume"
                raise InputError("experiment_name", why, status=409)
            try:
                config = TrainingConfig(**job["config"])
            except ValidationError as exc:  # a job stored before today's limits
                raise InputError("experiment_name", f"{experiment_name}'s stored config is no longer valid "
                                 f"({exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}); start a new job",
                                 status=409) from None
            space.require_room(Path(job["run_dir"]), space.checkpoint_bytes(job["model_path"], config))
            status = "queued" if launch else "running"
            self.store.update(job["job_id"], status=status, phase=status, resume=1, error=None,
                              finished_at=None, pid=None)
            self.store.event(job["job_id"], "state", "to resume from its last checkpoint",
                             data={"status": status})
            if launch:
                self._schedule()
        return self.store.get(job["job_id"])

    def _remote_model(self, config) -> str:
        """`provider:model` of an evaluation a remote provider answers (a 400 naming the provider when
        it is not configured)."""
        if not self.provider_configured(config.provider):
            raise InputError("provider", f"{config.provider} is not configured: POST /providers/configure "
                             "first")
        return f"{config.provider}:{config.model or 'its configured model'}"

    def _check_tasks(self, names: list[str], field: str) -> dict[str, str]:
        """lm-eval tasks that cannot be had here are an InputError naming `field`; else each task's
        output type."""
        from workbench.evaluation import tasks

        try:
            return tasks.check_tasks(names, tasks.task_manager(self.settings, names=names),
                              offline=tasks.offline_for(self.settings))
        except InputError as exc:
            raise InputError(field, exc.message) from None

    def job(self, experiment_name: str, kind: str = "train") -> dict:
        """The latest job of an experiment (or, of kind eval, of an evaluation)."""
        job = self.store.latest(experiment_name, kind)
        if job is None:
            if kind == "eval":
                raise InputError("name", f"no evaluation named {experiment_name}", status=404)
            raise InputError("experiment_name", f"no experiment named {experiment_name}", status=404)
        return job

    def start_eval(self, config, launch: bool = True) -> dict:
        """Check an evaluation's model and tasks, then queue it as a job of kind eval (the same queue,
        workers, store and events as training); launch=False leaves it to the caller to run."""
        from workbench.evaluation import tasks
        from workbench.evaluation.config import eval_root, remote

        if remote(config):
            model_path = self._remote_model(config)
        else:
            try:
                model_path = self.resolver.resolve(config.model or self.settings.default_model).path
            except ModelNotFound as exc:
                raise InputError("model", str(exc)) from None
        output_types = self._check_tasks(config.tasks, "tasks")
        if remote(config) and (scored := tasks.needing_scores(output_types)):
            raise InputError("tasks", f"{config.provider} answers text, not log-likelihoods: "
                             f"{', '.join(scored)} need them (evaluate those on a local model)")
        with self._lock:
            current = self.store.latest(config.name, "eval")
            if current and current["status"] in ACTIVE:
                raise InputError("name", f"{config.name} is already {current['status']}", status=409)
            job = self.store.create(config.name, config.model_dump(), eval_root(self.settings, config.name),
                                    model_path, status="queued" if launch else "running", kind="eval")
            if launch:
                self._schedule()
        return self.store.get(job["job_id"])

    def run_root(self, experiment_name: str) -> Path:
        return self.settings.home_dir / "runs" / experiment_name

    def counts(self) -> dict:
        jobs = self.store.jobs()
        by_status: dict[str, int] = {}
        for job in jobs:
            by_status[job["status"]] = by_status.get(job["status"], 0) + 1
        keys = ("experiment_name", "job_id", "status", "phase", "current_step", "total_steps",
                "peak_memory_mb")
        return {"running": by_status.get("running", 0), "queued": by_status.get("queued", 0),
                "total": len(jobs), "by_status": by_status,
                "active": [{k: j[k] for k in keys} for j in jobs if j["status"] in ACTIVE]}

    # Workers ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self.manage:
            return
        with self._lock:
            running = sum(1 for w in self._workers.values() if w.poll() is None)
            for job in self.store.jobs(status=("queued",)):
                if running >= self.settings.job_concurrency:
                    return
                self._launch(job)
                running += 1

    def _launch(self, job: dict) -> None:
        run_dir = Path(job["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store.update(job["job_id"], status="running", phase="starting", started_at=time.time())
        # Owner-only: a worker's log may quote what a remote provider answered.
        log_file = os.open(run_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        config = job["config"]
        command = [sys.executable, "-m", "workbench.training.worker", job["job_id"]]
        if config.get("num_workers", 1) > 1:  # the ranks, under MLX's launcher, on the hosts kept
            from workbench.training import distributed

            distributed.request_stop(run_dir, None)  # a resumed job's earlier request is done
            distributed.settle_blas_core(self.settings.home_dir)
            command = distributed.launch_command(job["job_id"], run_dir / "hosts.json")
        with open(log_file, "ab") as out:
            worker = subprocess.Popen(command, env=os.environ | self.settings.as_env(), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.store.update(job["job_id"], pid=worker.pid)
        self._workers[job["job_id"]] = worker
        if config.get("num_workers", 1) > 1:
            self._ranked[job["job_id"]] = config["num_workers"]
        log.info("job %s (%s) started in worker %d", job["job_id"], job["experiment_name"], worker.pid)

    def _ask_to_stop(self, job: dict, worker: subprocess.Popen, reason: str) -> None:
        """Ask a job's worker to checkpoint and end `stopped` (or `interrupted`: the service is
        shutting down). Data-parallel ranks read it from their run folder instead of a signal: rank 0
        may run under ssh, out of a signal's reach, and it shares that folder; the ranks then agree
        to stop at one step."""
        if job["job_id"] in self._ranked:
            from workbench.training import distributed

            distributed.request_stop(Path(job["run_dir"]), reason)
        else:
            worker.send_signal(signal.SIGTERM if reason == "stopped" else signal.SIGUSR1)

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            try:
                self._reap()
            except Exception:
                log.exception("job watcher")

    def _reap(self) -> None:
        with self._lock:
            for job_id, worker in list(self._workers.items()):
                code = worker.poll()
                if code is None:
                    if job_id in self._ranked:  # a store read every round only for data-parallel jobs
                        self._calm(job_id, worker)
                        self._watch_ranks(job_id, worker)
                    continue
                # Settled first, forgotten after: if the store cannot be written (its disk is full),
                # the next round tries again instead of leaving the job `running` for ever. Why it
                # died is judged once, when it died: the disk may have been freed by the next round.
                if job_id not in self._deaths:
                    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                    self._deaths[job_id] = _death(how, self.settings.home_dir / "runs")
                self._settle(job_id, worker, code)
                del self._workers[job_id]
                self._ranked.pop(job_id, None)
                self._calmed.discard(job_id)
                self._stopping.discard(job_id)
                self._deaths.pop(job_id, None)
            self._schedule()

    def _calm(self, job_id: str, worker: subprocess.Popen) -> None:
        if job_id not in self._calmed:
            from workbench.training import distributed

            if distributed.calm_launcher(worker.pid, self._ranked[job_id]):
                self._calmed.add(job_id)

    def _watch_ranks(self, job_id: str, worker: subprocess.Popen) -> None:
        """A data-parallel job whose ranks made no step within `distributed_timeout_s` while training
        has a rank hung (stopped, or stuck in a collective the others wait on): end it `failed`, kill
        every rank, and leave it resumable from its last checkpoint."""
        job = self.store.get(job_id)
        config = job["config"]
        if job["status"] != "running" or job["phase"] not in WATCHED_PHASES:
            return
        timeout = config.get("distributed_timeout_s", 300)
        if job["phase"] != "training":  # starting processes and loading take their time, watched or not
            timeout = max(timeout, STARTUP_GRACE_S)
        if time.time() - (job["updated_at"] or time.time()) < timeout:
            return
        ranks = _ranks_of(job_id)
        frozen = [f"rank {rank} is stopped (SIGSTOP)" for rank, process in ranks.items()
                  if _status(process) == "stopped"]
        why = "; ".join(frozen) or "a rank hangs"
        message = (f"no progress in {job['phase']} for {timeout:g} s (distributed_timeout_s): {why}; every "
                   "rank was killed")
        self.store.set_status(job_id, "failed", message, level="error", phase="failed", error={
            "code": "rank_hung", "message": message, "ranks": frozen or ["unknown"]})
        for process in ranks.values():
            with contextlib.suppress(Exception):
                process.kill()

    def _settle(self, job_id: str, worker: subprocess.Popen, code: int) -> None:
        """The end of a job whose worker exited without saying how it ended."""
        job = self.store.get(job_id)
        # mlx.launch says which ranks ended badly; rank 0 only knew that a peer was lost.
        distributed = job["config"].get("num_workers", 1) > 1
        lost = _lost_ranks(Path(job["run_dir"]) / "worker.log") if distributed else []
        if lost and job["status"] == "failed" and job["pid"] == worker.pid and not job["error"].get("ranks"):
            self.store.update(job_id, error=job["error"] | {
                "ranks": lost, "message": f"{'; '.join(lost)}: {job['error']['message']}"})
            return
        # Only a job this worker still owns: a resumed job is queued again, with no pid.
        if job["status"] != "running" or job["pid"] != worker.pid:
            return
        if job_id in self._stopping and code == -signal.SIGTERM:
            # Stopped while starting up, before the worker set its own handler: nothing trained.
            self.store.set_status(job_id, "stopped", "stopped while starting", phase="stopped")
            return
        error = self._deaths.get(job_id) or _death(f"exited with code {code}", Path(job["run_dir"]))
        if lost:
            error |= {"ranks": lost, "message": "; ".join(lost + _cause(Path(job["run_dir"]) / "worker.log"))}
        error["log_tail"] = _tail(Path(job["run_dir"]) / "worker.log")
        self.store.set_status(job_id, "failed", error["message"], level="error", phase="failed",
                              error=error)

    def _recover(self) -> None:
        """Jobs left running by a service that is gone are interrupted (resumable). A job whose process
        still lives (the command line's, or a worker finishing its checkpoint) is left to end itself."""
        for job in self.store.jobs(status=("running",)):
            if job["pid"] and _alive(job["pid"]):
                continue
            self.store.set_status(job["job_id"], "interrupted",
                                  "the service stopped while this job ran; resumable", phase="interrupted")

    def close(self) -> None:
        """Shutting down: running jobs checkpoint and end `interrupted`, to resume later."""
        self._closed.set()
        with self._lock:
            for job_id, worker in self._workers.items():
                if worker.poll() is None:
                    self._ask_to_stop(self.store.get(job_id), worker, "interrupted")
        for worker in list(self._workers.values()):
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        self._reap()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _death(how: str, runs: Path) -> dict:
    """The error of a worker that died without saying why; a full disk is named, since the log that
    would say so is on that disk."""
    error = {"code": "worker_died", "message": f"the worker {how}"}
    free = space.free_bytes(runs)
    if free < space.MARGIN:
        error |= {"code": "disk_full", "message": f"the worker {how}: No space left on device under "
                  f"{runs} ({free / 1024:.0f} KiB free)"}
    return error


def _ranks_of(job_id: str) -> dict:
    """The job's ranks running on this machine, by rank (psutil processes): found by command line,
    since a rank mlx.launch started by ssh (even to this machine) is not the launcher's child."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["cmdline"] or [])[-2:] == ["workbench.training.worker", job_id]:
                rank = process.environ().get("MLX_RANK")  # the launcher, whose command ends alike, has none
                if rank is not None:
                    found[int(rank)] = process
    return found


def _status(process) -> str:
    import psutil

    try:
        return process.status()
    except psutil.Error:
        return "gone"


# Phases a data-parallel job's ranks go through in step, where one rank's silence means it hangs;
# evaluating and saving may rightly take long without a word.
WATCHED_PHASES = ("starting", "loading_model", "loading_data", "training")
STARTUP_GRACE_S = 120.0  # the least a start-up phase is given, whatever distributed_timeout_s says
_RANK_END = re.compile(r"Node with rank (\d+) (was killed|exited with code -?\d+)")


def _lost_ranks(log_path: Path) -> list[str]:
    """The ranks mlx.launch reported ending badly, in the order it saw them ("rank 1 was killed")."""
    return [f"rank {m.group(1)} {m.group(2)}" for m in _RANK_END.finditer(_tail(log_path, 200))]


_ERROR_LINE = re.compile(r"^\w*(Error|Exception): .+$", re.MULTILINE)


def _cause(log_path: Path) -> list[str]:
    """The first exception a rank printed ("ImportError: ... no CUDA-capable device"), if one did:
    the others' are mostly the consequence (a peer lost, or the launcher's stop)."""
    return [m.group(0) for m in _ERROR_LINE.finditer(_tail(log_path, 200))][:1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
