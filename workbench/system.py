"""What the machine and MLX report: memory, device, BLAS, health."""

from __future__ import annotations

import os
import platform
import shutil
from functools import cache
from pathlib import Path

import psutil

from workbench.blas import load_fast_blas

_MB = 1024 * 1024


@cache
def mlx_available() -> bool:
    try:
        import mlx.core as mx

        mx.eval(mx.array([1.0]) + 1)
    except Exception:
        return False
    return True


def memory_usage() -> dict:
    vm = psutil.virtual_memory()
    usage = {
        "process_rss_mb": round(psutil.Process(os.getpid()).memory_info().rss / _MB, 1),
        "system_total_mb": round(vm.total / _MB, 1),
        "system_available_mb": round(vm.available / _MB, 1),
        "system_used_percent": vm.percent,
    }
    if mlx_available():
        import mlx.core as mx

        usage |= {
            "mlx_active_mb": round(mx.get_active_memory() / _MB, 1),
            "mlx_peak_mb": round(mx.get_peak_memory() / _MB, 1),
            "mlx_cache_mb": round(mx.get_cache_memory() / _MB, 1),
        }
    return usage


def device_info() -> dict:
    info = {"platform": f"{platform.system()} {platform.machine()}", "cpu_count": os.cpu_count()}
    if mlx_available():
        import mlx.core as mx

        device = mx.default_device()
        info["mlx_device"] = "gpu" if device.type == mx.gpu else "cpu"
        if mx.cuda.is_available():
            info["backend"] = "cuda"
        elif mx.metal.is_available():
            info["backend"] = "metal"
        else:
            info["backend"] = "cpu"
    return info


# Nearly full: less free than this share of the disk, or than 1 GiB, whichever is less (a share
# alone would call a large disk with plenty of room full, a size alone a small one never).
_FULL_SHARE = 0.02
_FULL_BYTES = 1024 * _MB


def disk_usage(home: Path) -> list[dict]:
    """Free space of each filesystem the home's data lives on (the home, and `runs/` where the
    checkpoints go, when it is a mount of its own), and whether it is nearly full."""
    seen, disks = set(), []
    for path in (home, home / "runs"):
        if not path.exists():
            continue
        device = os.stat(path).st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        disks.append({"path": str(path), "free_mb": round(usage.free / _MB, 1),
                      "total_mb": round(usage.total / _MB, 1),
                      "nearly_full": usage.free < min(_FULL_SHARE * usage.total, _FULL_BYTES)})
    return disks


def health(home: Path | None = None) -> dict:
    """healthy, or degraded with the reasons a person can fix."""
    problems = []
    available = mlx_available()
    if not available:
        problems.append("mlx cannot run here: install mlx[cpu] on Linux, mlx on macOS")
    blas = load_fast_blas()
    if not blas.fast:
        problems.append(f"CPU math uses the reference BLAS ({blas.detail}); install libopenblas0-pthread")
    memory = memory_usage()
    if memory["system_available_mb"] < 0.05 * memory["system_total_mb"]:
        problems.append("less than 5% of system memory is available")
    disks = disk_usage(home) if home is not None else []
    for disk in disks:
        if disk["nearly_full"]:
            problems.append(f"the disk of {disk['path']} is nearly full: {disk['free_mb']} MB free of "
                            f"{disk['total_mb']} MB; new training jobs are refused until there is room")
    return {
        "status": "degraded" if problems else "healthy",
        "problems": problems,
        "mlx_available": available,
        "memory_usage": memory,
        "device": device_info(),
        "blas": blas.as_dict(),
        "disk": disks,
    }
