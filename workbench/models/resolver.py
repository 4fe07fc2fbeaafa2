"""Turns a model name into a loadable location, in this order (docs/architecture.md, "Layers"):

1. a registered name (`tiny`, `random/qwen3-0.6b-4bit`, ...) or an alias from the settings;
2. the name of a trained experiment: its base model with its adapter;
3. a local folder in the Hugging Face layout, or an adapter folder (its base with it);
4. the Hugging Face cache;
5. the hub, where a network exists (mlx_lm.load downloads it).
A name that resolves nowhere raises ModelNotFound, so callers can answer 4xx before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workbench import hub
from workbench.models.adapters import Adapter, AdapterError, is_adapter_folder, read_adapter
from workbench.models.builder import builtin_names, builtin_spec, ensure_built
from workbench.models.experiments import ExperimentAdapters, JobRecords
from workbench.settings import Settings

Source = Literal["registered", "experiment", "adapter", "folder", "hf-cache", "hub"]


class ModelNotFound(LookupError):
    def __init__(self, name: str, reason: str):
        super().__init__(f"model {name!r} was not found: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the caller asked for it
    path: str  # a folder, or a hub repo id when source is "hub"; an adapter's base
    source: Source
    adapter: Adapter | None = None  # applied over `path`, as its own adapter_config.json says

    @property
    def adapter_path(self) -> str | None:
        return self.adapter.path if self.adapter else None


class ModelResolver:
    def __init__(self, settings: Settings, jobs: JobRecords | None = None):
        self.settings = settings
        # An experiment's name -> its latest completed job's adapter, the job store read once per adapter.
        self.experiments = ExperimentAdapters(jobs)

    def names(self) -> list[str]:
        """Names that resolve without a network: registered names and aliases."""
        return builtin_names() + sorted(self.settings.model_aliases)

    def resolve(self, name: str, *, _depth: int = 0) -> ResolvedModel:
        target = self._unaliased(name)
        spec = builtin_spec(target)
        if spec is not None:
            return ResolvedModel(name, str(ensure_built(spec, self.settings.models_dir)), "registered")

        try:
            trained = self.experiments.adapter(target)
        except AdapterError as exc:
            raise ModelNotFound(name, f"it is a trained experiment, but {exc}; train it again") from None
        if trained is not None:
            return ResolvedModel(name, self._base_of(name, trained, _depth), "experiment", trained)

        try:
            folder = Path(target).expanduser()
            is_folder = folder.is_dir()
        except (OSError, ValueError, RuntimeError):
            # Too long for a path, a NUL byte, or ~user of no such user: a name, not a folder.
            is_folder = False
        if is_folder:
            if (folder / "config.json").exists():
                return ResolvedModel(name, str(folder.resolve()), "folder")
            if is_adapter_folder(folder):
                try:
                    adapter = read_adapter(folder.resolve())
                except AdapterError as exc:
                    raise ModelNotFound(name, str(exc)) from None
                return ResolvedModel(name, self._base_of(name, adapter, _depth), "adapter", adapter)
            raise ModelNotFound(name, f"folder {folder} has no config.json (a model) or "
                                      "adapter_config.json (an adapter)")

        if not _looks_like_repo_id(target):
            raise ModelNotFound(name, "not a registered name, alias, model folder or hub id")
        cached = _from_hf_cache(target)
        if cached is not None:
            return ResolvedModel(name, cached, "hf-cache")
        if hub.offline_reason(self.settings, "model") is None:
            return self._from_hub(name, target)
        raise ModelNotFound(
            name,
            "not registered, not a local folder, not in the Hugging Face cache, "
            "and hub downloads are off",
        )

    def _unaliased(self, name: str) -> str:
        target, seen = name, set()
        while target in self.settings.model_aliases:
            if target in seen:
                raise ModelNotFound(name, f"alias loop through {target!r}")
            seen.add(target)
            target = self.settings.model_aliases[target]
        return target

    def _base_of(self, name: str, adapter: Adapter, depth: int) -> str:
        """The folder of the base an adapter was trained over; where that folder is not here (the
        adapter was copied from elsewhere), the name it was trained from, resolved here."""
        folder = adapter.base_model
        if folder and Path(folder, "config.json").is_file():
            return folder
        if depth < 3:  # a base named by an experiment of an experiment ...: a bound, not a loop
            for other in dict.fromkeys(n for n in (adapter.model_name, folder) if n):
                try:
                    return self.resolve(other, _depth=depth + 1).path
                except ModelNotFound:
                    continue
        raise ModelNotFound(name, f"the base model of adapter {adapter.path} ({folder or 'not named'}, "
                                  f"asked for as {adapter.model_name or 'unknown'}) is not available here")

    def adapter_changed(self, resolved: ResolvedModel) -> bool:
        """Whether the adapter `resolved` was loaded with is no longer the one its name serves: the
        experiment trained again, or the adapter folder was written over or removed."""
        if resolved.adapter is None:
            return False
        try:
            if resolved.source == "experiment":
                current = self.experiments.adapter(self._unaliased(resolved.name))
            else:
                current = read_adapter(resolved.adapter.path)
        except (AdapterError, ModelNotFound):
            return True
        return current != resolved.adapter

    def _from_hub(self, name: str, repo_id: str) -> ResolvedModel:
        state, error = hub.lookup(repo_id, "model", self.settings.hub_timeout_s)
        if state == "missing":
            raise ModelNotFound(name, "no such repository on the Hugging Face hub")
        if state == "unreachable":
            raise ModelNotFound(name, f"not available locally and the hub could not be reached ({error})")
        return ResolvedModel(name, repo_id, "hub")


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _from_hf_cache(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return path if (Path(path) / "config.json").exists() else None
