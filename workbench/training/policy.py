"""How a job computes on the backend it finds: dtype, kernels, memory limits, kernel cache.

Chosen once per run and written into the job's status, so a user sees why a run is as fast (or as
big) as it is. The choices come from measurements (docs/architecture.md, "How a job computes";
bench/RESULTS.md):
- CPU: fp32. bf16 and fp16 products do not go through BLAS there and trained about 8x slower.
  A quantized base (QLoRA) keeps its packed weights but multiplies through BLAS after dequantizing
  each layer just in time (workbench/training/quantized.py): MLX's own quantized CPU matmul does
  about 3 GFLOP/s.
- GPU: bf16, and MLX's own quantized kernels, which are fast there. LoRA's weights stay fp32 for the
  optimizer, but their products run in bf16 (as PyTorch's autocast does): in fp32 they would upcast
  every layer input they touch. CUDA compiles its kernels at run
  time (72 s for a Qwen3-1.7B step): they are cached under the workbench home, so the next job
  starts warm.
- CPU: MLX keeps at most 32 MB of freed buffers there by default, so every step's large arrays
  (logits, the loss's intermediates: 155 MB each for Qwen3-0.6B at 255 tokens) went back to the
  system and were faulted in again the next step. The cache limit defaults to the memory limit (or
  the machine's memory): buffers are reused, which cut a Qwen3-0.6B LoRA step by 18% on an AMD
  EPYC. It does not raise the peak, since the cache holds only what the step already used.
- CPU: MLX computes `exp` (and `sigmoid`, `softmax`) there one element at a time, so the loss's
  cross-entropy, and the model's SwiGLU and attention softmax while the job trains, can take their
  exponentials from a faster `exp` built of MLX's vectorised arithmetic
  (workbench/training/fastmath.py): 13 to 18% of a Qwen3-0.6B step for the loss, 9 to 16% more
  for the model's, on an AMD EPYC.
- Both CPU choices depend on the processor, so each is measured at the job's shapes on the machine
  that runs it, unless the job forces it (`fast_kernels`, `cache_limit_mb`): see
  workbench/training/calibration.py. The figures it decided on are part of the policy.
- Everywhere: the training step is compiled with `mx.compile`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import psutil
from mlx.utils import tree_map
from mlx_lm.tuner.lora import LoRALinear

from workbench import blas
from workbench.training import calibration
from workbench.training.quantized import dequantize_products

_MB = 1024 * 1024
_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


@dataclass(frozen=True)
class ComputePolicy:
    backend: str  # "cpu" or "gpu"
    device: str
    compute_dtype: str  # dtype the base weights are cast to on load
    quantized_products: str  # "dequantize-to-fp32" (CPU) or "mlx-quantized-kernels" (GPU)
    lora_products: str  # dtype LoRA's low-rank products run in (its weights stay fp32)
    compiled_step: bool
    fast_kernels: tuple[str, ...]  # of loss, swiglu, attention: those on fastmath.py's exp
    blas: str | None  # the CPU BLAS MLX uses
    blas_core: str | None  # the kernels OpenBLAS runs: the core type measured fastest (calibration.blas_core)
    kernel_cache: str | None  # MLX_PTX_CACHE_DIR on CUDA
    memory_limit_mb: int | None
    cache_limit_mb: int | None
    calibration: dict | None = None  # what the CPU choices were measured to be, on this machine

    def as_dict(self) -> dict:
        return asdict(self)


def current_backend() -> str:
    return "gpu" if mx.default_device().type == mx.gpu else "cpu"


def kernel_cache_dir(home: Path) -> Path:
    return home / "cache" / "mlx-kernels"


def use_kernel_cache(home: Path) -> str:
    """Point MLX's CUDA kernel cache under the workbench home (unless the user set it).
    Must run before the first kernel is compiled; the service and workers call it at start."""
    folder = kernel_cache_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    return os.environ.setdefault("MLX_PTX_CACHE_DIR", str(folder))


def choose(memory_limit_mb: int | None = None, cache_limit_mb: int | None = None,
           fast_kernels: str = "auto") -> ComputePolicy:
    """The policy before the model is known; on the CPU, `calibrated` then settles what `auto` left
    open (the fast kernels stay off until measured faster)."""
    gpu = current_backend() == "gpu"
    info = mx.device_info()
    return ComputePolicy(
        backend="gpu" if gpu else "cpu",
        device=str(info.get("device_name") or mx.default_device()),
        compute_dtype="bfloat16" if gpu else "float32",
        quantized_products="mlx-quantized-kernels" if gpu else "dequantize-to-fp32",
        lora_products="bfloat16" if gpu else "float32",
        compiled_step=True,
        fast_kernels=calibration.FAST_KERNELS if fast_kernels == "on" and not gpu else (),
        blas=None if gpu else blas.load_fast_blas().library,
        blas_core=None if gpu else _blas_core(blas.load_fast_blas()),
        kernel_cache=os.environ.get("MLX_PTX_CACHE_DIR") if gpu else None,
        memory_limit_mb=memory_limit_mb,
        cache_limit_mb=cache_limit_mb if cache_limit_mb is not None or gpu
        else memory_limit_mb or psutil.virtual_memory().total // _MB,
    )


def calibrated(chosen: ComputePolicy, model: nn.Module, batch_size: int, max_seq_length: int, home: Path,
               fast_kernels: str = "auto", cache_limit_mb: int | None = None) -> ComputePolicy:
    """On the CPU, the choices the job left to measurement (`fast_kernels` auto, no `cache_limit_mb`)
    as calibration found them on this machine at the job's shapes; anything forced stays as it is."""
    if chosen.backend != "cpu" or (fast_kernels != "auto" and cache_limit_mb is not None):
        return chosen
    # The cache limit is measured only when the job left it open.
    found = calibration.calibrate(model, batch_size, max_seq_length, home,
                                  chosen.cache_limit_mb if cache_limit_mb is None else None)
    return replace(
        chosen,
        fast_kernels=tuple(found.fast_kernels) if fast_kernels == "auto" else chosen.fast_kernels,
        cache_limit_mb=calibration.MLX_DEFAULT_CACHE_MB
        if cache_limit_mb is None and found.cache_limit == "mlx-default" else chosen.cache_limit_mb,
        calibration=found.model_dump() | {"blas": calibration.blas_core(home, measure=False)},
    )


