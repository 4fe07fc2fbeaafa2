"""Which CPU kernels a job runs, decided by measuring both sides on the machine that runs it.

The fast exponentials of workbench/training/fastmath.py made a Qwen3-0.6B LoRA step 9 to 18% faster
on an AMD EPYC and, before their masked values were made exact zeros, three times slower on an Intel
Xeon (bench/RESULTS.md); MLX's default 32 MB CPU cache cost 18% of a step on one machine and nothing
on another. A choice that depends on the processor is therefore measured, not assumed: a few
compiled forward and backward passes of the model's first block (MLX's kernels, then the fast SwiGLU,
then the fast attention) and of the loss (MLX's cross-entropy, then the fast one), at the job's
shapes; then the loss's passes under MLX's default cache limit and under the policy's. A side is
taken only where it measured faster. Decisions are cached under the home, keyed by CPU model,
instruction-set flags, MLX version and shapes, so the next job on the same machine starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from pydantic import BaseModel

from workbench import blas
from workbench.training import fastmath, losses

FAST_KERNELS = ("loss", "swiglu", "attention")
MLX_DEFAULT_CACHE_MB = 32  # MLX's CPU cache limit when nobody sets one
_MB = 1024 * 1024
# Calibrating at the full shapes of a large job would cost as much as a step of it: beyond this many
# tokens the kernels' relative speeds no longer change.
_MAX_TOKENS = 1024


class Calibration(BaseModel):
    """A machine's measured choices for one shape of job, and the figures they were made on."""

    key: str
    cpu: str
    mlx: str
    shape: dict[str, int]
    fast_kernels: list[str]
    cache_limit: str  # "memory" (the policy's) or "mlx-default" (32 MB)
    timings_ms: dict[str, dict[str, float]]  # per measured part: each side's median pass
    seconds: float  # what the calibration itself took
    cached: bool = False


