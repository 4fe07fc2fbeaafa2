"""`Workbench`: the one object the service and the notebooks drive."""

from __future__ import annotations

import logging
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from workbench import __version__
from workbench.errors import InputError
from workbench.models.resolver import ModelNotFound, ModelResolver
from workbench.providers.local_mlx import GenerationResult, LocalMLX
from workbench.providers.params import BatchGenerateParams, GenerateParams
from workbench.providers.router import ProviderRouter, ProviderStream
from workbench.readiness import Readiness
from workbench.settings import Settings
from workbench.system import health as system_health
from workbench.system import memory_usage
from workbench.training.manager import JobManager
from workbench.training.policy import use_kernel_cache
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

    def health(self) -> dict:
        """The machine's health (`workbench.system.health`) and this workbench's readiness."""
        report = system_health(self.settings.home_dir)
        if problems := self.database_problems():
            report["problems"] += problems
            report["status"] = "degraded"
        readiness = self.readiness.report()
        for failure in readiness["failed"]:
            report["problems"].append(f"{failure['what']} could not be loaded: {failure['error']}")
            report["status"] = "degraded"
        return report | readiness

    def fuse(self, experiment_name: str) -> Path:
        """Merge an experiment's adapter into its base; answers the new model folder."""
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
        return fuse_adapter(resolved, Path(job["run_dir"]) / "fused")

    def providers(self) -> dict[str, dict]:
        return self.router.listing()

    def generate(self, params: GenerateParams) -> GenerationResult:
        """One answer, from the provider asked for or the first of the fallback chain that answers."""
        return self.router.complete(params)

    def stream(self, params: GenerateParams) -> ProviderStream:
        return self.router.stream(params)

    def generate_batch(self, params: BatchGenerateParams) -> list[GenerationResult]:
        """Every prompt at once: the local engine batches them, remote providers get them in parallel."""
        shared = params.model_dump(exclude={"prompts"})
        requests = [GenerateParams(prompt=prompt, **shared) for prompt in params.prompts]
        with ThreadPoolExecutor(max_workers=min(len(requests), 16)) as pool:
            return list(pool.map(self.router.complete, requests))

    def status(self) -> dict:
        return {
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
        }

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

    def backup(self, dest: Path | None = None) -> dict:
        """An online copy of the job database; by default under <home>/backups/."""
        if dest is None:
            dest = self.settings.home_dir / "backups"
            dest.mkdir(mode=0o700, exist_ok=True)
        return self.store.backup(dest)

    def close(self) -> None:
        """Release workers, engines and the store; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        self.local.close()
        self.store.close()


@lru_cache
def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
