"""PyTorch + PEFT LoRA training peer: the same LoRA training as ours, on the same tokens, in PyTorch.

    python bench/torch_peer.py /tmp/wb-bench-models/random--qwen3-0.6b --batch 1 --seq 256 --steps 8
    python bench/torch_peer.py MODEL_FOLDER --dtype bf16 --device cuda --compile --json   # on a GPU machine

It needs only torch, transformers and peft (no MLX, no workbench), so it runs as is on a GPU machine.
Other bench scripts import `run_peft` and hand it the token batches their MLX side trains on.

What one run does:

- loads a Hugging Face-layout folder (config.json + safetensors) with AutoModelForCausalLM, puts PEFT
  LoRA on the chosen projections (rank, lora_alpha, dropout 0; the scale is alpha / rank as in mlx-lm),
  and trains it with AdamW (weight decay 0, as ours) for --steps steps, batch i being batches[i % n];
- the loss is mlx-lm's `default_loss`: inputs ids[:, :-1], targets ids[:, 1:], target j counted when
  offset <= j + 1 <= length (lengths as mlx-lm's iterate_batches gives them, [B, 2] offset/length pairs,
  or [B] lengths with offset 0), mean cross entropy over the counted targets; tokens = counted targets
  (a full row trains length - 1; a padded row length, its last target being the pad that follows it,
  exactly as mlx-lm counts and trains);
- precision: fp32 (fp32 weights); bf16 on CPU: fp32 weights under bf16 autocast; bf16 on CUDA: bf16
  weights, PEFT's fp32 LoRA weights, under bf16 autocast (what HF Trainer's bf16=True does);
- times every step between device synchronisations; tokens/s is steady state: all trained tokens of
  steps warmup+1..N over those steps' summed time (the median step's figure is given too);
- peak memory: on CUDA torch.cuda.max_memory_allocated during training (weights included); on CPU the
  peak resident set during training less the resident set when training began (Linux VmHWM, reset at
  the start through /proc/self/clear_refs);
- also the CPUs other processes kept busy during each step (Linux): a shared machine skews every figure.

The CLI trains on random token rows of full length (seeded); every row then trains seq - 1 targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import peft
import torch
import torch.nn.functional as F
import transformers
from table import cpu_name, machine_busy_s, machine_line, print_table, row, status_kb, tps

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("model", type=Path, help="Hugging Face-layout model folder (config.json + safetensors)")
# Shape of the work
parser.add_argument("--batch", type=int, default=1, help="rows per batch")
parser.add_argument("--seq", type=int, default=256, help="tokens per row (rows are full: seq - 1 targets)")
parser.add_argument("--steps", type=int, default=10, help="training steps, warm-up included")
parser.add_argument("--warmup", type=int, default=3, help="first steps left out of tokens/s")
parser.add_argument("--batches", type=int, default=0,
                    help="distinct random batches, cycled (default: one per step; 1 repeats one batch)")
parser.add_argument("--seed", type=int, default=0, help="seed of the random rows and of LoRA's init")
# LoRA and the optimizer
parser.add_argument("--rank", type=int, default=8)
parser.add_argument("--alpha", type=float, default=16.0, help="lora_alpha; the scale is alpha / rank")
parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, constant")
parser.add_argument("--targets", default=None,
                    help="comma-separated module names to adapt (default: all 7 projections)")
# How it runs
parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when there is one")
parser.add_argument("--dtype", choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
parser.add_argument("--compile", action="store_true", help="torch.compile the model")
parser.add_argument("--compile-budget", type=float, default=600.0,
                    help="seconds the warm-up steps (compilation) may take before the run is given up")
parser.add_argument("--grad-checkpoint", action="store_true", help="gradient checkpointing (non-reentrant)")
parser.add_argument("--json", action="store_true", help="also print the result as one line of JSON, last")

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MB = 1024 * 1024


class CompileTimeout(Exception):
    """The compile budget ran out during the warm-up steps."""


# Batches and the loss -------------------------------------------------------------------------------


def prepare(batches: Sequence, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(ids, mask over the targets, counted targets) for each batch, already on the device, so that no
    step times a host-to-device copy (ours leaves the batch fetch out of its step time too)."""
    prepared = []
    for ids, lengths in batches:
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        lengths = np.asarray(lengths).astype(np.int64)
        if lengths.ndim == 1:
            lengths = np.stack([np.zeros_like(lengths), lengths], axis=1)
        lengths = torch.as_tensor(lengths)
        # mlx-lm's mask, position for position: target j (token j + 1) counts when offset <= j + 1 <= length.
        steps = torch.arange(1, ids.shape[1])
        mask = (steps >= lengths[:, 0:1]) & (steps <= lengths[:, 1:])
        count = int(mask.sum())
        if count == 0:
            raise ValueError(f"a batch of shape {tuple(ids.shape)} has no target to train")
        prepared.append((ids.to(device), mask.to(device, torch.float32), count))
    return prepared


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    # In fp32 whatever the logits' dtype: a bf16 log-softmax over 150k classes loses the loss's digits.
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    # A product with the mask, not boolean indexing: indexing would wait on the GPU for the mask's size.
    return (losses * mask.flatten()).sum() / count


