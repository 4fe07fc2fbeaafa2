"""The GPU training benchmark runs once at toy size on the CPU, so the script cannot rot."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_training_benchmark_runs_two_jobs_and_both_peers(models_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/gpu_training.py", "--quick", "--models", models_dir, "--home", str(tmp_path),
         "--targets", "q_proj,v_proj"],
        cwd=ROOT, env=os.environ | {"WORKBENCH_MODELS_PATH": models_dir},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for measure in ("workbench job vs bare compiled MLX step", "first step, job 2 (kernel cache warm)",
                    "job vs PyTorch + PEFT eager", "MLX's LoRA-free floor vs PyTorch + PEFT eager"):
        assert measure in done.stdout
    assert "LoRA r8 on q_proj,v_proj" in done.stdout  # every side trains the same layers
    assert '"compute_dtype": "float32"' in done.stdout  # the job's policy, as its status reported it
