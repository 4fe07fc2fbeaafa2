"""Adapters describe themselves: served and fused from their own adapter_config.json, wherever they lie."""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import pytest
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers

from workbench.models.adapters import adapter_config
from workbench.models.loading import load_resolved
from workbench.models.resolver import ModelNotFound, ModelResolver
from workbench.training.checkpoint import save_adapter
from workbench.training.fuse import fuse_adapter

PROMPT = mx.array([[1, 17, 42, 99, 7]])
LORA = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "self_attn.v_proj"]}


def train_adapter(folder: Path, base: str, bits: int | None = None, group_size: int = 32):
    """An adapter as a training run leaves it (LoRA weights made non-zero so it changes the answers),
    written by the training run's own writer; the logits the trained model gives PROMPT."""
    model, _ = mlx_lm.load(base)
    if bits:
        nn.quantize(model, group_size=group_size, bits=bits)  # QLoRA over a full-precision base
    model.freeze()
    linear_to_lora_layers(model, 2, LORA)
    for _, module in model.named_modules():
        if isinstance(module, LoRALinear):
            module.lora_b = mx.random.normal(module.lora_b.shape, key=mx.random.key(1)) * 0.2
    config = adapter_config(model, base_model=base, model_name="tiny", num_layers=2, lora_parameters=LORA,
                            training_type="qlora" if bits else "lora", quantization_bits=bits)
    save_adapter(folder, model, config)
    model.eval()
    return model(PROMPT)


def moved(folder: Path, elsewhere: Path) -> Path:
    shutil.copytree(folder, elsewhere)
    shutil.rmtree(folder)
    return elsewhere


class Jobs:
    """The job store as the resolver reads it, counting the reads."""

    def __init__(self):
        self.completed: dict[str, dict] = {}
        self.newest: dict[str, dict] = {}
        self.reads = 0

    def latest_completed(self, name):
        self.reads += 1
        return self.completed.get(name)

    def latest(self, name):
        return self.newest.get(name) or self.completed.get(name)


def job(name: str, job_id: str, run_dir: Path, base: str) -> dict:
    return {"job_id": job_id, "experiment_name": name, "status": "completed", "run_dir": str(run_dir),
            "adapter_path": str(run_dir / "adapters"), "model_path": base}


def test_an_adapter_copied_elsewhere_is_served_and_fused_from_its_config_alone(settings, models_dir, tmp_path):
    base = f"{models_dir}/tiny"
    trained = train_adapter(tmp_path / "run" / "adapters", base)
    adapter = moved(tmp_path / "run" / "adapters", tmp_path / "elsewhere" / "my-adapter")

    written = json.loads((adapter / "adapter_config.json").read_text())
    assert written["base_model"] == base and written["model_name"] == "tiny"
    assert written["fine_tune_type"] == "lora" and written["num_layers"] == 2
    assert written["lora_parameters"] == LORA and written["quantization"] is None

    untuned, _ = mlx_lm.load(base)
    assert not mx.allclose(untuned(PROMPT), trained, atol=1e-2)  # the adapter changes the answers

    resolved = ModelResolver(settings).resolve(str(adapter))  # no job store: the folder is all there is
    assert resolved.source == "adapter" and resolved.path == base
    assert resolved.adapter_path == str(adapter)
    model, _, _ = load_resolved(resolved)
    assert mx.allclose(model(PROMPT), trained, atol=1e-4)

    # mlx-lm reads the same file the same way
    plain, _ = mlx_lm.load(base, adapter_path=str(adapter))
    assert mx.allclose(plain(PROMPT), trained, atol=1e-4)

    fused = fuse_adapter(resolved, tmp_path / "fused")
    model, _ = mlx_lm.load(str(fused))
    assert model.layers[-1].self_attn.q_proj.__class__.__name__ == "Linear"
    assert mx.allclose(model(PROMPT), trained, atol=1e-4)


def test_a_qlora_adapter_carries_the_quantization_it_was_trained_over(settings, models_dir, tmp_path):
    base = f"{models_dir}/tiny"
    trained = train_adapter(tmp_path / "adapters", base, bits=4, group_size=32)
    written = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert written["quantization"] == {"bits": 4, "group_size": 32, "mode": "affine"}

    resolved = ModelResolver(settings).resolve(str(moved(tmp_path / "adapters", tmp_path / "copy")))
    model, _, _ = load_resolved(resolved)
    assert model.layers[-1].self_attn.q_proj.linear.group_size == 32  # read, not assumed
    assert mx.allclose(model(PROMPT), trained, atol=1e-4)

    fused, _ = mlx_lm.load(str(fuse_adapter(resolved, tmp_path / "fused")))  # saved back unquantized
    assert fused.layers[-1].self_attn.q_proj.__class__.__name__ == "Linear"
    assert mx.allclose(fused(PROMPT), trained, atol=1e-3)