def cpu_info() -> tuple[str, set[str]]:
    """The processor's model name and instruction-set flags (empty where /proc/cpuinfo is absent)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())
    except OSError:
        pass  # not Linux: the model name and MLX version still key a calibration
    model = info.get("model name") or platform.processor() or platform.machine()
    return model, set((info.get("flags") or info.get("Features") or "").split())


def cpu_identity() -> dict[str, str]:
    """The processor as calibration keys it: model name, a digest of its instruction-set flags, MLX."""
    model, flags = cpu_info()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return {"cpu": model, "flags": digest, "mlx": mx.__version__}


def blas_core(home: Path, measure: bool = True) -> dict | None:
    """The OpenBLAS core type measured fastest on this machine (blas.calibrate_core), cached under
    the home by CPU and library. Only for the OpenBLAS the workbench loads on Linux; without
    `measure`, only a decision already cached."""
    info = blas.load_fast_blas()
    if info.library != "openblas":
        return None
    identity = cpu_identity()
    text = json.dumps({**identity, "library": info.path}, sort_keys=True)
    cache = home / "cache" / "calibration" / f"blas-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    return blas.calibrate_core(cache, cpu_info()[1], measure=measure)


def job_shape(model: nn.Module, batch_size: int, max_seq_length: int) -> dict[str, int]:
    """The shapes the measured passes run at: the job's, capped at _MAX_TOKENS tokens."""
    args = model.args
    seq = min(max_seq_length, _MAX_TOKENS)
    return {"batch": max(1, min(batch_size, _MAX_TOKENS // seq)), "seq": seq,
            "hidden": args.hidden_size, "intermediate": getattr(args, "intermediate_size", 0),
            "heads": args.num_attention_heads,
            "kv_heads": getattr(args, "num_key_value_heads", None) or args.num_attention_heads,
            "vocab": args.vocab_size}


def cache_path(home: Path, identity: dict[str, str], shape: dict[str, int]) -> tuple[str, Path]:
    text = json.dumps({**identity, **shape}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return key, home / "cache" / "calibration" / f"{key}.json"


def calibrate(model: nn.Module, batch_size: int, max_seq_length: int, home: Path,
              cache_limit_mb: int | None, repeats: int = 3, kernels: dict | None = None) -> Calibration:
    """The cached decision for this machine and shape, or a new one measured now on `model`'s first
    block and loss. `kernels` replaces fastmath's functions (a test makes one side slower with it)."""
    identity = cpu_identity()
    shape = job_shape(model, batch_size, max_seq_length)
    key, path = cache_path(home, identity, shape)
    try:
        return Calibration.model_validate_json(path.read_text()).model_copy(update={"cached": True})
    except (OSError, ValueError):
        pass  # not measured yet on this machine (or an unreadable file): measure again

    tic = time.perf_counter()
    kernels = kernels or {"swiglu": fastmath.swiglu, "attention": fastmath.attention,
                          "cross_entropy": losses.cross_entropy}
    sides = {"mlx": {}} | {name: {name: kernels[name]} for name in ("swiglu", "attention")}
    # In eval mode: LoRA's dropout would draw from the run's random state, and a resumed run (which
    # finds the decision cached) would then draw differently.
    training = model.training
    model.eval()
    try:
        timings = {"block": time_block(model, shape, sides, repeats),
                   "loss": _time_loss(shape, kernels["cross_entropy"], repeats)}
    finally:
        model.train(training)
    fast = [name for name in ("swiglu", "attention") if timings["block"][name] < timings["block"]["mlx"]]
    if timings["loss"]["fast"] < timings["loss"]["mlx"]:
        fast.insert(0, "loss")
    cache_limit = "memory"
    if cache_limit_mb is not None and cache_limit_mb > MLX_DEFAULT_CACHE_MB:
        chosen_ce = kernels["cross_entropy"] if "loss" in fast else nn.losses.cross_entropy
        timings["cache"] = _time_cache(shape, chosen_ce, cache_limit_mb, repeats)
        if timings["cache"]["mlx-default"] < timings["cache"]["memory"]:
            cache_limit = "mlx-default"
    result = Calibration(key=key, cpu=identity["cpu"], mlx=identity["mlx"], shape=shape,
                         fast_kernels=[k for k in FAST_KERNELS if k in fast], cache_limit=cache_limit,
                         timings_ms=timings, seconds=round(time.perf_counter() - tic, 2))
    _write(path, result)
    return result


def _median_ms(run: Callable[[], None], repeats: int) -> float:
    run()  # compiles, and touches every buffer once
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(time.perf_counter() - tic)
    return round(statistics.median(times) * 1000, 3)


def time_block(model: nn.Module, shape: dict, sides: dict[str, dict], repeats: int) -> dict[str, float]:
    """Median milliseconds of the first block's forward and backward (to its input), compiled, for
    each side: the kernels it swaps in ({} for MLX's own). The weights' own gradients are left out:
    the same products on every side, they would only dilute the difference."""
    block = model.layers[0]
    # An explicit key: the run's own random state (dropout) must not depend on whether a cached
    # decision spared this measurement.
    x = mx.random.normal((shape["batch"], shape["seq"], shape["hidden"]), key=mx.random.key(0))

    def forward(inputs):
        return block(inputs, mask="causal", cache=None).astype(mx.float32).square().mean()

    timings = {}
    for side, swap in sides.items():
        with fastmath.model_kernels(model, swap):
            step = mx.compile(mx.value_and_grad(forward))  # traced here, with this side's kernels
            timings[side] = _median_ms(lambda step=step: mx.eval(step(x)), repeats)
    return timings


def _loss_inputs(shape: dict) -> tuple[mx.array, mx.array]:
    key = mx.random.key(1)
    logits = mx.random.normal((shape["batch"], shape["seq"], shape["vocab"]), key=key) * 4
    targets = mx.random.randint(0, shape["vocab"], (shape["batch"], shape["seq"]), key=key)
    return logits, targets


def _loss_pass(cross_entropy) -> Callable:
    return mx.compile(mx.value_and_grad(lambda logits, targets: cross_entropy(logits, targets).mean()))


def _time_loss(shape: dict, fast_cross_entropy, repeats: int) -> dict[str, float]:
    logits, targets = _loss_inputs(shape)
    timings = {}
    for side, cross_entropy in (("mlx", nn.losses.cross_entropy), ("fast", fast_cross_entropy)):
        step = _loss_pass(cross_entropy)
        timings[side] = _median_ms(lambda step=step: mx.eval(step(logits, targets)), repeats)
    return timings


def _time_cache(shape: dict, cross_entropy, cache_limit_mb: int, repeats: int) -> dict[str, float]:
    """The loss's passes (a job's largest arrays) with MLX's default cache and with the policy's."""
    logits, targets = _loss_inputs(shape)
    step = _loss_pass(cross_entropy)
    timings = {}
    for side, limit in (("mlx-default", MLX_DEFAULT_CACHE_MB), ("memory", cache_limit_mb)):
        previous = mx.set_cache_limit(limit * _MB)
        try:
            timings[side] = _median_ms(lambda: mx.eval(step(logits, targets)), repeats)
        finally:
            mx.set_cache_limit(previous)
            mx.clear_cache()
    return timings


def _write(path: Path, result: Calibration) -> None:
    """Atomically: a job that reads the file while another writes it sees the old one or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(result.model_dump_json(indent=1, exclude={"cached"}))
    os.replace(temporary, path)
