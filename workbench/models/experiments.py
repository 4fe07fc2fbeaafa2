"""Which adapter an experiment's name serves: its latest completed job's, read from the job store once.

A generation request for an experiment asks whether the adapter it was loaded with is still the one
to serve. Answering from the store each time was a query and a whole `TrainingConfig` validated per
request; here the store is read once per adapter, and the filesystem says when to read it again. A
job publishes its adapter (`<experiment>/<job>/adapters`, written aside and renamed into place)
before it completes, so a newer job cannot complete without changing the set of published adapters
under the experiment's folder: while that set and its files' stamps stay as they were, the answer
stands. Everything else (base model, quantization, LoRA settings) comes from the adapter's own
adapter_config.json.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workbench.models.adapters import CONFIG, Adapter, read_adapter

_ACTIVE = ("queued", "running")  # the store's active states (models/ does not import training/)


class JobRecords(Protocol):
    """The two reads of the job store (`workbench.training.store.JobStore`) made here."""

    def latest_completed(self, experiment_name: str) -> dict | None: ...
    def latest(self, experiment_name: str) -> dict | None: ...


@dataclass(frozen=True)
class _Known:
    job_id: str
    adapter: Adapter
    published: frozenset  # the experiment's published adapters when the store was read


class ExperimentAdapters:
    def __init__(self, jobs: JobRecords | None = None):
        self.jobs = jobs
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def adapter(self, name: str) -> Adapter | None:
        """The adapter `name` serves, or None where `name` is no experiment with a completed job.
        Raises AdapterError when its latest completed job's adapter folder is gone or broken."""
        if self.jobs is None:
            return None
        with self._lock:
            known = self._known.get(name)
            if known is not None and _published(Path(known.adapter.path)) == known.published:
                return known.adapter
            self._known.pop(name, None)
            job = self.jobs.latest_completed(name)
            if job is None:
                return None
            folder = Path(job["adapter_path"])
            published = _published(folder)
            adapter = read_adapter(folder, base_model=job["model_path"])
            if not self._finishing(name, job, folder.name):
                self._known[name] = _Known(job["job_id"], adapter, published)
            return adapter

    def _finishing(self, name: str, completed: dict, folder_name: str) -> bool:
        """Whether a newer job may complete without changing the adapters on disk from here on: it
        has published its adapter and not yet completed (its judge is scoring it), or it completed
        since the store was read. Then the store is asked again next time. (Read after the adapters
        were listed, so an adapter published later shows as a change.)"""
        newest = self.jobs.latest(name)
        if newest is None or newest["job_id"] == completed["job_id"]:
            return False
        if newest["status"] == "completed":
            return True
        return newest["status"] in _ACTIVE and (Path(newest["run_dir"]) / folder_name / CONFIG).exists()


def _published(adapter_folder: Path) -> frozenset:
    """The experiment's published adapters (`<experiment>/*/adapters`) with their files' stamps."""
    found = set()
    for config in adapter_folder.parent.parent.glob(f"*/{adapter_folder.name}/{CONFIG}"):
        try:
            info = config.stat()
        except OSError:
            continue
        found.add((str(config), info.st_ino, info.st_mtime_ns))
    return frozenset(found)
