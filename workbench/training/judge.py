"""A provider judges a trained model: it scores the model's answers to held-out prompts against the
reference answers, from 0 to 10. The mean is recorded as the job's `judge_score`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import mlx_lm

from workbench.providers.params import GenerateParams

if TYPE_CHECKING:
    from workbench.data import Examples
    from workbench.training.run import RunOutcome

JUDGE_PROMPT = (
    "You grade answers. Question:\n{question}\n\nReference answer:\n{reference}\n\n"
    "Candidate answer:\n{answer}\n\nHow well does the candidate answer the question, from 0 (wrong) "
    "to 10 (as good as the reference)? Reply with the number only."
)
_SCORE = re.compile(r"\b(10|[0-9])(?:\.\d+)?\b")


def parse_score(text: str) -> float | None:
    match = _SCORE.search(text)
    return float(match.group(1)) if match else None


def held_out(examples: list[dict], count: int) -> list[tuple[list[dict], str]]:
    """(prompt messages, reference answer) for chat examples that end with an assistant turn."""
    pairs = []
    for example in examples:
        messages = example.get("messages") or []
        if "chosen" in example:  # a preference row (dpo, orpo): its chosen answer is the reference
            messages = [*messages, {"role": "assistant", "content": example["chosen"]}]
        if len(messages) >= 2 and messages[-1]["role"] == "assistant":
            pairs.append((messages[:-1], messages[-1]["content"]))
        if len(pairs) == count:
            break
    return pairs


def judge_run(outcome: RunOutcome, examples: Examples, config, settings, reporter) -> float | None:
    """Score a completed run's model (`outcome.model`) on its held-out rows (else its training rows),
    with `config.eval_provider` as the judge."""
    from workbench.models.resolver import ModelResolver
    from workbench.providers.litellm_bridge import route_litellm_logs
    from workbench.providers.local_mlx import LocalMLX
    from workbench.providers.router import AllProvidersFailed, ProviderRouter
    from workbench.providers.secrets import redactor

    # The worker's log is a file under the run folder: litellm's records go through the root's
    # handlers, and the keys the router loads are masked there, as in the service.
    route_litellm_logs(settings.log_level)
    redactor.install()
    router = ProviderRouter(settings, LocalMLX(settings, ModelResolver(settings)))
    pairs = held_out(examples.valid or examples.train, config.eval_prompts)
    model, tokenizer = outcome.model, outcome.tokenizer
    model.eval()
    scores = []
    for messages, reference in pairs:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=64)
        question = messages[-1]["content"]
        try:
            verdict = router.complete(GenerateParams(
                messages=[{"role": "user", "content": JUDGE_PROMPT.format(
                    question=question, reference=reference, answer=answer)}],
                provider=config.eval_provider, max_tokens=8, temperature=0.0,
            ))
        except AllProvidersFailed as exc:
            # The model is trained and saved either way: say why there is no score, do not fail the job.
            reporter.note(f"the judge could not answer: {redactor(str(exc))}", {"attempts": exc.attempts})
            break
        score = parse_score(verdict.generated_text)
        if score is not None:
            scores.append(score)
        reporter.note(f"judged by {config.eval_provider}: {score if score is not None else 'no score'}",
                      {"question": question, "answer": answer, "reference": reference,
                       "verdict": verdict.generated_text, "score": score})
    mean = sum(scores) / len(scores) if scores else None
    reporter.evaluation(outcome.step, {"judge_score": mean})
    return mean
