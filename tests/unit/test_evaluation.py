"""Evaluation engine: lm-eval in process over the workbench's loaded model, tasks from the workbench's
folders, and the checks made before any job starts."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_adapters import train_adapter
from workbench.errors import InputError
from workbench.evaluation import harness
from workbench.evaluation.config import EvalConfig
from workbench.evaluation.samples import plain_results
from workbench.evaluation.tasks import check_tasks, task_manager
from workbench.models.resolver import ModelResolver

# Small enough to run in seconds on 2 cores, large enough that every request kind runs in several
# chunks (batch_size 2: 8 requests a chunk).
LIMIT = 10
BATCH = 2


@pytest.fixture
def manager(settings):
    # lm-eval's own task index takes some seconds to build; these tests need the workbench's only.
    return task_manager(settings, registered=False)


@pytest.fixture
def loaded(settings):
    return harness.load(ModelResolver(settings).resolve("tiny"))


def home_tasks(settings):
    folder = settings.home_dir / "tasks"
    folder.mkdir(exist_ok=True)
    return folder


def evaluate_as_lm_eval_does(models_dir, manager, task):
    """lm-eval's own run over mlx-lm's MLXLM, loaded by path as `mlx_lm.evaluate` does. The tiny
    model is stored in fp32, so the workbench's CPU policy (cast to fp32) leaves it unchanged."""
    import lm_eval
    from mlx_lm.evaluate import MLXLM

    lm = MLXLM(f"{models_dir}/tiny", batch_size=BATCH)
    return lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, limit=LIMIT, log_samples=True,
        apply_chat_template=lm.use_chat_template, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
    )


@pytest.mark.parametrize("task", ["workbench_arith_mc", "workbench_arith_gen", "workbench_count_gen"])
def test_metrics_equal_lm_evals_own_run(task, models_dir, manager, loaded):
    config = EvalConfig(name="e", tasks=[task], limit=LIMIT, batch_size=BATCH)

    ours = harness.run(harness.make_lm(loaded, config), config, manager)
    theirs = evaluate_as_lm_eval_does(models_dir, manager, task)

    # Accuracies and their standard errors exactly; loglikelihoods to float32's rounding.
    assert ours.results[task] == plain_results(theirs["results"])[task]
    assert len(ours.samples) == LIMIT
    for item, logged in zip(ours.samples, theirs["samples"][task]):
        assert item["doc_id"] == logged["doc_id"]
        if item["loglikelihoods"] is not None:
            assert item["loglikelihoods"] == pytest.approx([r[0] for r in logged["filtered_resps"]], rel=1e-5)
        else:
            assert item["response"] == logged["filtered_resps"][0]
            assert (item["raw_response"] or item["response"]) == logged["resps"][0][0]


def test_an_adapter_is_evaluated_without_a_fused_folder(settings, models_dir, manager, tmp_path):
    """As mlx-lm users do it (fuse, then `mlx_lm.evaluate` the fused folder), minus the fused folder."""
    from mlx_lm.evaluate import MLXLM

    from workbench.training.fuse import fuse_adapter

    adapter = tmp_path / "run" / "adapters"
    train_adapter(adapter, f"{models_dir}/tiny")
    before = sorted(tmp_path.rglob("*"))
    config = EvalConfig(name="e", model=str(adapter), tasks=["workbench_arith_mc"], limit=LIMIT, batch_size=BATCH)
    resolved = ModelResolver(settings).resolve(config.model)

    ours = harness.run(harness.make_lm(harness.load(resolved), config), config, manager)

    assert sorted(tmp_path.rglob("*")) == before  # nothing written: no fused copy
    fused = fuse_adapter(resolved, tmp_path / "fused")
    lm = MLXLM(str(fused), batch_size=BATCH)
    theirs = harness.run(lm, config, manager)  # the same evaluator over mlx-lm's own loading
    assert [s["loglikelihoods"] for s in ours.samples] == [
        pytest.approx(s["loglikelihoods"], rel=1e-4) for s in theirs.samples]
    untuned = harness.run(harness.make_lm(harness.load(ModelResolver(settings).resolve("tiny")), config),
                          config, manager)
    assert [s["loglikelihoods"] for s in untuned.samples] != [s["loglikelihoods"] for s in ours.samples]


def test_items_read_as_prompt_target_response_and_scores(manager, loaded):
    config = EvalConfig(name="e", tasks=["workbench_arith_mc", "workbench_arith_gen"], limit=2)

    outcome = harness.run(harness.make_lm(loaded, config), config, manager)

    multiple_choice, generated = outcome.samples[0], outcome.samples[-1]
    assert multiple_choice["task"] == "workbench_arith_mc"
    assert multiple_choice["target"] in multiple_choice["choices"]  # the answer's text, not its index
    assert multiple_choice["response"] in multiple_choice["choices"]
    assert multiple_choice["acc"] in (0.0, 1.0)
    assert generated["task"] == "workbench_arith_gen" and generated["target"].isdigit()
    assert "What is" in generated["prompt"] and generated["exact_match"] in (0.0, 1.0)
    assert set(outcome.results["workbench_arith_gen"]) >= {"exact_match,last_number",
                                                           "exact_match_stderr,last_number"}
    json.dumps(outcome.results), json.dumps(outcome.samples)  # plain JSON, nothing numpy


