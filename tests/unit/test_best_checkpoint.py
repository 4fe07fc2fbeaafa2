"""The best checkpoint, early stopping and the test split, as a user checks them: a run whose
validation loss stops improving ends `patience` evaluations after its best, the experiment's name
then serves the best weights (the last stay in the final checkpoint), a stop and resume changes
none of it, and the test loss is the published model's over every held-out test row.

One run, shared by the checks: a constant, high learning rate on the tiny model overshoots, so its
validation loss has a best well before max_steps; the checks read that from the recorded series."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.tuner.trainer import default_loss

from workbench.data import Examples, tokenize
from workbench.errors import InputError
from workbench.models.loading import load_resolved
from workbench.models.resolver import ModelResolver
from workbench.settings import Settings
from workbench.training.batching import padded_batch
from workbench.training.config import TrainingConfig
from workbench.training.manager import JobManager
from workbench.training.store import JobStore
from workbench.training.worker import run_job

PATIENCE = 3
RUN = {"training_type": "lora", "dataset": "alpaca", "batch_size": 2, "max_seq_length": 64, "max_steps": 40,
       "learning_rate": 1e-2, "lr_schedule": "constant", "eval_steps": 2, "eval_batches": 2,
       "validation_split": 0.1, "test_split": 0.1, "early_stopping_patience": PATIENCE, "save_every": 100}
PROMPT = mx.array([[1, 17, 42, 99, 7]])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, models_dir):
    settings = Settings(home=tmp_path_factory.mktemp("best") / "home", models_path=models_dir,
                        hub_downloads=False)
    store = JobStore(settings.home_dir / "workbench.db")
    yield JobManager(settings, ModelResolver(settings, jobs=store), store, manage=False)
    store.close()


def train(jobs: JobManager, name: str, stop=lambda: None) -> dict:
    job = jobs.start(TrainingConfig(experiment_name=name, **RUN), launch=False)
    run_job(job["job_id"], jobs.settings, jobs.store, stop=stop)
    return jobs.store.get(job["job_id"])


def evaluations(jobs: JobManager, job: dict, measure: str = "eval_loss") -> dict[int, float]:
    return {row["step"]: row[measure] for row in jobs.store.metrics(job["job_id"]) if row[measure] is not None}


def messages(jobs: JobManager, job: dict) -> list[str]:
    return [event["message"] for event in jobs.store.events(job["job_id"])]


@pytest.fixture(scope="module")
def finished(jobs) -> dict:
    return train(jobs, "overshoot")


def test_a_run_completes_patience_evaluations_after_its_best_validation_loss(jobs, finished):
    evals = evaluations(jobs, finished)
    steps = sorted(evals)
    best = min(steps, key=evals.get)
    after_best = steps[steps.index(best) + 1:]

    assert finished["status"] == "completed"
    assert finished["current_step"] < RUN["max_steps"]  # stopped early ...
    assert len(after_best) == PATIENCE and after_best[-1] == finished["current_step"]  # ... exactly then
    assert all(evals[step] >= evals[best] for step in after_best)
    assert (finished["best_step"], finished["best_eval_loss"]) == (best, evals[best])
    assert any(f"early stop at step {finished['current_step']}" in m and f"step {best}'s" in m
               for m in messages(jobs, finished))


def test_the_experiment_serves_the_best_weights_and_keeps_the_last_in_the_final_checkpoint(jobs, finished):
    run_dir = Path(finished["run_dir"])
    published = mx.load(str(Path(finished["adapter_path"]) / "adapters.safetensors"))
    best = mx.load(str(run_dir / "best" / f"step-{finished['best_step']:07d}.safetensors"))
    last = mx.load(str(Path(finished["checkpoint"]) / "trainable.safetensors"))

    assert finished["selected_checkpoint"] == "best"
    assert Path(finished["checkpoint"]).name == f"step-{finished['current_step']:07d}"
    assert published.keys() == best.keys() == last.keys()
    assert all(mx.array_equal(published[k], best[k]) for k in best)
    assert not all(mx.array_equal(published[k], last[k]) for k in last)

    # What generation loads for the experiment's name answers as the best weights do, not the last.
    served, _, _ = load_resolved(jobs.resolver.resolve("overshoot"))
    logits = served(PROMPT)
    served.load_weights(list(best.items()), strict=False)
    assert mx.array_equal(served(PROMPT), logits)
    served.load_weights(list(last.items()), strict=False)
    assert not mx.allclose(served(PROMPT), logits)


def test_the_test_loss_is_the_published_models_over_every_test_row(jobs, finished):
    tested = evaluations(jobs, finished, "test_loss")
    assert list(tested) == [finished["current_step"]]
    assert math.isfinite(finished["test_loss"]) and tested[finished["current_step"]] == finished["test_loss"]

    # Row by row, token-weighted, through the served model: the same loss.
    model, tokenizer, _ = load_resolved(jobs.resolver.resolve("overshoot"))
    examples = Examples.load(Path(finished["run_dir"]))
    test = tokenize(examples, TrainingConfig(**finished["config"]), tokenizer).test
    losses = [default_loss(model, *padded_batch([test[i]], RUN["max_seq_length"]).arrays) for i in range(len(test))]
    total = sum(loss.item() * tokens.item() for loss, tokens in losses) / sum(t.item() for _, t in losses)
    assert len(test) == examples.summary.test_rows > RUN["batch_size"]
    assert finished["test_loss"] == pytest.approx(total, rel=1e-4)


def test_a_run_stopped_after_its_best_and_resumed_keeps_that_best_and_stops_at_the_same_step(jobs, finished):
    # Stopped one evaluation past the best: the evaluations without improvement must survive the resume.
    stop_after = finished["best_step"] + RUN["eval_steps"] + 1
    calls = itertools.count(1)
    stopped = train(jobs, "resumed", stop=lambda: "stopped" if next(calls) > stop_after else None)
    assert (stopped["status"], stopped["current_step"]) == ("stopped", stop_after)

    jobs.resume("resumed", launch=False)
    run_job(stopped["job_id"], jobs.settings, jobs.store, stop=lambda: None)
    resumed = jobs.store.get(stopped["job_id"])

    assert resumed["status"] == "completed"
    assert evaluations(jobs, resumed) == evaluations(jobs, finished)
    for field in ("current_step", "best_step", "best_eval_loss", "selected_checkpoint", "test_loss"):
        assert resumed[field] == finished[field], field
    adapter = mx.load(str(Path(resumed["adapter_path"]) / "adapters.safetensors"))
    reference = mx.load(str(Path(finished["adapter_path"]) / "adapters.safetensors"))
    assert all(mx.array_equal(adapter[k], reference[k]) for k in reference)


@pytest.mark.parametrize("fields, field", [
    ({"validation_split": 0.0, "early_stopping_patience": 2}, "early_stopping_patience"),
    ({"validation_split": 0.0, "select_checkpoint": "best"}, "select_checkpoint"),
])
def test_early_stopping_or_the_best_checkpoint_without_validation_rows_is_refused_at_submission(
        jobs, fields, field):
    config = TrainingConfig(experiment_name="refused", **(RUN | {"early_stopping_patience": None} | fields))
    with pytest.raises(InputError) as refused:
        jobs.start(config, launch=False)
    assert refused.value.field == field and "validation rows" in refused.value.message
    assert jobs.store.latest("refused") is None


def test_select_checkpoint_last_publishes_the_final_weights_even_after_an_early_stop(jobs):
    job = jobs.start(TrainingConfig(experiment_name="last", **RUN, select_checkpoint="last"), launch=False)
    run_job(job["job_id"], jobs.settings, jobs.store, stop=lambda: None)
    job = jobs.store.get(job["job_id"])
    published = mx.load(str(Path(job["adapter_path"]) / "adapters.safetensors"))
    last = mx.load(str(Path(job["checkpoint"]) / "trainable.safetensors"))

    assert job["current_step"] < RUN["max_steps"] and job["selected_checkpoint"] == "last"
    assert all(mx.array_equal(published[k], last[k]) for k in last)
    assert not (Path(job["run_dir"]) / "best").exists()  # nothing kept that will not be published