def _blas_core(info: blas.BlasInfo) -> str | None:
    """OpenBLAS's core, from its configuration line ("OpenBLAS 0.3.21 ... Cooperlake MAX_THREADS=64")."""
    return info.detail.split()[-2] if info.library == "openblas" else None


def apply_limits(policy: ComputePolicy) -> None:
    if policy.memory_limit_mb:
        mx.set_memory_limit(policy.memory_limit_mb * _MB)
    if policy.cache_limit_mb is not None:
        mx.set_cache_limit(policy.cache_limit_mb * _MB)


def prepare(model: nn.Module, policy: ComputePolicy) -> int:
    """Cast the base's floating weights to the compute dtype and, on the CPU, make quantized layers
    multiply through BLAS. Returns how many quantized layers were switched."""
    dtype = getattr(mx, policy.compute_dtype)
    model.update(tree_map(lambda p: p.astype(dtype) if p.dtype in _FLOATS and p.dtype != dtype else p,
                          model.parameters()))
    if policy.quantized_products == "dequantize-to-fp32":
        return dequantize_products(model)
    return 0


class ComputeDtypeLoRALinear(LoRALinear):
    """mlx-lm's LoRA layer with its low-rank products in the input's dtype; the fp32 weights are cast
    on the way in, so gradients and optimizer state stay fp32."""

    def __call__(self, x):
        y = self.linear(x)
        z = (self.dropout(x) @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype)
        return y + (self.scale * z).astype(x.dtype)


def adapt_lora(model: nn.Module, policy: ComputePolicy) -> int:
    """After LoRA layers are in place: run their products in the policy's dtype. Returns how many."""
    if policy.lora_products == "float32":
        return 0  # fp32 inputs: mlx-lm's layer already computes in fp32
    changed = 0
    for _, module in model.named_modules():
        if type(module) is LoRALinear:
            module.__class__ = ComputeDtypeLoRALinear  # same parameters, different product
            changed += 1
    return changed
