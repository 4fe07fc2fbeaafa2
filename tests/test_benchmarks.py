"""Each benchmark runs once at toy size, so the scripts cannot rot (figures are not judged here)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_generation_benchmark_runs_and_prints_its_table(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/generation.py", "--quick"],
        cwd=ROOT, env=os.environ | {"WORKBENCH_MODELS_PATH": models_dir},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for measure in ("generate p50", "concurrent vs 1 single", "matmul", "16 concurrent chat clients",
                    "decode tok/s at batch 1", "prompt cache on vs off"):
        assert measure in done.stdout


def test_training_benchmark_runs_and_prints_its_table(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/training.py", "--quick"],
        cwd=ROOT, env=os.environ | {"WORKBENCH_MODELS_PATH": models_dir},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for measure in ("tokens/s", "time to first step", "full rows", "QLoRA int4", "QLoRA int8", "BLAS bound",
                    "LoRA-free floor", "useful tokens/s", "packing true"):
        assert measure in done.stdout


def test_cpu_kernels_benchmark_names_its_cpu_and_prints_each_choice(models_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/cpu_kernels.py", "--quick", "--models", models_dir, "--home", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith("cpu: ")
    for measure in ("OpenBLAS fp32 product on", "(chosen)", "on 1.2e-38 vs on 1.0", "masked scores 0",
                    "fast kernels on", "fast kernels auto", "calibration took"):
        assert measure in done.stdout


def test_distributed_benchmark_prints_scaling_against_one_rank(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/distributed.py", "--quick", "--models", models_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for measure in ("1 rank, batch 2: tokens/s", "2 ranks, global batch 2 (strong)", "2 ranks, global batch 4 (weak)"):
        assert measure in done.stdout
    assert "cpu: " in done.stdout  # the figures name the processor they were measured on


def test_launcher_benchmark_prints_the_ranks_time_against_a_spinning_launcher():
    done = subprocess.run([sys.executable, "bench/launcher.py", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "launcher under SCHED_IDLE vs spinning" in done.stdout and "BLAS threads a rank" in done.stdout
    assert "cpu: " in done.stdout


def test_evaluation_benchmark_prints_items_per_second_against_mlx_lm_evaluate(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/evaluation.py", "--quick", "--models", models_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for measure in ("tiny workbench_arith_mc, 2 items: items/s, evaluating", "items/s, whole",
                    "tiny workbench_arith_mc: metrics equal to mlx-lm's"):
        assert measure in done.stdout
    assert "metrics equal: NO" not in done.stdout
    assert "cpu: " in done.stdout


def test_scoring_benchmark_prints_tokens_per_second_against_lm_eval_in_process(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/scoring.py", "--quick", "--repeats", "1", "--models", models_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tiny: scored tokens/s, echo+logprobs (engine) vs lm-eval WorkbenchLM" in done.stdout
    assert "tiny: log-likelihoods equal to lm-eval's" in done.stdout and "| NO" not in done.stdout
    assert "cpu: " in done.stdout


def test_constrained_benchmark_prints_each_library_against_unconstrained(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/constrained.py", "--quick", "--batch", "1", "--batch", "4",
         "--models-dir", models_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith("cpu: ")
    for library in ("llguidance", "outlines-core"):
        assert f"batch 4: {library} JSON schema, ms per token" in done.stdout
    # xgrammar is the grammar-peers extra, outside the test set: measured where installed, else said so.
    assert ("batch 4: xgrammar JSON schema, ms per token" in done.stdout
            or re.search(r"tiny: xgrammar setup +\| failed: ModuleNotFoundError", done.stdout))
    assert re.search(r"tiny batch 1: llguidance bounded schema, valid JSON answers *\| 1/1", done.stdout)


def test_preference_benchmark_prints_dpo_against_lora_and_mlx_lm_lora(models_dir):
    done = subprocess.run(
        [sys.executable, "bench/preference.py", "--quick", "--models", models_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for measure in ("tiny: DPO tokens/s against LoRA SFT (ours both)", "tiny: DPO tokens/s against mlx-lm-lora's DPO",
                    "tiny: DPO peak memory against LoRA SFT"):
        assert measure in done.stdout
    # Both trainers start from the base itself as the reference: their first DPO loss is log 2.
    assert "losses ours [0.6931," in done.stdout and "mlx-lm-lora [0.6931," in done.stdout
    assert "cpu: " in done.stdout
