"""`python -m workbench train config.yaml`: a job in the foreground, listed like the service's."""

import os
import subprocess
import sys
from pathlib import Path

from workbench.settings import Settings
from workbench.training.store import JobStore

ROOT = Path(__file__).parents[1]


def run_cli(tmp_path, models_dir, config_text, *args):
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    env = os.environ | {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_MODELS_PATH": models_dir,
                        "WORKBENCH_HUB_DOWNLOADS": "false"}
    return subprocess.run([sys.executable, "-m", "workbench", "train", str(config), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_from_a_yaml_file(tmp_path, models_dir):
    done = run_cli(tmp_path, models_dir, "experiment_name: cli_run\ntraining_type: lora\ndataset: alpaca\n"
                   "max_steps: 6\nbatch_size: 2\nsave_every: 3\neval_tasks: [workbench_arith_mc]\neval_limit: 4\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cli_run: completed" in done.stdout
    assert "6/6" in done.stderr  # the progress bar reached the end
    # eval_tasks: its evaluation ran in the foreground too, with a bar for lm-eval's requests.
    assert "cli_run-eval: completed" in done.stdout and "workbench_arith_mc: acc,none" in done.stdout
    assert "16/16" in done.stderr  # 4 items x 4 choices scored

    store = JobStore(tmp_path / "home" / "workbench.db")
    job = store.latest("cli_run")
    assert job["status"] == "completed" and job["current_step"] == 6
    assert (Path(job["adapter_path"]) / "adapters.safetensors").exists()
    assert [m["step"] for m in store.metrics(job["job_id"])] == [1, 2, 3, 4, 5, 6]
    assert job["eval_job"] == "cli_run-eval" and store.latest("cli_run-eval", kind="eval")["results"]
    assert Settings(home=tmp_path / "home").home_dir == Path(job["run_dir"]).parents[2]


def test_train_data_parallel_from_a_yaml_file(tmp_path, models_dir):
    done = run_cli(tmp_path, models_dir, "experiment_name: two_ranks\ntraining_type: lora\ndataset: alpaca\n"
                   "max_steps: 3\nbatch_size: 2\nnum_workers: 2\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "two_ranks: completed" in done.stdout and "2 ranks over ring" in done.stderr + done.stdout
    assert "3/3" in done.stderr  # the progress bar, drawn from rank 0's metrics

    job = JobStore(tmp_path / "home" / "workbench.db").latest("two_ranks")
    assert job["status"] == "completed" and job["distributed"]["world_size"] == 2
    assert (Path(job["adapter_path"]) / "adapters.safetensors").exists()


def test_a_bad_configuration_names_the_field(tmp_path, models_dir):
    done = run_cli(tmp_path, models_dir, "experiment_name: bad\ntraining_type: lora\ndataset: alpaca\n"
                   "batch_size: -2\n")
    assert done.returncode == 2
    assert "batch_size" in done.stderr


def test_evaluate_refuses_a_bad_configuration_naming_the_field(tmp_path, models_dir):
    config = tmp_path / "eval.yaml"
    config.write_text("name: cli_eval\ntasks: [workbench_arith_mc]\nlimit: 0\n")
    done = subprocess.run([sys.executable, "-m", "workbench", "eval", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "limit" in done.stderr
