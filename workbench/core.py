"""`Workbench`: the one object the service and the notebooks drive.

Each operation the API and the panels offer is one method here, answering the models of
`workbench.schemas`: a route is one call to it, and a panel calls it in process or, through
`workbench.client.Client`, over HTTP (the same methods, the same answers)."""

from __future__ import annotations

import logging
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from workbench import __version__
from workbench.errors import InputError
from workbench.evaluation.config import EvalConfig
from workbench.models.resolver import ModelNotFound, ModelResolver
from workbench.providers.local_mlx import LocalMLX
from workbench.providers.params import BatchGenerateParams, GenerateParams
from workbench.providers.router import ProviderRouter, ProviderStream
from workbench.providers.secrets import mask_key
from workbench.providers.store import ProviderConfig
from workbench.readiness import Readiness
from workbench.schemas import (
    BackupResponse,
    BatchItem,
    ConfigureResponse,
    DatasetPreview,
    EvalSamples,
    EvalStartResponse,
    EvalStatus,
    FallbackResponse,
    FuseResponse,
    GenerateResponse,
    HealthResponse,
    JobAction,
    JobEvents,
    MetricsResponse,
    PreviewRequest,
    ProviderState,
    StartResponse,
    StatusResponse,
)
from workbench.settings import Settings
from workbench.system import health as system_health
from workbench.system import memory_usage
from workbench.training.config import TrainingConfig
from workbench.training.manager import JobManager
from workbench.training.policy import use_kernel_cache
from workbench.training.record import TERMINAL, JobEvent, JobStatus
from workbench.training.store import JobStore

log = logging.getLogger(__name__)


