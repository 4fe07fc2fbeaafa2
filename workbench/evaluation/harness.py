"""lm-evaluation-harness in process over a model the workbench loaded, with progress and stop.

The `LM` is mlx-lm's own (`mlx_lm.evaluate.MLXLM`: its loglikelihood, loglikelihood_rolling and
generate_until), given a model instead of a path, so that the workbench's loading (an experiment's
adapter applied without fusing) and its compute policy decide what is evaluated. Each request method
runs over its requests a few batches at a time: between chunks it reports progress and honours a
stop, which lm-eval itself offers no way to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import lm_eval
import mlx.core as mx
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from mlx_lm.evaluate import MLXLM

from workbench.evaluation.config import EvalConfig
from workbench.evaluation.samples import plain_results, plain_samples
from workbench.models.loading import load_resolved
from workbench.models.resolver import ResolvedModel
from workbench.training import policy as compute

Progress = Callable[[int, int, str], None]  # (requests done, requests in all, request kind)
ShouldStop = Callable[[], bool]
CHUNK_BATCHES = 4  # batches per chunk: progress and stop are seen this often


class Stopped(Exception):
    """The evaluation was asked to stop; raised between chunks of requests."""


@dataclass
class Loaded:
    model: object
    tokenizer: object
    policy: compute.ComputePolicy


def load(resolved: ResolvedModel) -> Loaded:
    """The model as the engine serves it (models/loading.py: its adapter applied, not fused), cast
    as a training job computes (training/policy.py: fp32 on the CPU, bf16 on a GPU)."""
    model, tokenizer, _ = load_resolved(resolved)
    chosen = compute.choose()
    compute.prepare(model, chosen)
    return Loaded(model, tokenizer, chosen)


class WorkbenchLM(MLXLM):
    """mlx-lm's lm-eval model over an already loaded model and tokenizer."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_tokens: int | None = None,
                 use_chat_template: bool | None = None):
        LM.__init__(self)  # MLXLM's own __init__ would load a path: set what it sets, from ours
        self._model, self.tokenizer = model, tokenizer
        # Generation only: MLXLM's own max_tokens also truncates the contexts it scores.
        self._max_tokens = None
        self.max_gen_tokens = max_tokens
        self._batch_size = batch_size
        self._sampler = None  # greedy, as mlx_lm.evaluate's default
        self.use_chat_template = (tokenizer.chat_template is not None if use_chat_template is None
                                  else use_chat_template)
        self.progress: Progress = lambda done, total, what: None
        self.should_stop: ShouldStop = lambda: False

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        # Requests sharing a context stay in one chunk: MLXLM scores that context once for them all.
        return self._in_chunks(super().loglikelihood, requests, "loglikelihood",
                               lambda a, b: a.args[0] == b.args[0])

    def loglikelihood_rolling(self, requests) -> list[float]:
        return self._in_chunks(self._rolling, requests, "loglikelihood_rolling")

    def _rolling(self, requests) -> list[float]:
        """Each text's log-likelihood conditioned on the tokenizer's start token (bos, else eos), as
        lm-eval defines it and its API models compute it: mlx-lm's own leaves the first token
        unscored, so a server scored by lm-eval's local-completions would differ by that token."""
        start = self.tokenizer.bos_token_id
        start = self.tokenizer.eos_token_id if start is None else start
        texts = [r.args[0] for r in requests]
        inputs = [(start, *self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        totals = []
        for i in range(0, len(inputs), self._batch_size):
            scores, lengths, _ = self._score_fn(inputs[i : i + self._batch_size])
            scored = mx.arange(scores.shape[-1]) < lengths[:, None] - 1  # a row's padding is not
            totals.extend((scores * scored).sum(axis=-1).tolist())
        return totals

    def generate_until(self, requests) -> list[str]:
        if self.max_gen_tokens:  # in place of the task's own cap: the logged arguments show it
            for request in requests:
                request.args[1]["max_gen_toks"] = self.max_gen_tokens
        return self._in_chunks(super().generate_until, requests, "generate_until")

    def _in_chunks(self, method, requests, what: str, together=lambda a, b: False) -> list:
        return in_chunks(self, method, requests, what, together)


def in_chunks(lm, method, requests, what: str, together=lambda a, b: False) -> list:
    """`method` over `requests` a few batches at a time, telling `lm.progress` after each chunk and
    raising Stopped before one when `lm.should_stop()` says so."""
    results: list = []
    size = lm._batch_size * CHUNK_BATCHES
    start = 0
    lm.progress(0, len(requests), what)
    while start < len(requests):
        if lm.should_stop():
            raise Stopped(f"stopped after {start} of {len(requests)} {what} requests")
        end = min(start + size, len(requests))
        while end < len(requests) and together(requests[end - 1], requests[end]):
            end += 1
        results.extend(method(requests[start:end]))
        start = end
        lm.progress(start, len(requests), what)
    return results


class ProviderLM(LM):
    """lm-eval's model over a configured remote provider (through the workbench's router, that
    provider alone: no fallback to another model), for generation tasks: a provider gives text, not
    the log-likelihoods multiple-choice tasks need. Greedy, as the local evaluation is."""

    use_chat_template = False  # the provider applies its own

    def __init__(self, complete, provider: str, model: str | None, batch_size: int = 8,
                 max_tokens: int | None = None):
        super().__init__()
        self.complete, self.provider, self.model = complete, provider, model
        self._batch_size, self.max_gen_tokens = batch_size, max_tokens
        self.progress: Progress = lambda done, total, what: None
        self.should_stop: ShouldStop = lambda: False

    def generate_until(self, requests) -> list[str]:
        answer = self._answer
        return in_chunks(self, lambda chunk: [answer(*r.args) for r in chunk], requests, "generate_until")

    def _answer(self, context: str, options: dict) -> str:
        from workbench.providers.params import MAX_STOPS, GenerateParams

        until = [u for u in (options.get("until") or []) if u][:MAX_STOPS]
        params = GenerateParams(prompt=context, provider=self.provider, model=self.model, temperature=0.0,
                                max_tokens=self.max_gen_tokens or options.get("max_gen_toks", 256),
                                stop=until)
        return self.complete(params).generated_text

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{self.provider} answers generation tasks only")

    loglikelihood_rolling = loglikelihood


def make_lm(loaded: Loaded, config: EvalConfig) -> WorkbenchLM:
    return WorkbenchLM(loaded.model, loaded.tokenizer, batch_size=config.batch_size,
                       max_tokens=config.max_tokens, use_chat_template=config.apply_chat_template)


@dataclass
class Outcome:
    results: dict[str, dict]  # task -> lm-eval's metrics ("acc,none", "acc_stderr,none", ...)
    samples: list[dict]  # one flat dict per item and filter: task, doc_id, prompt, target, response, scores
    n_samples: dict[str, dict] = field(default_factory=dict)  # task -> {"original": N, "effective": n}
    higher_is_better: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


def run(lm: WorkbenchLM, config: EvalConfig, manager: TaskManager,
        progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Outcome:
    """Evaluate `lm` on the config's tasks with lm-eval's own evaluator; raises Stopped when
    `should_stop` says so between chunks."""
    lm.progress = progress or (lambda done, total, what: None)
    lm.should_stop = should_stop or (lambda: False)
    chat = lm.use_chat_template if config.apply_chat_template is None else config.apply_chat_template
    lm.use_chat_template = chat  # tokenization follows the prompt's form (MLXLM adds BOS without one)
    started = time.perf_counter()
    found = lm_eval.simple_evaluate(
        model=lm, tasks=list(config.tasks), task_manager=manager, limit=config.limit,
        num_fewshot=config.num_fewshot, log_samples=True, apply_chat_template=chat,
        random_seed=config.seed, numpy_random_seed=config.seed, torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )
    return Outcome(
        results=plain_results(found["results"]),
        samples=plain_samples(found.get("samples", {})),
        n_samples=found.get("n-samples", {}),
        higher_is_better=found.get("higher_is_better", {}),
        seconds=round(time.perf_counter() - started, 3),
    )
