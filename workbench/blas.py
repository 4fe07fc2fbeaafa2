"""Fast CPU math: put the system OpenBLAS under MLX before MLX is first imported.

The Linux `mlx[cpu]` wheel links the netlib reference BLAS (an fp32 2048^2 matmul: about 8 GFLOP/s
on the project's machines). Loading OpenBLAS with RTLD_GLOBAL first makes MLX's `cblas_sgemm`
resolve to it (about 250 GFLOP/s). See docs/architecture.md, "How a job computes".

OpenBLAS picks its kernels for the CPU when it loads, unless OPENBLAS_CORETYPE names a core. A
platform may set that variable for every program (the project's machines set Haswell, AVX2 kernels):
on their AVX-512 CPUs the detected kernels (Cooperlake) ran an fp32 matmul at 440 GFLOP/s against 240.
So MLX's OpenBLAS picks its own kernels unless WORKBENCH_BLAS_CORETYPE says otherwise: `inherit`
keeps OPENBLAS_CORETYPE, a core name (Haswell, SkylakeX...) forces one, e.g. where detection fails.
The variable is put back as it was once the library has loaded, for every other program and library.
Training workers go further: `calibrate_core` times each core the CPU can run and the worker takes
the fastest (workbench/training/worker.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import logging
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Debian's libopenblas0-pthread, then any libopenblas the loader knows of.
_CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas*.so.0",
)


@dataclass(frozen=True)
class BlasInfo:
    library: str  # "openblas", "accelerate" or "reference"
    path: str | None
    detail: str  # OpenBLAS's own configuration line, which names the core it runs
    fast: bool
    coretype: str = "auto"  # WORKBENCH_BLAS_CORETYPE: auto, inherit or a core name

    def as_dict(self) -> dict:
        return asdict(self)


_active: BlasInfo | None = None


def _find_openblas() -> str | None:
    explicit = os.environ.get("WORKBENCH_BLAS_PATH")
    if explicit:
        return explicit
    # A conda environment's own libopenblas (environment.yml installs it), then the system's.
    for pattern in (f"{sys.prefix}/lib/libopenblas.so.0", *_CANDIDATES):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return ctypes.util.find_library("openblas")


@contextmanager
def _openblas_coretype(coretype: str):
    """OPENBLAS_CORETYPE as `coretype` asks while OpenBLAS loads (it reads it then), restored after."""
    inherited = os.environ.get("OPENBLAS_CORETYPE")
    if coretype == "auto":
        os.environ.pop("OPENBLAS_CORETYPE", None)
    elif coretype != "inherit":
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        yield
    finally:
        if inherited is None:
            os.environ.pop("OPENBLAS_CORETYPE", None)
        else:
            os.environ["OPENBLAS_CORETYPE"] = inherited


def load_fast_blas() -> BlasInfo:
    """Load OpenBLAS globally if it can still take effect; remember and return what is active."""
    global _active
    if _active is not None:
        return _active
    if platform.system() == "Darwin":
        _active = BlasInfo("accelerate", None, "MLX uses Metal and Accelerate on macOS", True)
        return _active
    if "mlx.core" in sys.modules:
        _active = BlasInfo("reference", None, "mlx.core was imported before the workbench", False)
    else:
        path = _find_openblas()
        if path is None:
            _active = BlasInfo("reference", None, "no OpenBLAS found on this machine", False)
        else:
            coretype = os.environ.get("WORKBENCH_BLAS_CORETYPE", "auto")
            try:
                with _openblas_coretype(coretype):
                    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                config = lib.openblas_get_config
                config.restype = ctypes.c_char_p
                _active = BlasInfo("openblas", path, config().decode(), True, coretype)
            except (OSError, AttributeError) as exc:
                _active = BlasInfo("reference", None, f"could not load {path}: {exc}", False)
    if not _active.fast:
        log.warning(
            "MLX runs on the reference BLAS (%s): CPU training and generation will be slow. "
            "Install Debian's libopenblas0-pthread or set WORKBENCH_BLAS_PATH.",
            _active.detail,
        )
    return _active


# How OpenBLAS's kernels are timed for a core type: a fresh process loads OpenBLAS with that core
# (it reads OPENBLAS_CORETYPE only when it loads) and multiplies at a LoRA step's typical shape.
_TIME_CORE = """
import json, time, workbench, mlx.core as mx
from workbench.blas import load_fast_blas
a, b = mx.random.normal((256, 1024)), mx.random.normal((1024, 3072))
mx.eval(a, b)
for _ in range(3):
    mx.eval(a @ b)
tic, n = time.perf_counter(), 10
for _ in range(n):
    mx.eval(a @ b)
info = load_fast_blas()
print(json.dumps({"core": info.detail.split()[-2] if info.fast else None,
                  "gflops": round(2 * 256 * 1024 * 3072 * n / (time.perf_counter() - tic) / 1e9, 1)}))
"""


def core_candidates(flags: set[str]) -> list[str]:
    """WORKBENCH_BLAS_CORETYPE values worth timing on a CPU with these flags: what OpenBLAS detects,
    what the platform sets (OPENBLAS_CORETYPE), and the cores the instruction set can run. A virtual
    machine's CPU can hide its model, and OpenBLAS 0.3.21 then ran an AMX Xeon on its SSE3 (Prescott)
    kernels: 10 tokens/s for a Qwen3-0.6B LoRA step where PyTorch did 51 (bench/RESULTS.md)."""
    candidates = ["auto"] + (["inherit"] if os.environ.get("OPENBLAS_CORETYPE") else [])
    candidates += [core for core, needs in (("Cooperlake", "avx512_bf16"), ("SkylakeX", "avx512f"),
                                            ("Haswell", "avx2")) if needs in flags]
    return candidates


def calibrate_core(cache: Path, flags: set[str], candidates: list[str] | None = None,
                   measure: bool = True, timeout: float = 60.0) -> dict | None:
    """The fastest OpenBLAS core type on this machine, measured once (a few seconds) and cached in
    `cache`: {"choice": a WORKBENCH_BLAS_CORETYPE value, "gflops": {candidate: GFLOP/s}, "cores":
    {candidate: the core OpenBLAS ran}}. Without `measure`, only what is cached (or None)."""
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        if not measure:
            return None
    gflops, cores = {}, {}
    for candidate in candidates or core_candidates(flags):
        env = os.environ | {"WORKBENCH_BLAS_CORETYPE": candidate}
        try:
            done = subprocess.run([sys.executable, "-c", _TIME_CORE], env=env, capture_output=True,
                                  text=True, timeout=timeout, check=True)
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError) as exc:
            log.warning("could not time OpenBLAS core %s: %s", candidate, exc)
            continue
        if found["core"] and found["core"] not in cores.values():  # the same core twice: time it once
            gflops[candidate], cores[candidate] = found["gflops"], found["core"]
    if not gflops:
        return {"choice": "auto", "gflops": {}, "cores": {}}
    result = {"choice": max(gflops, key=gflops.get), "gflops": gflops, "cores": cores}
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(result))
    os.replace(temporary, cache)
    return result