class Workbench:
    def __init__(self, settings: Settings | None = None, manage_jobs: bool = True):
        self.settings = settings or Settings()
        # CUDA kernels compiled by this process and its workers are kept for the next ones.
        use_kernel_cache(self.settings.home_dir)
        # Checked at start: a damaged database is moved aside (kept) and reported, never reused.
        self.store = JobStore(self.settings.home_dir / "workbench.db", check=True)
        # Experiments resolve through the store (read once per adapter) and their adapter_config.json.
        self.resolver = ModelResolver(self.settings, jobs=self.store)
        self.local = LocalMLX(self.settings, self.resolver)
        self.router = ProviderRouter(self.settings, self.local)
        self.jobs = JobManager(self.settings, self.resolver, self.store, manage=manage_jobs,
                               provider_configured=self.router.configured)
        self.started_at = time.time()
        self.readiness = Readiness()
        self._closed = False

    def warm_up(self) -> threading.Thread:
        """Build and load the default model in the background, so the first request is quick;
        `readiness` says when it is done."""
        what = f"default model {self.settings.default_model}"
        entered = threading.Event()

        def load() -> None:
            try:
                with self.readiness.loading(what):
                    entered.set()
                    self.local.model(None)
            except Exception:
                log.exception("could not load the default model %r", self.settings.default_model)
            finally:
                entered.set()

        thread = threading.Thread(target=load, name="warm-up", daemon=True)
        thread.start()
        entered.wait()  # from here on, /health reports the loading: never ready before it began
        return thread

    # System -------------------------------------------------------------------------------------

    def health(self) -> HealthResponse:
        """The machine's health (`workbench.system.health`) and this workbench's readiness."""
        report = system_health(self.settings.home_dir)
        if problems := self.database_problems():
            report["problems"] += problems
            report["status"] = "degraded"
        readiness = self.readiness.report()
        for failure in readiness["failed"]:
            report["problems"].append(f"{failure['what']} could not be loaded: {failure['error']}")
            report["status"] = "degraded"
        return HealthResponse(**report, **readiness)

    # Training jobs ------------------------------------------------------------------------------

    def start_training(self, config: TrainingConfig, request_id: str | None = None) -> StartResponse:
        """Queue a training job (it starts at once when fewer than job_concurrency run). A retry with
        the same request_id answers the job it started."""
        job = self.jobs.start(config, request_id=request_id)
        return StartResponse(experiment_name=job["experiment_name"], job_id=job["job_id"], status="started",
                             state=job["status"], model_path=job["model_path"])

    def stop_training(self, experiment_name: str, wait_s: float = 30.0) -> JobAction:
        """Stop a queued or running job; a running one writes a checkpoint first (waited for up to
        `wait_s`)."""
        job = self.jobs.stop(experiment_name)
        return _action(self._until_ended(job["job_id"], wait_s), "stopped")

    def resume_training(self, experiment_name: str) -> JobAction:
        """Continue a stopped, failed or interrupted job from its last checkpoint."""
        return _action(self.jobs.resume(experiment_name), "resumed")

    def job_status(self, experiment_name: str) -> JobStatus:
        """The latest job of an experiment."""
        return JobStatus.of(self.jobs.job(experiment_name))

    def list_jobs(self) -> list[JobStatus]:
        """Every job, newest first."""
        return [JobStatus.of(job) for job in self.store.jobs(kind="train")]

    def metrics(self, experiment_name: str) -> MetricsResponse:
        """The step series of the experiment's latest job."""
        job = self.jobs.job(experiment_name)
        return MetricsResponse(experiment_name=experiment_name, job_id=job["job_id"],
                               steps=self.store.metrics(job["job_id"]))

    def events(self, experiment_name: str, after: int = 0) -> JobEvents:
        """The latest job's events after the one numbered `after`, and whether it has ended."""
        return self._events(self.jobs.job(experiment_name), after)

    def _events(self, job: dict, after: int) -> JobEvents:
        # The state first: events written after it are then read too, so none is missed at the end.
        ended = job["status"] in TERMINAL
        events = [JobEvent(**event) for event in self.store.events(job["job_id"], after)]
        return JobEvents(job_id=job["job_id"], events=events, ended=ended)

    def wait(self, experiment_name: str, timeout_s: float | None = None) -> JobStatus:
        """The experiment's latest job once it has ended, or as it is after `timeout_s`."""
        job = self.jobs.job(experiment_name)
        return JobStatus.of(self._until_ended(job["job_id"], timeout_s))

    def _until_ended(self, job_id: str, timeout_s: float | None) -> dict:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = self.store.get(job_id)
        while job["status"] not in TERMINAL and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
            job = self.store.get(job_id)
        return job

    def fuse(self, experiment_name: str) -> FuseResponse:
        """Merge an experiment's adapter into its base, as a new model folder."""
        from workbench.training.fuse import fuse_adapter

        job = self.store.latest_completed(experiment_name)
        if job is None:
            self.jobs.job(experiment_name)  # 404 when there is no such experiment at all
            raise InputError("experiment_name", f"{experiment_name} has no completed job to fuse", status=409)
        adapter = Path(job["adapter_path"])
        if not all((adapter / name).is_file() for name in ("adapters.safetensors", "adapter_config.json")):
            raise InputError("experiment_name", f"{experiment_name}'s adapter folder {adapter} is gone or "
                             "incomplete; train the experiment again to fuse it", status=409)
        try:  # the adapter folder itself: an experiment's name could be shadowed by a registered one
            resolved = self.resolver.resolve(str(adapter))
        except ModelNotFound as exc:
            raise InputError("experiment_name", exc.reason, status=409) from None
        path = fuse_adapter(resolved, Path(job["run_dir"]) / "fused")
        return FuseResponse(experiment_name=experiment_name, path=str(path))

    def preview_dataset(self, request: PreviewRequest) -> DatasetPreview:
        """The first rows of a training configuration's data as the model sees them, the data's summary,
        and on request every row's token count."""
        from workbench.data import preview, token_lengths, validate

        spec = request.spec()
        summary = validate(spec, self.settings)
        try:
            tokenizer = self.local.model(request.model_name).engine.tokenizer
        except InputError as exc:  # named as this request names it
            raise InputError("model_name", exc.message, exc.status) from None
        rows = preview(spec, tokenizer, self.settings, request.rows)
        lengths = token_lengths(spec, tokenizer, self.settings) if request.token_lengths else None
        return DatasetPreview(summary=asdict(summary), rows=rows, token_lengths=lengths)

    # Evaluation jobs (workbench/evaluation/) ----------------------------------------------------

    def start_evaluation(self, config: EvalConfig) -> EvalStartResponse:
        """Queue an evaluation job: lm-eval's tasks over a model, an experiment's adapter (not fused)
        or a folder; it shares the training jobs' queue."""
        job = self.jobs.start_eval(config)
        return EvalStartResponse(name=job["experiment_name"], job_id=job["job_id"], status="started",
                                 state=job["status"], model_path=job["model_path"])

    def stop_evaluation(self, name: str, wait_s: float = 30.0) -> EvalStatus:
        """Stop a queued or running evaluation (a running one ends between chunks of requests)."""
        job = self.jobs.stop(name, kind="eval")
        return EvalStatus.of(self._until_ended(job["job_id"], wait_s))

    def evaluation_status(self, name: str) -> EvalStatus:
        """The latest job of an evaluation: state, progress, and lm-eval's results once done."""
        return EvalStatus.of(self.jobs.job(name, kind="eval"))

    def list_evaluations(self) -> list[EvalStatus]:
        """Every evaluation job, newest first."""
        return [EvalStatus.of(job) for job in self.store.jobs(kind="eval")]

    def evaluation_events(self, name: str, after: int = 0) -> JobEvents:
        """The latest evaluation job's events after the one numbered `after`."""
        return self._events(self.jobs.job(name, kind="eval"), after)

    def evaluation_samples(self, name: str, offset: int = 0, limit: int = 50,
                           task: str | None = None) -> EvalSamples:
        """A page of the items an evaluation scored: prompt, target, response and scores."""
        from workbench.evaluation.job import read_samples

        job = self.jobs.job(name, kind="eval")
        total, items = read_samples(Path(job["run_dir"]), offset, limit, task)
        return EvalSamples(name=name, job_id=job["job_id"], total=total, offset=offset, items=items)

    def wait_evaluation(self, name: str, timeout_s: float | None = None) -> EvalStatus:
        """The evaluation's latest job once it has ended, or as it is after `timeout_s`."""
        return EvalStatus.of(self._until_ended(self.jobs.job(name, kind="eval")["job_id"], timeout_s))

    # Providers ----------------------------------------------------------------------------------

    def providers(self) -> dict[str, ProviderState]:
        """Every provider by name: configured, usable, model, api_base, masked key and health."""
        return {name: ProviderState(**state) for name, state in self.router.listing().items()}

    def configure_provider(self, config: ProviderConfig) -> ConfigureResponse:
        """Configure a provider; kept across restarts (the key in a file only the owner can read)."""
        entry = self.router.configure(config)
        return ConfigureResponse(configured=config.provider, model=entry["model"], api_base=entry["api_base"],
                                 api_key=mask_key(entry["api_key"]), timeout=entry["timeout"])

    def remove_provider(self, provider: str) -> FallbackResponse:
        """Forget a provider's configuration and key; answers the fallback order left."""
        if not self.router.remove(provider):
            raise InputError("provider", f"{provider} is not configured", status=404)
        return FallbackResponse(order=self.router.chain())

    def fallback(self) -> FallbackResponse:
        """The order in which requests that name no provider try them."""
        return FallbackResponse(order=self.router.chain())

    def set_fallback(self, order: list[str] | None) -> FallbackResponse:
        """Set that order (None: the default)."""
        return FallbackResponse(order=self.router.set_fallback(order))

    # Generation ---------------------------------------------------------------------------------

    def generate(self, params: GenerateParams) -> GenerateResponse:
        """One answer, from the provider asked for or the first of the fallback chain that answers."""
        return GenerateResponse.of(self.router.complete(params))

    def stream(self, params: GenerateParams) -> ProviderStream:
        """The same, as text pieces while they come; then `.result()`."""
        return self.router.stream(params)

    def generate_many(self, requests: list[GenerateParams]) -> list[GenerateResponse]:
        """Several generations in one call (OpenAI's `prompt` lists and `n`; text or token-id prompts,
        echo): for a local model they enter its engine together, their prompts scored in one pass."""
        return [GenerateResponse.of(r) for r in self.router.complete_many(requests)]

    def generate_batch(self, params: BatchGenerateParams) -> list[BatchItem]:
        """Every prompt at once: the local engine batches them, remote providers get them in parallel."""
        shared = params.model_dump(exclude={"prompts"})
        requests = [GenerateParams(prompt=prompt, **shared) for prompt in params.prompts]
        with ThreadPoolExecutor(max_workers=min(len(requests), 16)) as pool:
            results = list(pool.map(self.router.complete, requests))
        return [BatchItem.of(r) for r in results]

    def served_models(self) -> dict[str, str]:
        """Names a generation request can ask for, each with who serves it: `workbench` for built-in
        models and loaded folders, the provider's name for each configured remote provider."""
        from workbench.providers.catalog import LOCAL, PROVIDERS

        local = self.resolver.names() + [m["name"] for m in self.local.loaded_models()]
        remote = [name for name in PROVIDERS if name != LOCAL and self.router.configured(name)]
        return {name: "workbench" for name in local} | {name: name for name in remote}

    # System, continued --------------------------------------------------------------------------

    def status(self) -> StatusResponse:
        """Server information, training jobs and memory use."""
        return StatusResponse(**{
            "status": "running",
            "server_info": {
                "version": __version__,
                "python": platform.python_version(),
                "mlx": _version_of("mlx"),
                "mlx_lm": _version_of("mlx-lm"),
                "uptime_s": round(time.time() - self.started_at, 1),
                "home": str(self.settings.home_dir),
                "default_model": self.settings.default_model,
                "loaded_models": self.local.loaded_models(),
                "database": self.database(),
            },
            "training_jobs": self.jobs.counts(),
            "memory_usage": memory_usage(),
        })

    def database(self) -> dict:
        """The job database's file, and any damaged one moved aside (at this start or before)."""
        from workbench.training.dbfile import damaged_copies

        return {"path": str(self.store.path), "moved_aside_at_start": self.store.moved_aside,
                "damaged_copies": [str(p) for p in damaged_copies(self.settings.home_dir)]}

    def database_problems(self) -> list[str]:
        """For /health: damaged databases moved aside and not yet dealt with."""
        copies = self.database()["damaged_copies"]
        return [f"a damaged job database was moved aside to {copy}: the history it held is not shown; "
                "restore a backup, or delete it once dealt with" for copy in copies]

    def backup(self, dest: Path | None = None) -> BackupResponse:
        """An online copy of the job database; by default under <home>/backups/."""
        if dest is None:
            dest = self.settings.home_dir / "backups"
            dest.mkdir(mode=0o700, exist_ok=True)
        return BackupResponse(**self.store.backup(dest))

    def close(self) -> None:
        """Release workers, engines and the store; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        self.local.close()
        self.store.close()


def _action(job: dict, action: str) -> JobAction:
    return JobAction(experiment_name=job["experiment_name"], job_id=job["job_id"], action=action,
                     state=job["status"], current_step=job["current_step"], checkpoint=job["checkpoint"])


@lru_cache
def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