def test_an_unknown_task_is_refused_with_close_names(manager):
    with pytest.raises(InputError) as refused:
        check_tasks(["workbench_arith_m"], manager)
    assert refused.value.field == "tasks"
    assert "'workbench_arith_m'" in refused.value.message and "workbench_arith_mc" in refused.value.message


def test_a_task_file_that_does_not_parse_is_refused_by_file_and_line(settings):
    broken = home_tasks(settings) / "mine" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("task: mine\ndoc_to_text: [unclosed\noutput_type: generate_until\n")

    with pytest.raises(InputError) as refused:
        task_manager(settings, registered=False)
    assert refused.value.field == "tasks"
    assert f"{broken} line " in refused.value.message


def test_a_task_whose_data_cannot_be_had_offline_is_refused_naming_it(settings):
    """As lm-eval's registered tasks are when their hub dataset is not in the local cache."""
    (home_tasks(settings) / "hub.yaml").write_text(
        "task: from_the_hub\ndataset_path: nobody/absent-dataset\noutput_type: generate_until\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
    )
    with pytest.raises(InputError) as refused:
        check_tasks(["from_the_hub"], task_manager(settings, registered=False), offline="offline mode is on")
    assert refused.value.field == "tasks"
    assert refused.value.message == ("task 'from_the_hub' cannot be loaded: its data is not in the local "
                                     "datasets cache, and offline mode is on")


def test_a_task_whose_data_file_is_missing_is_refused_naming_it(settings, tmp_path):
    (home_tasks(settings) / "gone.yaml").write_text(
        "task: gone\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files: {{test: {tmp_path}/missing.jsonl}}\n  cache_dir: {tmp_path}/cache\n"
        "output_type: generate_until\ntest_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
    )
    with pytest.raises(InputError) as refused:
        check_tasks(["gone"], task_manager(settings, registered=False))
    assert refused.value.field == "tasks"
    assert "'gone'" in refused.value.message and "missing.jsonl" in refused.value.message


def test_a_users_task_in_home_tasks_runs_by_its_task_name(settings, tmp_path, loaded):
    rows = tmp_path / "colours.jsonl"
    rows.write_text("".join(json.dumps({"q": f"Is {c} a colour?", "a": "yes"}) + "\n"
                            for c in ("red", "blue", "green")))
    (home_tasks(settings) / "colours.yaml").write_text(
        "task: my_colours\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files: {{test: {rows}}}\n  cache_dir: {tmp_path}/cache\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\n"
        "doc_to_choice: ['yes', 'no']\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n"
    )
    manager = task_manager(settings, registered=False)
    assert task_manager(settings, registered=False) is manager  # kept while the folders are unchanged
    config = EvalConfig(name="e", tasks=["my_colours"])
    check_tasks(config.tasks, manager)

    outcome = harness.run(harness.make_lm(loaded, config), config, manager)

    assert outcome.n_samples["my_colours"]["effective"] == 3
    assert 0.0 <= outcome.results["my_colours"]["acc,none"] <= 1.0
    assert [item["prompt"].count("Is ") for item in outcome.samples] == [1, 1, 1]


def test_a_stop_between_chunks_raises_stopped(manager, loaded):
    config = EvalConfig(name="e", tasks=["workbench_arith_mc"], limit=LIMIT, batch_size=BATCH)
    seen = []

    with pytest.raises(harness.Stopped):
        harness.run(harness.make_lm(loaded, config), config, manager,
                    progress=lambda done, total, what: seen.append((done, total, what)),
                    should_stop=lambda: len(seen) >= 2)
    assert seen == [(0, 4 * LIMIT, "loglikelihood"), (8, 4 * LIMIT, "loglikelihood")]


@pytest.mark.parametrize("change, field", [
    ({"tasks": []}, "tasks"),
    ({"tasks": [f"t{i}" for i in range(17)]}, "tasks"),
    ({"tasks": ["../../etc/passwd.yaml"]}, "tasks"),  # a path would let lm-eval load any YAML
    ({"limit": 0}, "limit"),
    ({"batch_size": 4096}, "batch_size"),
    ({"name": "bad name"}, "name"),
    ({"num_shots": 2}, "num_shots"),
])
def test_an_evaluation_config_is_bounded(change, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        EvalConfig(**({"name": "e", "tasks": ["workbench_arith_mc"]} | change))
    assert refused.value.errors()[0]["loc"][0] == field