# Memory ---------------------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Start the peak resident set (VmHWM) afresh from the current one (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _lifetime_peak_rss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


# The run --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise CompileTimeout in this thread once `seconds` have passed (checked between Python
    operations); the state it yields says whether it did, as torch.compile wraps what its backend
    raises in an error of its own. Signals reach the main thread only: elsewhere the caller checks
    the time afterwards."""
    state = {"expired": False}
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def expire(signum, frame):
        state["expired"] = True
        raise CompileTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _root_cause(error: BaseException) -> str:
    """The innermost error's type and first line: torch.compile's own errors wrap the one that matters."""
    while error.__cause__ is not None:
        error = error.__cause__
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first}"


def _load(folder: Path, dtype: torch.dtype):
    # transformers 4.56 renamed torch_dtype to dtype; older releases would ignore `dtype` and load fp32.
    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), **{key: dtype})


def run_peft(folder: str | Path, batches: Sequence, steps: int, warmup: int = 3, rank: int = 8,
             alpha: float = 16.0, lr: float = 1e-4, dtype: str = "fp32", device: str = "cpu",
             compile: bool = False, compile_budget_s: float | None = 600.0,
             target_modules: Sequence[str] = ALL_PROJECTIONS, gradient_checkpointing: bool = False,
             seed: int = 0, on_step: Callable[[dict], None] | None = None) -> dict:
    """Train PEFT LoRA on `batches` ((ids [B, L], lengths) pairs, cycled) for `steps` steps; the figures.

    tokens_per_s is the total of steps warmup+1..steps: their trained tokens over their summed time.
    With compile, a compile that fails, or warm-up steps (where it compiles) that outlast
    compile_budget_s, ends the run early: the result's compile_error says so and tokens_per_s is None.
    `on_step` gets each step's {"step", "loss", "seconds", "tokens", "other_cpus"} as it ends."""
    if steps <= warmup:
        raise ValueError(f"steps ({steps}) must exceed warmup ({warmup}): no step would be timed")
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be fp32 or bf16, not {dtype!r}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if not cuda:
        # torch's default can be fewer threads than cores; the MLX side uses every core.
        torch.set_num_threads(os.cpu_count() or 1)
    half = dtype == "bf16"
    # CPU: bf16 weights would be cast to fp32 by ours anyway, so bf16 there means autocast over fp32.
    weights = torch.bfloat16 if half and cuda else torch.float32
    precision = {("fp32", False): "fp32 weights",
                 ("fp32", True): f"fp32 weights, matmul precision {torch.get_float32_matmul_precision()}",
                 ("bf16", False): "fp32 weights, bf16 autocast",
                 ("bf16", True): "bf16 weights, fp32 LoRA weights, bf16 autocast"}[dtype, cuda]

    tic = time.perf_counter()
    model = _load(Path(folder), weights)
    if gradient_checkpointing:
        # Non-reentrant: the reentrant kind needs an input that requires grad, which frozen embeddings
        # never give, and would silently train nothing.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # LoRA's A matrices start random: the same start on every run
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                             target_modules=list(target_modules), task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config).to(dev)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0, fused=cuda or None)
    forward = torch.compile(model) if compile else model
    prepared = prepare(batches, dev)
    load_s = time.perf_counter() - tic

    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if half else contextlib.nullcontext

    def step(ids, mask, count):
        with autocast():
            # No attention mask, as mlx-lm: padding only follows a row's tokens, and causal attention
            # keeps it out of every counted target.
            logits = forward(input_ids=ids[:, :-1], use_cache=False).logits
        loss = masked_loss(logits, ids[:, 1:], mask, count)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(dev)
        start_bytes = torch.cuda.memory_allocated(dev)
    else:
        start_bytes = (status_kb("VmRSS") or 0) * 1024
        hwm_reset = _reset_peak_rss()

    seconds, losses, tokens, others = [], [], [], []

    def one(i):
        ids, mask, count = prepared[i % len(prepared)]
        sync()
        # Others' work on a shared machine slows a step down: the CPU seconds it took meanwhile.
        busy, own = machine_busy_s(), time.process_time()
        tic = time.perf_counter()
        loss = step(ids, mask, count)
        sync()
        seconds.append(time.perf_counter() - tic)
        if busy is not None:
            others.append(max((machine_busy_s() - busy) - (time.process_time() - own), 0.0))
        losses.append(loss.item())
        tokens.append(count)
        if on_step:
            on_step({"step": i + 1, "loss": losses[-1], "seconds": seconds[-1], "tokens": count,
                     "other_cpus": others[-1] / seconds[-1] if busy is not None else None})

    # torch.compile compiles in the first step (and recompiles in the next if shapes change): the
    # budget covers the warm-up steps, at least one, and a failure there is the compiler's.
    budgeted = max(warmup, 1) if compile else 0
    compile_error = None
    began = time.perf_counter()
    try:
        with _deadline(compile_budget_s if compile else None) as deadline:
            for i in range(budgeted):
                one(i)
        if compile and compile_budget_s and time.perf_counter() - began > compile_budget_s:
            compile_error = (f"did not compile in {compile_budget_s:.0f} s "
                             f"(its warm-up took {time.perf_counter() - began:.0f} s)")
    except Exception as error:
        if not compile:
            raise
        if deadline["expired"]:
            compile_error = f"did not compile in {compile_budget_s:.0f} s"
        else:
            compile_error = f"did not compile in {time.perf_counter() - began:.0f} s: {_root_cause(error)}"
    if compile_error is None:
        for i in range(budgeted, steps):
            one(i)
    if compile_error:
        torch._dynamo.reset()  # drop the half-built graphs, so the caller's next run starts clean

    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(dev) / MB
        peak_is = "torch.cuda.max_memory_allocated during training (weights, LoRA, optimizer included)"
        peak_rss_mb = None
    else:
        hwm_kb = status_kb("VmHWM") if hwm_reset else None
        if hwm_kb is not None:
            peak_is = "peak RSS during training less RSS when training began (VmHWM, reset at start)"
        else:
            hwm_kb = _lifetime_peak_rss_kb()
            peak_is = "lifetime peak RSS (loading included) less RSS when training began: an upper bound"
        peak_rss_mb = hwm_kb / 1024
        peak_mb = max(hwm_kb * 1024 - start_bytes, 0) / MB

    timed = slice(warmup, None)
    done = len(seconds) == steps
    return {
        "model": str(folder), "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if cuda else cpu_name(),
        "threads": torch.get_num_threads(), "dtype": dtype, "precision": precision,
        "compile": compile, "compile_error": compile_error, "gradient_checkpointing": gradient_checkpointing,
        "rank": rank, "alpha": alpha, "lr": lr, "target_modules": list(target_modules),
        "trainable_params": sum(p.numel() for p in trainable),
        "steps": steps, "warmup": warmup, "steps_done": len(seconds),
        "batch_shapes": sorted({tuple(ids.shape) for ids, _, _ in prepared}),
        "load_s": load_s, "first_step_s": seconds[0] if seconds else None,
        "step_seconds": seconds, "tokens_per_step": tokens, "losses": losses,
        "tokens_per_s": sum(tokens[timed]) / sum(seconds[timed]) if done else None,
        "tokens_per_s_is": f"trained tokens of steps {warmup + 1}-{steps} / their summed step time",
        "tokens_per_s_median": (statistics.median(t / s for t, s in zip(tokens[timed], seconds[timed]))
                                if done else None),
        "median_step_s": statistics.median(seconds[timed]) if done else None,
        # CPUs that other processes kept busy on average: during the timed steps, and during each step.
        "other_cpus": sum(others[timed]) / sum(seconds[timed]) if done and others else None,
        "other_cpus_per_step": [o / s for o, s in zip(others, seconds)] if others else None,
        "start_mb": start_bytes / MB, "peak_mb": peak_mb, "peak_mb_is": peak_is, "peak_rss_mb": peak_rss_mb,
        "versions": {"torch": torch.__version__, "peft": peft.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }


# The command line -----------------------------------------------------------------------------------


def random_batches(vocab_size: int, batch: int, seq: int, count: int, seed: int) -> list:
    """`count` batches of `batch` full rows of `seq` random tokens; the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, vocab_size, (batch, seq), generator=generator).numpy(),
             np.full(batch, seq, dtype=np.int64)) for _ in range(count)]


def main() -> int:
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device == "cuda" else "fp32")
    targets = args.targets.split(",") if args.targets else ALL_PROJECTIONS
    config = json.loads((args.model / "config.json").read_text())
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # as run_peft does; set here so the header is true
        where = f"cpu ({cpu_name()}), torch threads {torch.get_num_threads()} (set to os.cpu_count())"
    else:
        where = f"cuda ({torch.cuda.get_device_name()})"
    print(machine_line())
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
          f"torch {torch.__version__}, peft {peft.__version__}, transformers {transformers.__version__}; "
          f"device {where}; dtype {dtype}{', compiled' if args.compile else ''}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    count = args.batches or args.steps
    batches = random_batches(config["vocab_size"], args.batch, args.seq, count, args.seed)
    transformers.utils.logging.disable_progress_bar()  # a weight-loading bar says nothing a table needs

    def progress(step: dict) -> None:
        others = "" if step["other_cpus"] is None else f" (other processes: {step['other_cpus']:.2f} CPUs)"
        print(f"step {step['step']}/{args.steps}: loss {step['loss']:.4f}, {step['seconds']:.3f} s{others}",
              file=sys.stderr, flush=True)

    result = run_peft(args.model, batches, args.steps, args.warmup, args.rank, args.alpha, args.lr, dtype,
                      device, args.compile, args.compile_budget, targets, args.grad_checkpoint, args.seed,
                      on_step=progress)

    label = f"LoRA r{args.rank} b{args.batch} s{args.seq} {dtype}"
    timed = f"steps {args.warmup + 1}-{args.steps}"
    rows = []
    if result["compile_error"]:
        rows.append(row(f"{label}: torch.compile", result["compile_error"]))
    else:
        rows += [
            row(f"{label}: tokens/s ({timed}, total tokens / total time)", tps(result["tokens_per_s"])),
            row(f"{label}: tokens/s ({timed}, median step)", tps(result["tokens_per_s_median"])),
            row(f"{label}: step time ({timed}, median)", f"{result['median_step_s']:.3f} s"),
        ]
    if result["first_step_s"] is not None:
        rows.append(row(f"{label}: first step{' (compilation included)' if args.compile else ''}",
                        f"{result['first_step_s']:.2f} s"))
    peak = "peak memory (CUDA allocated)" if device == "cuda" else "peak memory (RSS growth in training)"
    rows.append(row(f"{label}: {peak}", f"{result['peak_mb']:,.0f} MB"))
    if result["losses"]:
        rows.append(row(f"{label}: loss, step 1 -> {len(result['losses'])}",
                        f"{result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}"))
    rows.append(row(f"{label}: load (model + LoRA)", f"{result['load_s']:.1f} s"))
    print_table(rows)
    others = result["other_cpus"]
    if others is not None:
        # Other work on the machine skews every figure; this shows whether there was any.
        print(f"other processes used {others:.2f} of the {os.cpu_count()} CPUs on average during the timed "
              "steps" + (" (figures skewed: rerun on a quiet machine)" if others > 0.1 else ""))
    print("notes:")
    for note in (
        f"{result['precision']}; LoRA on {', '.join(result['target_modules'])}: "
        f"{result['trainable_params']:,} parameters, scale {args.alpha / args.rank:g}; AdamW lr {args.lr:g}, "
        f"decay 0; {len(batches)} random batch(es) of {args.batch} x {args.seq} tokens, seed {args.seed}, "
        f"{args.seq - 1} targets a row",
        f"tokens/s: {result['tokens_per_s_is']}",
        f"peak memory: {result['peak_mb_is']}" + (f"; peak RSS {result['peak_rss_mb']:,.0f} MB"
                                                   if result["peak_rss_mb"] else ""),
        "step s: " + ", ".join(f"{s:.3f}" for s in result["step_seconds"]),
        "other processes' CPUs, each step: " + ", ".join(f"{c:.2f}" for c in result["other_cpus_per_step"]
                                                           or []),
        "losses: " + ", ".join(f"{loss:.4f}" for loss in result["losses"]),
    ):
        print(f"- {note}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
