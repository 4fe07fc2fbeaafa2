"""lm-evaluation-harness as a client of /v1/completions: its `local-completions` model with its
default settings (token-id prompts, echo with logprobs, the model folder's own tokenizer), batches of
8, on the shipped tasks of each request kind; its numbers equal lm-eval's run in process on the same
model through the workbench's evaluation model (WorkbenchLM, mlx-lm's MLXLM)."""

import lm_eval
import lm_eval.models.openai_completions  # noqa: F401  (registers local-completions)
import pytest
from lm_eval.tasks import TaskManager

from workbench.evaluation.harness import WorkbenchLM
from workbench.evaluation.tasks import SHIPPED

# A few dozen requests in all: 5 questions x 4 choices, 8 texts scored, 8 continued.
TASKS = {"workbench_arith_mc": 5, "workbench_sentences_ppl": 8, "workbench_sentences_gen": 8}
SEED = 1234


def evaluate(model, model_args=None) -> dict:
    """Each task's metrics and, per item, what the model answered (log-likelihoods or text)."""
    manager = TaskManager(include_path=[str(SHIPPED)], include_defaults=False)
    found = {}
    for task, limit in TASKS.items():
        run = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], task_manager=manager,
                                      limit=limit, apply_chat_template=False, log_samples=True, random_seed=SEED,
                                      numpy_random_seed=SEED, torch_random_seed=SEED, fewshot_random_seed=SEED)
        answers = [[r[0] for r in s["resps"]] for s in sorted(run["samples"][task], key=lambda s: s["doc_id"])]
        found[task] = (run["results"][task], answers)
    return found


def test_lm_eval_local_completions_gets_the_in_process_numbers(api, tiny, models_dir):
    over_http = evaluate("local-completions", {
        "base_url": api.url + "/v1/completions", "model": "tiny", "tokenizer": f"{models_dir}/tiny",
        "batch_size": 8, "max_retries": 1,
    })
    model, tokenizer = tiny
    in_process = evaluate(WorkbenchLM(model, tokenizer, batch_size=8, use_chat_template=False))

    (mc, mc_answers), (mc_here, mc_answers_here) = over_http["workbench_arith_mc"], in_process["workbench_arith_mc"]
    assert len(mc_answers) == TASKS["workbench_arith_mc"]
    for item, item_here in zip(mc_answers, mc_answers_here):  # each choice: (log-likelihood, greedy)
        assert [lp for lp, _ in item] == pytest.approx([lp for lp, _ in item_here], abs=1e-4)
        assert [greedy for _, greedy in item] == [greedy for _, greedy in item_here]
    assert (mc["acc,none"], mc["acc_norm,none"]) == (mc_here["acc,none"], mc_here["acc_norm,none"])

    (ppl, ppl_answers), (ppl_here, ppl_answers_here) = (over_http["workbench_sentences_ppl"],
                                                        in_process["workbench_sentences_ppl"])
    assert len(ppl_answers) == TASKS["workbench_sentences_ppl"]
    assert [a[0] for a in ppl_answers] == pytest.approx([a[0] for a in ppl_answers_here], abs=1e-3)
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ppl[metric] == pytest.approx(ppl_here[metric], rel=1e-5)

    (gen, gen_answers), (gen_here, gen_answers_here) = (over_http["workbench_sentences_gen"],
                                                        in_process["workbench_sentences_gen"])
    assert len(gen_answers) == TASKS["workbench_sentences_gen"] and any(a[0].strip() for a in gen_answers)
    assert gen_answers == gen_answers_here  # greedy: the same text
    assert gen["exact_match,none"] == gen_here["exact_match,none"]
