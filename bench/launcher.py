"""What mlx.launch's own CPU use costs its ranks, what the workbench's remedy gives back, and how
many BLAS threads ranks sharing a machine should run.

    python bench/launcher.py                 # 2 ranks
    python bench/launcher.py --quick         # CI smoke run

mlx.launch's threads poll the ranks' pipes with a select that returns at once (a rank's stdin is
always writable), so the launcher spins for the whole job. The job manager puts those threads under
SCHED_IDLE once the ranks have started (workbench/training/distributed.py, `calm_launcher`). Here N
ranks under mlx.launch each do the same fixed BLAS work (fp32 matrix products through MLX, the
work of a training step): with the launcher as it is and calmed, and, calmed, with each rank on
its share of the cores for BLAS (what the workbench sets) or on all of them (OpenBLAS's default),
alternating. The figures are the ranks' wall times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from table import machine_line, print_table, row

import workbench  # noqa: F401  (OpenBLAS under MLX, before mlx.core)
from workbench.training.distributed import calm_launcher, launcher

WORK = """
import mlx.core as mx
a = mx.random.normal(({n}, {n}))
mx.eval(a)
for _ in range({repeats}):
    mx.eval(a @ a)
"""

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="toy size (CI smoke run)")
parser.add_argument("--ranks", type=int, default=2)
parser.add_argument("--size", type=int, default=1024, help="matrix side")
parser.add_argument("--repeats", type=int, default=60, help="products per rank")
parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")


def one_job(args, calm: bool, threads: int) -> float:
    """The seconds N ranks took for their work under mlx.launch."""
    env = os.environ | {"OPENBLAS_NUM_THREADS": str(threads)}
    command = [launcher(), "--backend", "ring", "--hosts", "127.0.0.1", "-n", str(args.ranks), "--",
               sys.executable, "-c", f"import workbench\n{WORK.format(n=args.size, repeats=args.repeats)}"]
    tic = time.perf_counter()
    job = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    while calm and not calm_launcher(job.pid, args.ranks):
        time.sleep(0.01)
    if job.wait() != 0:
        raise SystemExit(f"the ranks failed (exit code {job.returncode})")
    return time.perf_counter() - tic


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.rounds = 128, 5, 1
    print(machine_line(), flush=True)
    cores = len(os.sched_getaffinity(0))
    share = max(cores // args.ranks, 1)
    runs = {"spinning": (False, share), "calmed": (True, share), "calmed, all cores": (True, cores)}
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (calm, threads) in runs.items():
            times[name].append(one_job(args, calm, threads))
    best = {name: min(seconds) for name, seconds in times.items()}
    print(f"{args.ranks} ranks on {cores} cores, {args.repeats} products of {args.size}x{args.size} fp32 "
          f"each, best of {args.rounds} alternating rounds", flush=True)
    print_table([
        row(f"launcher under SCHED_IDLE vs spinning ({share} BLAS threads a rank): s",
            f"{best['calmed']:.2f} s", f"{best['spinning']:.2f} s", best["spinning"] / best["calmed"]),
        row(f"{share} vs {cores} BLAS threads a rank (launcher calmed): s", f"{best['calmed']:.2f} s",
            f"{best['calmed, all cores']:.2f} s", best["calmed, all cores"] / best["calmed"]),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
