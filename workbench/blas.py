"""Fast CPU math: put the system OpenBLAS under MLX before MLX is first imported.

The Linux `mlx[cpu]` wheel links the netlib reference BLAS (an fp32 2048^2 matmul: about 8 GFLOP/s
on the project's machines). Loading OpenBLAS with RTLD_GLOBAL first makes MLX's `cblas_sgemm`
resolve to it (about 250 GFLOP/s). See DESIGN.md, decision 7.

OpenBLAS picks its kernels for the CPU when it loads, unless OPENBLAS_CORETYPE names a core. A
platform may set that variable for every program (the project's machines set Haswell, AVX2 kernels):
on their AVX-512 CPUs the detected kernels (Cooperlake) ran an fp32 matmul at 440 GFLOP/s against 240.
So MLX's OpenBLAS picks its own kernels unless WORKBENCH_BLAS_CORETYPE says otherwise: `inherit`
keeps OPENBLAS_CORETYPE, a core name (Haswell, SkylakeX...) forces one, e.g. where detection fails.
The variable is put back as it was once the library has loaded, for every other program and library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import platform
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass

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
