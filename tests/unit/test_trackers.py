"""report_to as a user checks it: the run's metrics, configuration and adapter read back from each
tracker's own files (TensorBoard's event files, MLflow's store through its client, W&B's offline run);
a tracker that breaks mid-run leaves the training to complete, with a warning; a tracker whose package
does not import is refused at submission, naming report_to."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench  # noqa: F401  (before mlx)
from workbench.data import prepare
from workbench.training import trackers
from workbench.training.config import TrainingConfig
from workbench.training.reporter import Reporter
from workbench.training.run import TrainingRun


class Collect(Reporter):
    def __init__(self):
        self.steps, self.evaluations, self.notes = {}, {}, []

    def step(self, step, total, metrics):
        self.steps[step] = metrics

    def evaluation(self, step, metrics):
        self.evaluations.setdefault(step, {}).update(metrics)

    def note(self, message, data=None):
        self.notes.append((message, data))


def config(**fields) -> TrainingConfig:
    base = {"experiment_name": "tracked", "training_type": "lora", "dataset": "alpaca", "batch_size": 2,
            "max_seq_length": 64, "max_steps": 4, "eval_steps": 2, "eval_batches": 1, "validation_split": 0.1,
            "test_split": 0.05, "fast_kernels": "off", "learning_rate": 1e-3}
    return TrainingConfig(**base | fields)


@pytest.fixture
def run(settings, models_dir, tmp_path, monkeypatch):
    """Runs a job of `config(**fields)`, answering its reporter, outcome and run folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)

    def go(**fields):
        chosen = config(**fields)
        reporter = Collect()
        run_dir = tmp_path / "run"
        outcome = TrainingRun(chosen, f"{models_dir}/tiny", prepare(chosen, settings), run_dir, settings,
                              reporter).run()
        return reporter, outcome, run_dir

    return go