def test_an_adapter_whose_base_folder_is_not_here_finds_its_base_by_the_name_it_was_trained_from(
        settings, models_dir, tmp_path):
    trained = train_adapter(tmp_path / "adapters", f"{models_dir}/tiny")
    config = tmp_path / "adapters" / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"base_model": "/another/machine/tiny"}))

    resolved = ModelResolver(settings).resolve(str(tmp_path / "adapters"))
    assert resolved.path == f"{models_dir}/tiny"  # "tiny", resolved here
    assert mx.allclose(load_resolved(resolved)[0](PROMPT), trained, atol=1e-4)

    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_name": "nowhere/model"}))
    with pytest.raises(ModelNotFound, match="base model of adapter"):
        ModelResolver(settings).resolve(str(tmp_path / "adapters"))


def test_an_adapter_written_before_the_new_keys_still_serves_and_fuses(settings, models_dir, tmp_path):
    base = f"{models_dir}/tiny"
    trained = train_adapter(tmp_path / "run" / "adapters", base, bits=4, group_size=64)
    config = tmp_path / "run" / "adapters" / "adapter_config.json"
    old = {k: v for k, v in json.loads(config.read_text()).items() if k not in ("model_name", "quantization")}
    config.write_text(json.dumps(old))
    jobs = Jobs()
    jobs.completed["old"] = job("old", "job-1", tmp_path / "run", base)

    resolved = ModelResolver(settings, jobs=jobs).resolve("old")
    assert resolved.source == "experiment" and resolved.path == base
    assert resolved.adapter.quantization == {"bits": 4, "group_size": 64}  # what every old run used
    assert mx.allclose(load_resolved(resolved)[0](PROMPT), trained, atol=1e-4)
    fused, _ = mlx_lm.load(str(fuse_adapter(resolved, tmp_path / "fused")))
    assert mx.allclose(fused(PROMPT), trained, atol=1e-3)

    # Without even base_model (as mlx-lm's own adapters, or a hand-written one): the job's record.
    config.write_text(json.dumps({k: v for k, v in old.items() if k != "base_model"}))
    assert ModelResolver(settings, jobs=jobs).resolve("old").path == base


def test_an_experiment_is_read_from_the_store_once_until_a_newer_job_publishes(settings, models_dir, tmp_path):
    base = f"{models_dir}/tiny"
    runs = tmp_path / "runs" / "exp"
    train_adapter(runs / "job-1" / "adapters", base)
    jobs = Jobs()
    jobs.completed["exp"] = job("exp", "job-1", runs / "job-1", base)
    resolver = ModelResolver(settings, jobs=jobs)

    first = resolver.resolve("exp")
    for _ in range(5):
        assert resolver.resolve("exp") == first
        assert not resolver.adapter_changed(first)
    assert jobs.reads == 1

    # A newer job publishes its adapter, and is scored by its judge before it completes: until then
    # the completed one is served, and the store asked each time (its completion changes no file).
    train_adapter(runs / "job-2" / "adapters", base)
    jobs.newest["exp"] = job("exp", "job-2", runs / "job-2", base) | {"status": "running"}
    assert resolver.resolve("exp") == first and resolver.resolve("exp") == first
    assert jobs.reads == 3
    jobs.completed["exp"] = jobs.newest.pop("exp") | {"status": "completed"}
    assert resolver.adapter_changed(first)
    second = resolver.resolve("exp")
    assert second.adapter_path == str(runs / "job-2" / "adapters")
    assert resolver.resolve("exp") == second and jobs.reads == 4

    shutil.rmtree(runs / "job-2" / "adapters")
    assert resolver.adapter_changed(second)
    with pytest.raises(ModelNotFound, match="adapter folder .* is gone"):
        resolver.resolve("exp")


def test_a_served_experiment_is_loaded_again_once_trained_again(settings, models_dir, tmp_path):
    from workbench.providers.local_mlx import LocalMLX

    base = f"{models_dir}/tiny"
    runs = tmp_path / "runs" / "exp"
    train_adapter(runs / "job-1" / "adapters", base)
    jobs = Jobs()
    jobs.completed["exp"] = job("exp", "job-1", runs / "job-1", base)
    local = LocalMLX(settings, ModelResolver(settings, jobs=jobs))
    try:
        first = local.model("exp")
        assert all(local.model("exp") is first for _ in range(5)) and jobs.reads == 1

        train_adapter(runs / "job-2" / "adapters", base)
        jobs.completed["exp"] = job("exp", "job-2", runs / "job-2", base)
        second = local.model("exp")
        assert second is not first and second.resolved.adapter_path == str(runs / "job-2" / "adapters")
        assert local.model("exp") is second
    finally:
        local.close()
