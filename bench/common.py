"""What the MLX benchmarks share: the models they build, the fp32 copy every CPU side trains on, a
model's shape and size, the log tails a failed run shows, text rows from the shipped corpus, and a
job run to its end through an in-process Workbench with its step figures.

Importing it imports the workbench first, which puts the system OpenBLAS under MLX; that only works
while MLX is not yet loaded (workbench/blas.py), so a script imports this before mlx.core.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bare_step import speed

import workbench  # noqa: F401  (OpenBLAS under MLX, before mlx.core)
from workbench.models.builder import builtin_spec, ensure_built, folder_for


def build_models(models: Path, names: list[str]) -> dict[str, Path]:
    folders = {}
    for name in names:
        tic = time.perf_counter()
        existed = (folder_for(models, name) / "config.json").exists()
        folders[name] = ensure_built(builtin_spec(name), models)
        if not existed:
            print(f"built {name} in {time.perf_counter() - tic:.0f} s ({folders[name]})", flush=True)
    return folders


def fp32_copy(folder: Path) -> Path:
    """The model with its bf16/fp16 weights stored as fp32, beside it (the folder itself when it is
    fp32 already): what every side trains on the CPU.

    Our trainer casts half-precision weights to fp32 on the CPU (bf16 products do not go through BLAS);
    mlx-lm trains in the stored dtype. One fp32 folder gives both the same math."""
    import mlx.core as mx

    build = folder / "workbench_build.json"
    if build.exists() and json.loads(build.read_text()).get("dtype") == "float32":
        return folder
    dest = folder.with_name(folder.name + "-fp32")
    if (dest / "config.json").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=folder.parent))
    try:
        for item in folder.iterdir():
            if item.suffix == ".safetensors":
                weights = mx.load(str(item))
                weights = {k: v.astype(mx.float32) if v.dtype in (mx.bfloat16, mx.float16) else v
                           for k, v in weights.items()}
                mx.save_safetensors(str(tmp / item.name), weights, metadata={"format": "mlx"})
                del weights
            elif item.is_file():
                shutil.copy2(item, tmp / item.name)
        index = tmp / "model.safetensors.index.json"
        if index.exists():  # total_size is informational; keep it true
            data = json.loads(index.read_text())
            data.setdefault("metadata", {})["total_size"] = sum(
                f.stat().st_size for f in tmp.glob("*.safetensors"))
            index.write_text(json.dumps(data, indent=2))
        build = tmp / "workbench_build.json"
        if build.exists():
            build.write_text(json.dumps({**json.loads(build.read_text()), "dtype": "float32",
                                         "cast_from": folder.name}, indent=2))
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def model_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def layer_count(folder: Path) -> int:
    return model_config(folder)["num_hidden_layers"]


def parameter_count(folder: Path) -> int:
    """Every stored weight's elements (embedding included), from the safetensors headers."""
    total = 0
    for file in folder.glob("*.safetensors"):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def print_tails(logs: list[Path], chars: int = 3000) -> None:
    """The end of each log that exists, on stderr: what a failed run's servers and workers said."""
    for log in logs:
        if log.exists():
            print(f"--- log tail ({log}) ---\n{log.read_text(errors='replace')[-chars:]}", file=sys.stderr)


def corpus_rows(count: int, chars: int) -> list[dict]:
    """Text rows long enough to fill `chars` characters, cut from the corpus the workbench ships."""
    corpus = Path(__file__).resolve().parents[1] / "workbench" / "models" / "corpus"
    text = " ".join(p.read_text() for p in sorted(corpus.glob("*.txt")))
    text = " ".join(text.split())
    while len(text) < chars * 2:
        text = text + " " + text
    step = max((len(text) - chars) // count, 1)
    return [{"text": text[i * step:i * step + chars]} for i in range(count)]


def run_job(bench, config, timeout: float) -> dict:
    """A job through `Workbench` in this process (its workers as under the service), to its end."""
    from workbench.training.config import TrainingConfig

    name = config["experiment_name"]
    bench.start_training(TrainingConfig(**config))
    job = bench.wait(name, timeout)
    if job.status in ("queued", "running"):
        raise SystemExit(f"job {name} did not end within {timeout:.0f} s")
    if job.status != "completed":
        print_tails(sorted((bench.settings.home_dir / "runs").glob("*/worker.log")))
        raise SystemExit(f"job {name} {job.status}: {job.error}")
    steps = [m for m in bench.metrics(name).steps if m.tokens]
    step_one = next(e.time for e in bench.events(name).events if e.type == "metrics")
    return {"job": job, "steps": steps, "start_to_step_1": step_one - job.started_at}


def job_figures(result: dict, warmup: int) -> dict:
    steps = result["steps"]
    seconds = [m.tokens / m.tokens_per_s for m in steps]
    return {
        **speed([m.tokens for m in steps], seconds, warmup),
        "start_to_step_1": result["start_to_step_1"],
        "peak_mb": max(m.peak_memory_mb for m in steps),
        "policy": result["job"].policy,
        "losses": [m.loss for m in steps],
    }
