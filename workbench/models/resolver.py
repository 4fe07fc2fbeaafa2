"""Turns a model name into a loadable location, in the order DESIGN.md gives (decision 2).

1. a registered name (`tiny`, `random/qwen3-0.6b-4bit`, ...) or an alias from the settings;
2. the name of a trained experiment: its base model with its adapter;
3. a local folder in the Hugging Face layout;
4. the Hugging Face cache;
5. the hub, where a network exists (mlx_lm.load downloads it).
A name that resolves nowhere raises ModelNotFound, so callers can answer 4xx before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workbench import hub
from workbench.models.builder import builtin_names, builtin_spec, ensure_built
from workbench.settings import Settings

Source = Literal["registered", "experiment", "folder", "hf-cache", "hub"]


class ModelNotFound(LookupError):
    def __init__(self, name: str, reason: str):
        super().__init__(f"model {name!r} was not found: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the caller asked for it
    path: str  # a folder, or a hub repo id when source is "hub"
    source: Source
    adapter_path: str | None = None  # a trained experiment's adapter, applied over `path`
    quantization_bits: int | None = None  # QLoRA's base was quantized before its adapter was trained


class ModelResolver:
    def __init__(self, settings: Settings, experiments: Callable[[str], dict | None] | None = None):
        self.settings = settings
        # name -> {"model_path", "adapter_path", "quantization_bits"} of a finished training job
        self.experiments = experiments or (lambda name: None)

    def names(self) -> list[str]:
        """Names that resolve without a network: registered names and aliases."""
        return builtin_names() + sorted(self.settings.model_aliases)

    def resolve(self, name: str) -> ResolvedModel:
        target, seen = name, set()
        while target in self.settings.model_aliases:
            if target in seen:
                raise ModelNotFound(name, f"alias loop through {target!r}")
            seen.add(target)
            target = self.settings.model_aliases[target]

        spec = builtin_spec(target)
        if spec is not None:
            return ResolvedModel(name, str(ensure_built(spec, self.settings.models_dir)), "registered")

        trained = self.experiments(target)
        if trained is not None:
            return ResolvedModel(name, trained["model_path"], "experiment", trained["adapter_path"],
                                 trained.get("quantization_bits"))

        try:
            folder = Path(target).expanduser()
            is_folder = folder.is_dir()
        except (OSError, ValueError, RuntimeError):
            # Too long for a path, a NUL byte, or ~user of no such user: a name, not a folder.
            is_folder = False
        if is_folder:
            if not (folder / "config.json").exists():
                raise ModelNotFound(name, f"folder {folder} has no config.json")
            return ResolvedModel(name, str(folder.resolve()), "folder")

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
