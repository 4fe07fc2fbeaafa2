"""The CPU kernels a job chooses, measured on this machine: why the fast exp once made an Intel Xeon's
LoRA step 3x slower, and what calibration chooses now.

    python bench/cpu_kernels.py --models /tmp/wb-bench-models        # Qwen3-0.6B shape, 1 x 256, fp32
    python bench/cpu_kernels.py --quick                               # toy size, on the tiny model

Rows, each measured in this run:
- subnormal operands: an fp32 product and an element-wise multiply with every input 1.2e-38 (the
  smallest normal float, whose products are subnormal) against the same work on ordinary numbers. Intel
  cores compute subnormal results in microcode; AMD's Zen cores in hardware.
- the first block's forward and backward with attention on the fast exp as it was (masked scores
  clipped to 1.2e-38) and as it is (masked scores exactly 0), against MLX's own softmax.
- the bare compiled LoRA step (bench/bare_step.py) with the fast kernels off (as mlx-lm computes),
  forced on, and as calibration chooses them (auto), with what it chose.
- OpenBLAS's product speed on each core type this CPU can run, against the core it detects; the
  run then goes on with the fastest, as a training worker does (workbench/training/worker.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import workbench  # noqa: F401  (OpenBLAS under MLX before anything imports mlx)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_step import bare_step  # noqa: E402
from common import build_models, fp32_copy  # noqa: E402
from table import machine_line, print_table, row  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--models", type=Path, help="where models are built (default: a temp dir)")
parser.add_argument("--model", default="random/qwen3-0.6b")
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--seq", type=int, default=256)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--quick", action="store_true", help="toy size on the tiny model (CI's smoke run)")
parser.add_argument("--json", type=Path, help="also write the figures here")
parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "wb-bench-kernels",
                    help="where calibrations are cached (kept across the restart on the fastest BLAS core)")


def blas_rows(home: Path) -> list[list[str]]:
    """OpenBLAS on each core type, against the one it detects; restarts this script on the fastest."""
    from workbench.training import calibration

    found = calibration.blas_core(home) or {"choice": "auto", "gflops": {}, "cores": {}}
    if "WORKBENCH_BLAS_CORETYPE" not in os.environ and found["choice"] != "auto":
        os.environ["WORKBENCH_BLAS_CORETYPE"] = found["choice"]
        os.execv(sys.executable, [sys.executable, *sys.argv])  # OpenBLAS reads its core only when it loads
    detected = found["gflops"].get("auto")
    rows = []
    for candidate, gflops in found["gflops"].items():
        chosen = " (chosen)" if candidate == found["choice"] else ""
        core = found["cores"][candidate]
        rows.append(row(f"OpenBLAS fp32 product on {core} ({candidate}){chosen}: GFLOP/s",
                        f"{gflops:.0f}", f"{detected:.0f}" if detected else "-",
                        gflops / detected if detected else None))
    return rows


def best_ms(run, repeats: int = 3) -> float:
    run()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(time.perf_counter() - tic)
    return min(times) * 1000


def subnormal_rows(n: int) -> list[list[str]]:
    import mlx.core as mx

    b = mx.random.normal((n, n), key=mx.random.key(0)) * 0.01
    rows = []
    normal, tiny = mx.full((n, n), 1.0), mx.full((n, n), 1.2192e-38)
    mx.eval(normal, tiny, b)
    for name, op in (("product", lambda a: a @ b), ("multiply", lambda a: a * b)):
        slow = best_ms(lambda op=op: mx.eval(op(tiny)))
        fast = best_ms(lambda op=op: mx.eval(op(normal)))
        rows.append(row(f"{name} {n}x{n} on 1.2e-38 vs on 1.0 (ms)", f"{slow:.2f}", f"{fast:.2f}",
                        slow / fast))
    return rows


def clipped_exp():
    """The fast exp as it was before calibration: masked values clipped to 1.2e-38, not zeroed."""
    import mlx.core as mx

    from workbench.training import fastmath

    zeroed = fastmath.exp

    @mx.custom_function
    def exp(x):
        return mx.maximum(zeroed(x), 1.2192007e-38)  # what the clipped polynomial gave below -87.3

    @exp.vjp
    def _vjp(primals, cotangent, output):
        return cotangent * output

    return exp


def attention_rows(folder: Path, batch: int, seq: int) -> list[list[str]]:
    import mlx.core as mx
    import mlx_lm

    from workbench.training import calibration, fastmath

    model, _ = mlx_lm.load(str(folder))
    shape = calibration.job_shape(model, batch, seq)
    timings = calibration.time_block(model, shape, {"mlx": {}}, 3)
    for name, exp in (("zeroed", fastmath.exp), ("clipped", clipped_exp())):
        original = fastmath.exp
        fastmath.exp = exp  # fastmath.softmax looks its exp up at trace time
        try:
            timings |= calibration.time_block(model, shape, {name: {"attention": fastmath.attention}}, 3)
        finally:
            fastmath.exp = original
    mx.clear_cache()
    return [row("block fwd+bwd, fast attention with masked scores 1.2e-38 (ms)", f"{timings['clipped']:.1f}",
                f"{timings['mlx']:.1f}", timings["clipped"] / timings["mlx"]),
            row("block fwd+bwd, fast attention with masked scores 0 (ms)", f"{timings['zeroed']:.1f}",
                f"{timings['mlx']:.1f}", timings["zeroed"] / timings["mlx"])]


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.model, args.batch, args.seq, args.steps, args.warmup = "tiny", 2, 64, 4, 2
    print(machine_line(), flush=True)
    rows = blas_rows(args.home)
    with tempfile.TemporaryDirectory(prefix="wb-bench-kernels-") as scratch:
        models = (args.models or Path(scratch) / "models").expanduser().resolve()
        folder = fp32_copy(build_models(models, [args.model])[args.model])
        # Small: where every product is subnormal, an Intel core may take 100 times as long.
        rows += subnormal_rows(128 if args.quick else 256)
        print_table(rows, flush=True)  # as they come: a run cut short still shows them
        rows += attention_rows(folder, args.batch, args.seq)
        print_table(rows[-2:], flush=True)
        shape = (folder, args.batch, args.seq, args.steps, args.warmup)
        steps = {}
        for mode in ("off", "on", "auto"):
            steps[mode] = bare_step(*shape, fast_kernels=mode, home=Path(scratch))
            print(f"bare step, fast kernels {mode}: {steps[mode]['tokens_per_s']:.1f} tokens/s "
                  f"({', '.join(steps[mode]['fast_kernels']) or 'none'})", flush=True)
    off = steps["off"]["tokens_per_s"]
    for mode in ("on", "auto"):
        chosen = ", ".join(steps[mode]["fast_kernels"]) or "none"
        rows.append(row(f"bare LoRA step, fast kernels {mode} ({chosen}) vs off: tokens/s",
                        f"{steps[mode]['tokens_per_s']:.1f}", f"{off:.1f}", steps[mode]["tokens_per_s"] / off,
                        ">= 1.0x" if mode == "auto" else "-",
                        steps[mode]["tokens_per_s"] >= 0.97 * off if mode == "auto" else None))
    print_table(rows)
    measured = steps["auto"]["calibration"]
    print(f"- model {args.model} (fp32), batch {args.batch} x {args.seq}, {args.steps} steps ({args.warmup} "
          f"warm-up); calibration took {measured['seconds']} s: {json.dumps(measured['timings_ms'])}")
    print("- the bare step with the fast kernels off computes what `mlx_lm lora` computes (same compiled "
          "value_and_grad and AdamW); auto's goal allows 3% for noise between processes")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "steps": steps}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
