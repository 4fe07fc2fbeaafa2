"""The PyTorch + PEFT peer runs once at toy size on the tiny model, so the script cannot rot."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_torch_peer_trains_the_tiny_model_and_prints_its_table(models_dir):
    # One batch, repeated, at a learning rate high enough to show: if LoRA trained nothing (no module
    # matched, no parameter in the optimizer), the loss would stay where it started.
    done = subprocess.run(
        [sys.executable, "bench/torch_peer.py", f"{models_dir}/tiny", "--device", "cpu", "--steps", "3",
         "--warmup", "1", "--seq", "32", "--batches", "1", "--lr", "1e-3", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tokens/s" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tokens_per_step"] == [31, 31, 31]  # full rows of 32 tokens: 31 next-token targets
    assert result["tokens_per_s"] > 0
    losses = result["losses"]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] > losses[1] > losses[2], losses
