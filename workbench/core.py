"""`Workbench`: the one object the service and the notebooks drive."""

from __future__ import annotations

import logging
import platform
import threading
import time

from workbench import __version__
from workbench.models.resolver import ModelResolver
from workbench.providers.catalog import PROVIDERS
from workbench.providers.local_mlx import GenerationResult, LocalMLX
from workbench.providers.params import BatchGenerateParams, GenerateParams
from workbench.settings import Settings
from workbench.system import memory_usage

log = logging.getLogger(__name__)


class Workbench:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.resolver = ModelResolver(self.settings)
        self.local = LocalMLX(self.settings, self.resolver)
        self.started_at = time.time()

    def warm_up(self) -> threading.Thread:
        """Build and load the default model in the background, so the first request is quick."""

        def load() -> None:
            try:
                self.local.model(None)
            except Exception:
                log.exception("could not load the default model %r", self.settings.default_model)

        thread = threading.Thread(target=load, name="warm-up", daemon=True)
        thread.start()
        return thread

    def providers(self) -> dict[str, dict]:
        listing = {}
        for name, info in PROVIDERS.items():
            if info.kind == "local":
                listing[name] = {
                    "kind": info.kind,
                    "configured": True,
                    "usable": True,
                    "model": self.settings.default_model,
                    "loaded_models": self.local.loaded_models(),
                }
            else:
                listing[name] = {
                    "kind": info.kind,
                    "configured": False,
                    "usable": False,
                    "model": info.default_model,
                    "needs_key": info.needs_key,
                    "reason": "not configured",
                }
        return listing

    def generate(self, params: GenerateParams) -> GenerationResult:
        return self.local.generate(params)

    def generate_batch(self, params: BatchGenerateParams) -> list[GenerationResult]:
        return self.local.generate_batch(params)

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
            },
            "training_jobs": {"running": 0, "queued": 0, "total": 0},
            "memory_usage": memory_usage(),
        }

    def close(self) -> None:
        self.local.close()


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
