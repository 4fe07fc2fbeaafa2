"""The bare compiled training step, for the training benchmarks to measure a job against.

Built as a job builds it (workbench/training/run.py): the compute policy's dtype, LoRA products, loss
and, on x86-64 CPUs, fast kernels; one `mx.compile` of value_and_grad and AdamW's update; random
full-length batches. Nothing else runs around it: no data pipeline, no job store, no reporting.

`floor=True` measures MLX's LoRA-free floor on the same model: everything frozen but the first block's
input norm, so the backward pass still carries the input gradient through every layer (as LoRA's must)
but there are no LoRA products and almost nothing to update: the least work any LoRA step on MLX can
do. A goal above the floor asks more of MLX itself than of the trainer built on it.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path


def speed(tokens: list[int], seconds: list[float], warmup: int) -> dict:
    """Tokens/s over the steps after warm-up: in total, and at the median step."""
    rates = sorted(t / s for t, s in zip(tokens[warmup:], seconds[warmup:]))
    return {"tokens_per_s": sum(tokens[warmup:]) / sum(seconds[warmup:]),
            "median_tokens_per_s": rates[len(rates) // 2], "first_step_s": seconds[0]}


def bare_step(folder: Path, batch: int, seq: int, steps: int, warmup: int, *, rank: int = 8,
              alpha: float = 16.0, targets: str | None = None, floor: bool = False,
              fast_kernels: str = "auto", home: Path | None = None) -> dict:
    """Tokens/s (total and median step), first step's seconds and peak memory of `steps` bare steps on
    batches of `batch` x `seq` tokens: LoRA on `targets` (comma-separated; default all projections),
    or the LoRA-free floor. `fast_kernels` as a job's setting: auto takes the CPU kernels that
    calibration (cached under `home`, else a temporary folder) measures faster; on or off forces them."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import mlx_lm
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from workbench.training import fastmath, losses, policy
    from workbench.training.run import lora_keys

    chosen = policy.choose(fast_kernels=fast_kernels)
    policy.apply_limits(chosen)
    model, _ = mlx_lm.load(str(folder))
    policy.prepare(model, chosen)
    model.freeze()
    if floor:
        model.layers[0].input_layernorm.unfreeze()
    else:
        lora = {"rank": rank, "scale": alpha / rank, "dropout": 0.0}
        if targets:
            lora["keys"] = lora_keys(model, targets.split(","))
        linear_to_lora_layers(model, len(model.layers), lora)
        policy.adapt_lora(model, chosen)
    mx.eval(model.parameters())
    with tempfile.TemporaryDirectory() as scratch:
        chosen = policy.calibrated(chosen, model, batch, seq, home or Path(scratch), fast_kernels)
    policy.apply_limits(chosen)
    optimizer = optim.AdamW(learning_rate=1e-4, weight_decay=0.0)
    loss_and_grad = nn.value_and_grad(model, losses.loss_function(False, fast="loss" in chosen.fast_kernels))
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, lengths):
        (loss, count), grads = loss_and_grad(model, tokens, lengths)
        optimizer.update(model, grads)
        return loss, count

    vocab = model.args.vocab_size
    lengths = mx.array([[0, seq]] * batch)
    times, counts = [], []
    mx.reset_peak_memory()
    with fastmath.model_kernels(model, chosen.fast_kernels):
        for i in range(steps):
            tokens = mx.random.randint(0, vocab, (batch, seq), key=mx.random.key(i))
            mx.eval(tokens)
            tic = time.perf_counter()
            loss, count = step(tokens, lengths)
            mx.eval(loss, count, state)
            times.append(time.perf_counter() - tic)
            counts.append(count.item())
    return {**speed(counts, times, warmup), "peak_mb": mx.get_peak_memory() / 2**20,
            "fast_kernels": list(chosen.fast_kernels), "calibration": chosen.calibration}
