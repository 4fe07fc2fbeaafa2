"""The groups of bench/training.py, each a function that measures on the shared `Bench` and adds its
rows and notes (the groups themselves are described in training.py's docstring)."""

from __future__ import annotations

import time
from pathlib import Path

from bare_step import bare_step
from common import layer_count, model_config, parameter_count
from table import Interference, row, tps
from training_runs import (
    DATASET_DIR,
    FULL_DIR,
    Service,
    best,
    ours_config,
    run_peer,
    run_torch,
    steady_tokens_per_s,
    step_note,
    timed,
    wall_tokens_per_s,
)


class Bench:
    """The run's shared pieces: the service, the models, the figures so far, the table and its notes."""

    def __init__(self, service: Service, args, home: Path):
        self.service, self.args, self.home = service, args, home
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self.ours_full: list[dict] = []  # our fp32 LoRA runs on full-length rows, for rows 2 to 4

    def ours(self, tag: str, folder: Path, shape: tuple, dataset: str = DATASET_DIR, **extra) -> dict:
        config = ours_config(f"bench-{tag}-{time.strftime('%H%M%S')}", str(folder), *shape,
                             layer_count(folder), self.args, dataset_path=dataset, **extra)
        with Interference() as others:
            result = self.service.run(config)
        result["others"] = others.cpus
        return result

    def peer(self, tag: str, folder: Path, dataset: str, shape: tuple, mask_prompt: bool) -> dict:
        with Interference() as others:
            result = run_peer(folder, self.home / "datasets" / dataset, self.home / f"peer-{tag}", *shape,
                              self.args, mask_prompt)
        result["others"] = others.cpus
        return result

    def compare(self, label: str, tag: str, folder: Path, dataset: str, shape: tuple, repeats: int,
                warmup: int, mask_prompt: bool) -> tuple[list[dict], list[dict]]:
        """Ours and mlx-lm `repeats` times each, alternating who goes first (A B B A ...); each side's
        best run counts. Answers both sides' runs, ours first.

        Ours runs with group_by_length false: mlx-lm's own sort by length does nothing (it measures the
        raw row, not its tokens), so this gives both sides the same batches in the same order; what
        grouping gains is the padding group's measure."""
        ours_runs, peer_runs = [], []
        for i in range(repeats):
            for side in (("peer", "ours") if i % 2 == 0 else ("ours", "peer")):
                if side == "peer":
                    peer_runs.append(self.peer(f"{tag}-{i}", folder, dataset, shape, mask_prompt))
                else:
                    ours_runs.append(self.ours(f"{tag}-{i}", folder, shape, dataset, mask_prompt=mask_prompt,
                                               group_by_length=False))
        steps = shape[0]
        runs = f"best of {repeats}, " if repeats > 1 else ""
        ours_tps = steady_tokens_per_s(best(ours_runs, warmup)["steps"], warmup)
        peer_tps = steady_tokens_per_s(best(peer_runs, warmup)["steps"], warmup)
        self.rows.append(row(f"{label}: tokens/s vs mlx-lm, own step timers ({runs}steps "
                             f"{warmup + 1}-{steps})", tps(ours_tps), tps(peer_tps), ours_tps / peer_tps,
                             ">= 1.0x", ours_tps / peer_tps >= 1.0))
        wall = [max(wall_tokens_per_s(r["steps"], warmup) or 0 for r in side)
                for side in (ours_runs, peer_runs)]
        if all(wall):
            self.rows.append(row(f"{label}: tokens/s vs mlx-lm, step-end clock ({runs}steps "
                                 f"{warmup + 1}-{steps})", tps(wall[0]), tps(wall[1]), wall[0] / wall[1]))
        ours_peak, peer_peak = max(r["peak_mb"] for r in ours_runs), max(r["peak_mb"] for r in peer_runs)
        self.rows.append(row(f"{label}: peak memory (MLX) vs mlx-lm", f"{ours_peak:,.0f} MB",
                             f"{peer_peak:,.0f} MB", ours_peak / peer_peak))
        ours_tokens = [s["tokens"] for s in ours_runs[0]["steps"]]
        peer_tokens = [s["tokens"] for s in peer_runs[0]["steps"]]
        self.rows.append(row(f"{label}: tokens trained in {steps} steps (same batches?)",
                             f"{sum(ours_tokens):,}", f"{sum(peer_tokens):,}",
                             sum(ours_tokens) / sum(peer_tokens), "same every step",
                             ours_tokens == peer_tokens))
        self.notes.append(f"{label}: step-1 loss ours {ours_runs[0]['steps'][0]['loss']:.5f}, mlx-lm "
                          f"{peer_runs[0]['steps'][0]['loss']:.5f} (LoRA starts as the identity: equal when "
                          f"the batches are)")
        for side, side_runs in (("ours", ours_runs), ("mlx-lm", peer_runs)):
            for i, r in enumerate(side_runs):
                self.notes.append(step_note(f"{label}, {side} run {i + 1}", r, warmup))
        return ours_runs, peer_runs