def test_tensorboard_event_files_hold_every_step_and_the_losses(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reporter, outcome, run_dir = run(report_to=["tensorboard"])

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    assert outcome.status == "completed"
    assert scalars["loss"] == pytest.approx({s: m["loss"] for s, m in reporter.steps.items()})
    assert scalars["learning_rate"] == pytest.approx({s: m["learning_rate"] for s, m in reporter.steps.items()})
    assert set(scalars["tokens_per_s"]) == {1, 2, 3, 4}
    assert scalars["eval_loss"] == pytest.approx({s: e["eval_loss"] for s, e in reporter.evaluations.items()
                                                  if "eval_loss" in e})
    assert scalars["test_loss"] == pytest.approx({4: reporter.evaluations[4]["test_loss"]})
    (text,) = events.Tensors("config/text_summary")  # the configuration, as text
    assert b"training_type: lora" in text.tensor_proto.string_val[0]
    assert not reporter.notes or all("tracker_failed" not in (data or {}) for _, data in reporter.notes)


def test_mlflow_store_under_the_home_holds_metrics_params_and_the_adapter(run, settings):
    from mlflow.tracking import MlflowClient

    reporter, outcome, run_dir = run(report_to=["mlflow"])

    client = MlflowClient(tracking_uri=(settings.home_dir / "mlflow").resolve().as_uri())
    run_id = json.loads((run_dir / trackers.STATE).read_text())["mlflow"]
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED"
    assert client.get_experiment(found.info.experiment_id).name == "tracked"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert history == pytest.approx({s: m["loss"] for s, m in reporter.steps.items()})
    assert found.data.metrics["test_loss"] == pytest.approx(reporter.evaluations[4]["test_loss"])
    assert found.data.params["training_type"] == "lora" and found.data.params["max_steps"] == "4"
    stored = {Path(f.path).name for f in client.list_artifacts(run_id, "adapter")}
    assert stored == {p.name for p in outcome.adapter_path.iterdir()} >= {"adapters.safetensors"}


def wandb_records(run_dir: Path) -> list:
    """The records of the W&B offline run in `run_dir`: its .wandb file is a LevelDB-style log (32 KiB
    blocks of length-prefixed chunks after a 7-byte header) of wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    raw, block, position, chunks, records = path.read_bytes(), 32768, 7, b"", []
    while position + 7 <= len(raw):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[position:position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        chunks += raw[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def written_wandb_records(run_dir: Path, timeout_s: float = 60) -> list:
    """The run's records once wandb's own process has written them all (its exit record last): the
    file is written by that process, which may still be writing when `finish` has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = wandb_records(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_runs_offline_in_the_run_folder_with_metrics_config_and_adapter_artifact(run):
    reporter, outcome, run_dir = run(report_to=["wandb"])

    records = written_wandb_records(run_dir)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    losses = {row["_step"]: row["loss"] for row in history if "loss" in row}
    assert losses == pytest.approx({s: m["loss"] for s, m in reporter.steps.items()})
    assert any(row.get("test_loss") == pytest.approx(reporter.evaluations[4]["test_loss"]) for row in history)
    configs = [{u.key: json.loads(u.value_json) for u in r.config.update}
               for r in records if r.WhichOneof("record_type") == "config"]
    configs += [{u.key: json.loads(u.value_json) for u in r.run.config.update}
                for r in records if r.WhichOneof("record_type") == "run"]
    assert any(c.get("training_type") == "lora" for c in configs)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [(a.name, a.type) for a in artifacts] == [("tracked-adapter", "model")]
    assert {e.path for e in artifacts[0].manifest.contents} >= {"adapters.safetensors", "adapter_config.json"}


def test_a_tracker_that_breaks_mid_run_leaves_the_job_to_complete_with_a_warning(run, monkeypatch):
    def broken(self, step, metrics):
        if step >= 2:
            raise OSError("tracking store went away")

    monkeypatch.setattr(trackers.TensorBoard, "log", broken)
    reporter, outcome, _ = run(report_to=["tensorboard"])

    assert outcome.status == "completed" and sorted(reporter.steps) == [1, 2, 3, 4]
    warned = [message for message, data in reporter.notes if (data or {}).get("tracker_failed") == "tensorboard"]
    assert len(warned) == 1 and "tracking store went away" in warned[0]


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_tracker_whose_package_does_not_import_is_refused_naming_report_to(name):
    hidden = trackers.MODULES[name]
    script = ("import sys; sys.modules[%r] = None\n"  # the import now fails, as with no package
              "from workbench.errors import InputError\nfrom workbench.training import trackers\n"
              "try:\n    trackers.check([%r])\nexcept InputError as e:\n    print(e.status, e.field, e.message)\n")
    answer = subprocess.run([sys.executable, "-c", script % (hidden, name)], capture_output=True, text=True,
                            timeout=60, check=True).stdout

    assert answer.startswith("400 report_to ") and f"[{name}]" in answer


def test_a_resumed_job_continues_its_mlflow_run(settings, models_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chosen = config(report_to=["mlflow"], validation_split=0.0, test_split=0.0)
    examples, run_dir = prepare(chosen, settings), tmp_path / "run"
    asked = iter([None, None, "stopped"])
    first = TrainingRun(chosen, f"{models_dir}/tiny", examples, run_dir, settings, Collect(),
                        should_stop=lambda: next(asked)).run()
    client = MlflowClient(tracking_uri=(settings.home_dir / "mlflow").resolve().as_uri())
    run_id = json.loads((run_dir / trackers.STATE).read_text())["mlflow"]
    assert first.status == "stopped" and client.get_run(run_id).info.status == "KILLED"

    TrainingRun(chosen, f"{models_dir}/tiny", examples, run_dir, settings, Collect()).run(resume=True)

    assert json.loads((run_dir / trackers.STATE).read_text())["mlflow"] == run_id
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2, 3, 4]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


def test_a_job_whose_tracker_breaks_completes_and_its_events_say_why(settings, monkeypatch):
    from workbench.models.resolver import ModelResolver
    from workbench.training.manager import JobManager
    from workbench.training.store import JobStore
    from workbench.training.worker import run_job

    def broken(self, step, metrics):
        raise OSError("tracking store went away")

    monkeypatch.setattr(trackers.TensorBoard, "log", broken)
    store = JobStore(settings.home_dir / "workbench.db")
    job = JobManager(settings, ModelResolver(settings), store, manage=False).start(
        config(report_to=["tensorboard"]), launch=False)

    assert run_job(job["job_id"], settings, store, stop=lambda: None) == "completed"
    warnings = [e for e in store.events(job["job_id"]) if (e["data"] or {}).get("tracker_failed")]
    assert len(warnings) == 1 and "report_to tensorboard failed to log" in warnings[0]["message"]
    assert list((Path(job["run_dir"]) / "tensorboard").glob("events.out.tfevents.*"))  # it had started
    store.close()
