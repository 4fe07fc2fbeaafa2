"""Every model name a generation request can ask for, as OpenAI's `/v1/models` lists them.

Registered models and aliases, folders already loaded, trained experiments (an experiment's name
serves its base with its published adapter), fused models (served by their folder, the `path` the
fuse answered), the configured remote providers and `auto` (docs/architecture.md, "Models listed").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from workbench.models.adapters import AdapterError
from workbench.models.builder import builtin_names
from workbench.models.resolver import ModelResolver

Kind = Literal["registered", "alias", "loaded", "experiment", "fused", "folder", "adapter", "hf-cache",
               "hub", "provider", "router"]


class ServedModel(BaseModel):
    """OpenAI's model object (`id`, `object`, `created`, `owned_by`), and what the name is."""

    id: str = Field(description="The name to send as `model`.")
    object: Literal["model"] = "model"
    created: int = Field(default=0, description="Unix time it was trained or fused; 0 where unknown.")
    owned_by: str = Field(description="`workbench` for local models, else the provider's name.")
    kind: Kind = Field(description="registered, alias, loaded (a folder in memory), experiment (a "
                       "trained adapter over its base), fused, a folder or adapter folder, provider, "
                       "or router (`auto`).")
    parent: str | None = Field(default=None, description="What it derives from: an alias's target, an "
                               "experiment's base model, a fused model's experiment.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ServedModel]


class CompletedJobs(Protocol):
    def jobs(self, status: tuple[str, ...] | None = None, kind: str | None = None) -> list[dict]: ...


def served_models(resolver: ModelResolver, loaded: list[dict], jobs: CompletedJobs,
                  providers: list[str]) -> list[ServedModel]:
    """The listing, each name once (the first way it resolves, as the resolver's order has it)."""
    seen: dict[str, ServedModel] = {}
    for model in _local(resolver, loaded, jobs):
        seen.setdefault(model.id, model)
    for name in providers:
        seen.setdefault(name, ServedModel(id=name, owned_by=name, kind="provider"))
    seen.setdefault("auto", ServedModel(id="auto", owned_by="workbench", kind="router"))
    return list(seen.values())


def _local(resolver: ModelResolver, loaded: list[dict], jobs: CompletedJobs) -> Iterator[ServedModel]:
    for name in builtin_names():
        yield ServedModel(id=name, owned_by="workbench", kind="registered")
    for name, target in sorted(resolver.settings.model_aliases.items()):
        yield ServedModel(id=name, owned_by="workbench", kind="alias", parent=target)
    completed = jobs.jobs(status=("completed",), kind="train")  # oldest first
    for job in reversed(completed):
        if _serves_adapter(resolver, job["experiment_name"]):
            yield ServedModel(id=job["experiment_name"], owned_by="workbench", kind="experiment",
                              created=int(job["finished_at"] or 0), parent=job["config"].get("model_name"))
    for job in reversed(completed):
        fused = Path(job["run_dir"]) / "fused"
        if (fused / "config.json").is_file():
            yield ServedModel(id=str(fused), owned_by="workbench", kind="fused",
                              created=int(fused.stat().st_mtime), parent=job["experiment_name"])
    for model in loaded:
        if model["source"] == "experiment":
            continue  # listed above while its adapter serves; once gone, its name serves nothing
        kind = "loaded" if model["source"] in ("folder", "hf-cache", "hub") else model["source"]
        yield ServedModel(id=model["name"], owned_by="workbench", kind=kind)


def _serves_adapter(resolver: ModelResolver, experiment: str) -> bool:
    """Whether the experiment's name serves an adapter now (its folder may have been removed)."""
    try:
        return resolver.experiments.adapter(experiment) is not None
    except AdapterError:
        return False