# The groups -----------------------------------------------------------------------------------------


def short_name(model: str) -> str:
    return model.split("/")[-1]


def run_tiny(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape = (args.tiny_steps, args.tiny_batch, args.tiny_seq)
    ours_runs, _ = bench.compare(f"tiny LoRA b{args.tiny_batch} s{args.tiny_seq} alpaca", "tiny", folder,
                                 DATASET_DIR, shape, args.tiny_repeats, args.warmup_steps, mask_prompt=True)
    first = ours_runs[0]["first_step_s"]
    bench.rows.append(row("time to first step: tiny (POST to step-1 metric)", f"{first:.1f} s",
                          goal="< 5 s", met=first < 5))
    bench.notes.append(f"tiny start-up, s after POST: {ours_runs[0]['breakdown']}")


def full_label(args) -> str:
    return f"{short_name(args.model)} fp32 LoRA b{args.full_batch}x{args.full_seq} full rows"


def run_lora(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape = (args.full_steps, args.full_batch, args.full_seq)
    ours_runs, _ = bench.compare(full_label(args), "full", folder, FULL_DIR, shape, args.full_repeats,
                                 args.full_warmup, mask_prompt=False)
    bench.ours_full += ours_runs


def ours_full(bench: Bench, folder: Path) -> dict:
    """Our best fp32 LoRA run on full-length rows: the lora group's, else one run now."""
    args = bench.args
    if not bench.ours_full:
        r = bench.ours("full-alone", folder, (args.full_steps, args.full_batch, args.full_seq), FULL_DIR,
                       mask_prompt=False, group_by_length=False)
        bench.ours_full.append(r)
        bench.notes.append(step_note(f"{full_label(args)}, ours (alone)", r, args.full_warmup))
    return best(bench.ours_full, args.full_warmup)


def run_peft_group(bench: Bench, folder: Path, batches: list[tuple]) -> None:
    args = bench.args
    label, warmup = full_label(args), args.full_warmup
    ours = ours_full(bench, folder)
    ours_tps = steady_tokens_per_s(ours["steps"], warmup)
    with Interference() as others:
        fp32 = run_torch(folder, batches[:args.full_steps], bench.home / "peft-fp32", args.full_steps, warmup,
                         "fp32", args, args.run_timeout)
    if "timed_out" in fp32:
        raise TimeoutError(f"PEFT fp32 did not finish {args.full_steps} steps in {args.run_timeout:.0f} s")
    fp32["others"] = others.cpus
    bench.rows.append(row(f"{label}: tokens/s vs PyTorch+PEFT fp32 (steps {warmup + 1}-{args.full_steps})",
                          tps(ours_tps), tps(fp32["tokens_per_s"]), ours_tps / fp32["tokens_per_s"],
                          ">= 1.2x", ours_tps / fp32["tokens_per_s"] >= 1.2))
    ours_tokens = [s["tokens"] for s in ours["steps"]]
    bench.rows.append(row(f"{label}: tokens trained in {args.full_steps} steps, PEFT (same batches?)",
                          f"{sum(ours_tokens):,}", f"{sum(fp32['tokens_per_step']):,}",
                          sum(ours_tokens) / sum(fp32["tokens_per_step"]), "same every step",
                          ours_tokens == fp32["tokens_per_step"]))
    bench.notes.append(f"{label}: step-1 loss ours {ours['steps'][0]['loss']:.5f}, PEFT fp32 "
                       f"{fp32['losses'][0]:.5f} (LoRA starts as the identity: equal when the batches are)")
    bench.notes.append(
        f"{label}, PEFT {fp32['precision']} (torch {fp32['versions']['torch']}, peft "
        f"{fp32['versions']['peft']}, {fp32['threads']} threads): {tps(fp32['tokens_per_s'])}; training grew "
        f"its RSS by {fp32['peak_mb']:,.0f} MB; other processes used {fp32['others']:.2f} CPUs; step s: "
        + ", ".join(f"{s:.2f}" for s in fp32["step_seconds"]))

    # bf16 products have no fast path on a CPU without AVX512-BF16 or AMX: a time budget, not a step count.
    with Interference() as others:
        bf16 = run_torch(folder, batches[:args.bf16_steps], bench.home / "peft-bf16", args.bf16_steps, 1,
                         "bf16", args, args.bf16_budget)
    what = f"{label}: tokens/s vs PEFT bf16 autocast (for information"
    if "timed_out" not in bf16:
        bench.rows.append(row(f"{what}, steps 2-{args.bf16_steps})", tps(ours_tps), tps(bf16["tokens_per_s"]),
                              ours_tps / bf16["tokens_per_s"]))
        seconds = bf16["step_seconds"]
    else:
        seconds = [s["seconds"] for s in bf16["steps_done"]]
        tokens = sum(s["tokens"] for s in bf16["steps_done"])
        if seconds:  # step 1 and maybe more ended: their rate, warm-up included (eager torch: little)
            peer = f"{tps(tokens / sum(seconds))} ({len(seconds)} step(s))"
            ratio = ours_tps * sum(seconds) / tokens
        else:  # not even step 1: its tokens over the budget is more than the rate
            peer, ratio = f"< {tps(ours['steps'][0]['tokens'] / bf16['timed_out'])}", None
        bench.rows.append(row(f"{what}; stopped after {bf16['timed_out']:.0f} s)", tps(ours_tps), peer,
                              ratio))
    bench.notes.append(f"{label}, PEFT fp32 weights under bf16 autocast: step s "
                       + (", ".join(f"{s:.1f}" for s in seconds) or "none ended")
                       + f" (budget {args.bf16_budget:.0f} s); other processes used {others.cpus:.2f} CPUs")


def run_qlora_group(bench: Bench, folder: Path) -> None:
    args = bench.args
    label, warmup = full_label(args), args.full_warmup
    base = ours_full(bench, folder)
    base_tps = steady_tokens_per_s(base["steps"], warmup)
    shape = (args.full_steps, args.full_batch, args.full_seq)
    for quantization in ("int4", "int8"):
        q = bench.ours(f"qlora-{quantization}", folder, shape, FULL_DIR, training_type="qlora",
                       quantization=quantization, mask_prompt=False)
        q_tps = steady_tokens_per_s(q["steps"], warmup)
        qlabel = label.replace("fp32 LoRA", f"QLoRA {quantization}")
        bench.rows.append(row(f"{qlabel}: tokens/s vs our fp32 LoRA (steps {warmup + 1}-{args.full_steps})",
                              tps(q_tps), tps(base_tps), q_tps / base_tps, ">= 0.5x",
                              q_tps / base_tps >= 0.5))
        ratio = q["peak_mb"] / base["peak_mb"]
        bench.rows.append(row(f"{qlabel}: peak memory (MLX, training) vs our fp32 LoRA",
                              f"{q['peak_mb']:,.0f} MB", f"{base['peak_mb']:,.0f} MB", ratio, "< 0.7x",
                              ratio < 0.7))
        bench.notes.append(step_note(qlabel, q, warmup) + f"; worker peak RSS {q['worker_hwm_mb']:,.0f} MB "
                           f"(fp32 LoRA's {base['worker_hwm_mb']:,.0f} MB; both load the fp32 weights "
                           f"first); policy {q['job'].policy}")


def time_product(make, repeats: int) -> float:
    """Fastest of `repeats` timed runs of one evaluated product (after an untimed one): the bound is
    what the BLAS can do, and a shared machine only ever slows a run down."""
    import mlx.core as mx

    mx.eval(make())
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        mx.eval(make())
        seconds.append(time.perf_counter() - tic)
    return min(seconds)


def matmul_gflops(folder: Path, tokens: int, repeats: int = 5) -> tuple[float, dict]:
    """MLX fp32 GFLOP/s on the model's own products at `tokens` rows: each projection of a layer and
    the tied head, forward (x @ W.T) and input gradient (dy @ W), weighted by how often a step runs
    them. Also each product's own forward figure, by name. Two passes over the products, the first
    untimed: OpenBLAS's threads and the allocator warm up on it."""
    import mlx.core as mx

    c = model_config(folder)
    h, inner, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    products = [("q_proj", h, q, layers), ("k_proj, v_proj", h, kv, 2 * layers), ("o_proj", q, h, layers),
                ("gate_proj, up_proj", h, inner, 2 * layers), ("down_proj", inner, h, layers),
                ("tied head", h, c["vocab_size"], 1)]
    for timed_pass in (False, True):
        flops = seconds = 0.0
        each = {}
        for name, n_in, n_out, count in products:
            w, x, dy = (mx.random.normal(shape) for shape in ((n_out, n_in), (tokens, n_in), (tokens, n_out)))
            mx.eval(w, x, dy)
            runs = repeats if timed_pass else 1
            forward = time_product(lambda x=x, w=w: x @ w.T, runs)
            backward = time_product(lambda dy=dy, w=w: dy @ w, runs)
            one = 2 * tokens * n_in * n_out
            each[f"{name} {tokens}x{n_in} @ {n_in}x{n_out}"] = one / forward / 1e9
            flops += count * 2 * one
            seconds += count * (forward + backward)
            del w, x, dy
    return flops / seconds / 1e9, each


def run_bound(bench: Bench, folder: Path) -> None:
    import mlx.core as mx

    args = bench.args
    warmup = args.full_warmup
    ours = ours_full(bench, folder)
    ours_tps = steady_tokens_per_s(ours["steps"], warmup)
    tokens = args.full_batch * (args.full_seq - 1)  # the positions a step computes on
    with Interference() as others:
        gflops, each = matmul_gflops(folder, tokens)
        shape = (folder, args.full_batch, args.full_seq, args.full_steps, warmup)
        bare = bare_step(*shape, rank=args.rank, alpha=args.alpha)
        floor = bare_step(*shape, floor=True)
    mx.clear_cache()  # the bare steps' buffers: the padding group's worker needs the memory
    params = parameter_count(folder)
    bound = gflops * 1e9 / (4 * params)
    gate = next((v, k) for k, v in each.items() if k.startswith("gate_proj"))
    bench.rows.append(row(f"fp32 matmul (MLX, OpenBLAS): {gate[1]} forward", f"{gate[0]:.1f} GFLOP/s"))
    bench.rows.append(row(f"fp32 matmul (MLX, OpenBLAS): {short_name(args.model)}'s products at {tokens} "
                          "tokens, fwd + input grad", f"{gflops:.1f} GFLOP/s"))
    bench.rows.append(row(f"BLAS bound: GFLOP/s / (4 x {params / 1e6:,.0f}M parameters) a token",
                          tps(bound)))
    bench.rows.append(row(f"{full_label(args)}: tokens/s vs the BLAS bound", tps(ours_tps), tps(bound),
                          ours_tps / bound, ">= 0.7x", ours_tps / bound >= 0.7))
    bench.rows.append(row("MLX's LoRA-free floor (frozen base, gradients through every layer; bare compiled "
                          "step): tokens/s vs the BLAS bound", tps(floor["tokens_per_s"]), tps(bound),
                          floor["tokens_per_s"] / bound))
    bench.rows.append(row(f"{full_label(args)}: tokens/s vs the bare compiled LoRA step (same policy and "
                          "kernels)", tps(ours_tps), tps(bare["tokens_per_s"]),
                          ours_tps / bare["tokens_per_s"]))
    bench.rows.append(row("bare compiled LoRA step vs MLX's LoRA-free floor", tps(bare["tokens_per_s"]),
                          tps(floor["tokens_per_s"]), bare["tokens_per_s"] / floor["tokens_per_s"]))
    bench.notes.append("matmul GFLOP/s by product (forward): "
                       + ", ".join(f"{k} {v:.1f}" for k, v in each.items())
                       + f"; other processes used {others.cpus:.2f} CPUs meanwhile")
    bench.notes.append(f"bound: {params:,} parameters (embedding included: the tied head multiplies every "
                       "token); attention scores, norms, softmax and the loss are left out, so the bound is "
                       "above what any trainer can reach")


def run_padding(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape, warmup = (args.pad_steps, args.pad_batch, args.pad_seq), args.warmup_steps
    modes = [("group_by_length false", {"group_by_length": False}),
             ("group_by_length true", {"group_by_length": True}), ("packing true", {"packing": True})]
    runs = {mode: [] for mode, _ in modes}
    for i in range(args.pad_repeats):
        for mode, extra in (modes if i % 2 == 0 else modes[::-1]):
            runs[mode].append(bench.ours(f"pad-{i}", folder, shape, DATASET_DIR, **extra))

    def figures(r):
        kept = timed(r["steps"], warmup)
        useful, raw = sum(s["useful"] for s in kept), sum(s["raw"] for s in kept)
        return useful / sum(s["seconds"] for s in kept), 1 - useful / raw

    chosen = {mode: max((figures(r) for r in rs), key=lambda f: f[0]) for mode, rs in runs.items()}
    ungrouped = chosen["group_by_length false"][0]
    label = f"padding: tiny LoRA b{args.pad_batch} s{args.pad_seq} alpaca"
    times = f"best of {args.pad_repeats}, " if args.pad_repeats > 1 else ""
    for mode, (useful, padding) in chosen.items():
        first = mode == "group_by_length false"
        bench.rows.append(row(f"{label}, {mode}: useful tokens/s ({times}steps {warmup + 1}-"
                              f"{args.pad_steps}; {padding:.0%} padding)", tps(useful),
                              "-" if first else tps(ungrouped), None if first else useful / ungrouped))
    for mode, rs in runs.items():
        for i, r in enumerate(rs):
            useful, padding = figures(r)
            trained = sum(s["tokens"] for s in r["steps"])
            bench.notes.append(f"{label}, {mode}, run {i + 1}: {tps(useful)} useful, {padding:.0%} padding, "
                               f"{trained:,} trained tokens; other processes used {r['others']:.2f} CPUs")


def run_big(bench: Bench, big: str) -> None:
    args, tag, service = bench.args, time.strftime("%H%M%S"), bench.service
    with Interference() as others:
        first = service.run(ours_config(f"bench-17b-first-{tag}", big, 1, 1, args.big_seq, -1, args,
                                        dataset_path=None))
    first_s = first["first_step_s"]
    bench.rows.append(row(f"time to first step: 1.7B LoRA b1 s{args.big_seq}", f"{first_s:.1f} s",
                          goal="< 30 s", met=first_s < 30))
    bench.notes.append(f"1.7B LoRA start-up, s after POST: {first['breakdown']} (step 1 itself "
                       f"{first['steps'][0]['seconds']:.1f} s); peak {first['peak_mb']:,.0f} MB (MLX), "
                       f"worker peak RSS {first['worker_hwm_mb']:,.0f} MB; other processes used "
                       f"{others.cpus:.2f} CPUs")
    with Interference() as others:
        q = service.run(ours_config(f"bench-17b-qlora-{tag}", big, args.qlora_steps, 1, args.big_seq, -1,
                                    args, dataset_path=None, training_type="qlora"))
    peak = q["peak_mb"]
    bench.rows.append(row(f"QLoRA int4 1.7B b1 s{args.big_seq}: peak memory (MLX)", f"{peak / 1024:.2f} GB",
                          goal="< 16 GB", met=peak / 1024 < 16))
    bench.rows.append(row("QLoRA int4 1.7B: worker peak RSS (load + quantize + train)",
                          f"{q['worker_hwm_mb'] / 1024:.2f} GB", goal="< 16 GB",
                          met=q["worker_hwm_mb"] / 1024 < 16))
    secs = [s["seconds"] for s in q["steps"]]
    bench.rows.append(row(f"QLoRA int4 1.7B: step time (steps 1-{len(secs)})",
                          " / ".join(f"{s:.1f} s" for s in secs)))
    bench.notes.append(f"1.7B QLoRA start-up, s after POST: {q['breakdown']}; "
                       f"{sum(s['tokens'] for s in q['steps'])} tokens trained; other processes used "
                       f"{others.cpus:.2f} CPUs")


# The run --------------------------------------------------------------------------------------------
