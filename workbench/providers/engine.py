"""The local generation engine: one model, one thread that owns mlx-lm's BatchGenerator.

Requests arrive through a queue and join the running batch (continuous batching), each with its
own max_tokens, sampler and stop strings. `BatchGenerator` has no locks, so only the engine thread
touches it and the model, as in `mlx_lm.server`.

Prompt caching, also as in `mlx_lm.server`: the KV cache of every request that leaves the batch is
kept in mlx-lm's `LRUPromptCache` under its tokens (prompt and answer), and a new request starts from
the nearest cached prefix, so the next turn of a chat processes only what was added since.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences, TextStateMachine
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_sampler

from workbench.providers.scoring import score_prompts, seeded_sampler, token_score
from workbench.providers.streams import (
    Completion,
    EngineClosed,
    EngineFull,
    GenerationRequest,
    GenerationStream,
    TokenScore,
)
from workbench.providers.turns import answer_ends

log = logging.getLogger(__name__)

COALESCE_S = 0.005


@lru_cache(maxsize=64)
def _sampler(temperature: float, top_p: float):
    # One object per setting: BatchGenerator samples the whole batch in one call when its
    # requests share a sampler object, and row by row otherwise.
    return make_sampler(temp=temperature, top_p=top_p)


def _forbid_eos(eos_ids, count: int):
    """A logits processor that rules out eos for the first `count` tokens (no empty answers)."""
    calls, mask = 0, None

    def process(tokens, logits):
        nonlocal calls, mask
        calls += 1
        if calls > count:
            return logits
        if mask is None:
            mask = mx.zeros(logits.shape[-1])
            mask[list(eos_ids)] = -mx.inf
        return logits + mask

    return process


@dataclass
class _Active:
    """Engine-side state of one request in the batch."""

    stream: GenerationStream
    detokenizer: object
    stop_state: tuple | None
    cached_tokens: int = 0
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    done: bool = False
    eos_forbidden: bool = False
    logprobs: list[TokenScore] | None = None  # generated tokens' scores, when the request asks
    prompt_logprobs: list[TokenScore] | None = None  # its prompt's, with echo

    def emit(self, text: str) -> None:
        if text:
            self.parts.append(text)
            if not self.stream._quiet:
                self.stream._events.put(text)

    def finish(self, reason: str) -> None:
        self.done = True
        request = self.stream.request
        self.stream._end(
            Completion("".join(self.parts), reason, len(request.prompt_tokens), self.tokens,
                       self.cached_tokens, self.logprobs, self.prompt_logprobs)
        )


class LocalEngine:
    def __init__(self, model, tokenizer, *, max_batch: int = 32, prompt_cache_size: int = 10,
                 max_waiting: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self._max_batch = max_batch
        # Requests taken and not yet finished: the batch and those waiting for a place in it. A
        # bound keeps a flood of requests from growing memory and every caller's wait without end.
        self._capacity = None if max_waiting is None else max_batch + max_waiting
        self._taken = 0
        self._taken_lock = threading.Lock()
        self._inbox: queue.Queue[GenerationStream | None] = queue.Queue()
        self._closed = False
        # eos, and the tokens that open another turn or document: none is ever text (turns.py).
        self._ends = answer_ends(tokenizer)
        self._eos_only = StopSequences([(t,) for t in sorted(self._ends)])
        # Only the engine thread reads or changes the prompt cache; 0 entries turns it off.
        self._prompt_cache = LRUPromptCache(max_size=prompt_cache_size) if prompt_cache_size > 0 else None
        self._counts = {"requests": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0}
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> GenerationStream:
        return self.submit_all([request])[0]

    def submit_all(self, requests: list[GenerationRequest]) -> list[GenerationStream]:
        """Take all the requests or none (EngineFull): a batch is answered whole."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        with self._taken_lock:
            if self._capacity is not None and self._taken + len(requests) > self._capacity:
                raise EngineFull(
                    f"{self._taken} requests are generating or waiting (at most {self._capacity})"
                )
            self._taken += len(requests)
        streams = [GenerationStream(r, on_end=self._give_back) for r in requests]
        for stream in streams:
            self._inbox.put(stream)
        return streams

    def _give_back(self) -> None:
        with self._taken_lock:
            self._taken -= 1

    @property
    def taken(self) -> int:
        """Requests generating or waiting."""
        return self._taken

    def generate(self, request: GenerationRequest) -> Completion:
        return self.submit(request).wait()

    def stats(self) -> dict:
        """Requests served, and how many of their prompt tokens came from the prompt cache."""
        counts = dict(self._counts)
        counts["in_flight"] = self._taken
        cache = self._prompt_cache
        counts["prompt_cache"] = {
            "max_entries": cache.max_size if cache else 0,
            "entries": len(cache) if cache else 0,
            "bytes": cache.nbytes if cache else 0,
        }
        return counts

    def close(self) -> None:
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=30)

    # The engine thread ----------------------------------------------------------------------

    def _new_generator(self) -> BatchGenerator:
        return BatchGenerator(
            self.model,
            stop_tokens=[(t,) for t in sorted(self._ends)],
            completion_batch_size=self._max_batch,
            stream=mx.new_stream(mx.default_device()),
        )

    def _run(self) -> None:
        generator = self._new_generator()
        active: dict[int, _Active] = {}
        while True:
            if not self._admit(generator, active, block=not active):
                break
            if not active:
                continue
            try:
                _, responses = generator.next()
                finished = self._deliver(generator, responses, active)
                finished += [uid for uid, a in active.items() if a.stream.cancelled]
            except Exception as exc:  # one broken batch must not end the engine
                log.exception("generation failed; the requests in this batch get the error")
                for entry in active.values():
                    entry.stream._end(exc)
                active.clear()
                generator.close()
                generator = self._new_generator()
                continue
            self._retire(generator, active, finished)
        for entry in active.values():
            entry.stream._end(EngineClosed("the engine was closed"))
        while True:  # requests still waiting get the same answer, not a wait without end
            try:
                waiting = self._inbox.get_nowait()
            except queue.Empty:
                break
            if waiting is not None:
                waiting._end(EngineClosed("the engine was closed"))
        generator.close()
        # Free, while this thread and its stream still exist, the arrays the batch and the prompt
        # cache made on it, then the thread's streams: left to the interpreter's exit they abort the
        # process now and then (std::terminate); MLX asks each thread to call clear_streams.
        if self._prompt_cache is not None:
            self._prompt_cache.trim_to(n_sequences=0)
        del generator, active
        gc.collect()
        mx.clear_streams()

    def _admit(self, generator: BatchGenerator, active: dict[int, _Active], block: bool) -> bool:
        """Move waiting requests into the batch; False once the engine is told to close."""
        idle = block
        to_score: list[GenerationStream] = []  # echo requests that came together: one scoring pass
        try:
            while True:
                try:
                    if block:
                        stream = self._inbox.get(timeout=0.5)
                    elif idle:
                        # A new batch is forming: give requests sent together a moment to arrive, so
                        # their prompts are processed in one pass rather than one after another.
                        stream = self._inbox.get(timeout=COALESCE_S)
                    else:
                        stream = self._inbox.get_nowait()
                except queue.Empty:
                    return True
                if stream is None:
                    return False
                block = False
                if stream.request.echo:
                    to_score.append(stream)
                else:
                    self._start(generator, active, stream, None)
        finally:
            if to_score:
                for stream, scores in zip(to_score, self._score(generator, to_score)):
                    if scores is not None:
                        self._start(generator, active, stream, scores)

    def _start(self, generator: BatchGenerator, active: dict[int, _Active], stream: GenerationStream,
               prompt_scores: list[TokenScore] | None) -> None:
        """Put one request into the batch (or answer it at once when it only scores its prompt)."""
        request = stream.request
        self._counts["requests"] += 1
        self._counts["prompt_tokens"] += len(request.prompt_tokens)
        if request.max_tokens == 0:
            stream._end(Completion("", "length", len(request.prompt_tokens), 0,
                                   logprobs=[] if request.logprobs is not None else None,
                                   prompt_logprobs=prompt_scores))
            return
        forbid_eos = request.min_tokens > 1
        try:
            uid, cached = self._insert(generator, request, forbid_eos)
        except Exception as exc:
            stream._end(exc)
            return
        entry = self._track(stream, forbid_eos, cached)
        entry.prompt_logprobs = prompt_scores
        entry.logprobs = [] if request.logprobs is not None else None
        active[uid] = entry
        self._counts["cached_prompt_tokens"] += cached

    def _score(self, generator: BatchGenerator, streams: list[GenerationStream]) -> list:
        """The prompts of `streams` scored in one pass (docs/architecture.md, "Scoring and
        log-probabilities"); a failure is each request's error, and its entry None."""
        try:
            with mx.stream(generator.stream):
                return score_prompts(self.model, [s.request.prompt_tokens for s in streams],
                                     [s.request.logprobs or 0 for s in streams])
        except Exception as exc:
            log.exception("scoring failed; the requests scored together get the error")
            for stream in streams:
                stream._end(exc)
            return [None] * len(streams)

    def _insert(self, generator: BatchGenerator, request: GenerationRequest,
                forbid_eos: bool) -> tuple[int, int]:
        """Add a request to the batch; its uid and how many prompt tokens the cache supplied."""
        prompt = request.prompt_tokens
        if not prompt:
            raise ValueError("empty prompt: nothing to continue")
        cache, rest = self._cached_prefix(prompt)
        sampler = _sampler(request.temperature, request.top_p)
        if request.seed is not None and request.temperature > 0:
            sampler = seeded_sampler(request.temperature, request.top_p, request.seed)
        processors = []
        if forbid_eos:
            processors.append(_forbid_eos(self._ends, request.min_tokens))
        if request.constraint is not None:  # a fresh matcher for each (re)insertion
            processors.append(request.constraint.processor())
        cached = len(prompt) - len(rest)
        (uid,) = generator.insert(
            [rest],
            max_tokens=[request.max_tokens],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            samplers=[sampler],
            logits_processors=[processors],
            stop_sequences=[self._eos_only],
        )
        return uid, cached

    def _cached_prefix(self, prompt: list[int]) -> tuple[list | None, list[int]]:
        """The KV cache of the longest cached prefix of `prompt` (a copy), and the tokens after it."""
        if self._prompt_cache is None:
            return None, prompt
        cache, rest = self._prompt_cache.fetch_nearest_cache(None, prompt)
        if cache is not None and not rest:
            # The whole prompt is cached, but generation starts by feeding its last token: step
            # the cache back by one (a cache that cannot be trimmed is not used).
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, 1)
                rest = prompt[-1:]
            else:
                cache, rest = None, prompt
        return cache, rest

    def _keep_cache(self, tokens: list[int] | None, cache: list | None) -> None:
        """Remember the KV cache of a request that left the batch, under the tokens it holds."""
        if self._prompt_cache is None or not tokens or not cache:
            return
        # Copy it out now (without waiting for it): the cache is a slice of the batch's arrays, and
        # left lazy it would keep the whole batch's KV memory alive while it stays in the cache.
        mx.async_eval([c.state for c in cache])
        self._prompt_cache.insert_cache(None, list(tokens), cache)

    def _track(self, stream: GenerationStream, eos_forbidden: bool, cached: int) -> _Active:
        detokenizer = self.tokenizer.detokenizer
        # Continue from the prompt's last token: a fresh detokenizer drops the leading space of
        # its first piece, which would glue a completion onto its prompt ("The sky isblue").
        detokenizer.add_token(stream.request.prompt_tokens[-1])
        detokenizer.finalize()
        _ = detokenizer.last_segment  # reading it marks the prompt's text as delivered
        stop_state = None
        if stream.request.stop:
            # Stop strings matched on text, not tokens: a stop can sit inside a larger token, and
            # text that might begin a stop is held back until it is known not to.
            machine = TextStateMachine({"normal": [(s, None) for s in stream.request.stop]})
            stop_state = machine.make_state()
        return _Active(stream, detokenizer, stop_state, eos_forbidden=eos_forbidden, cached_tokens=cached)

    def _deliver(self, generator: BatchGenerator, responses, active: dict[int, _Active]) -> list[int]:
        finished = []
        for r in responses:
            if r.finish_reason is not None:
                self._keep_cache(r.all_tokens, r.prompt_cache)
            entry = active[r.uid]
            request = entry.stream.request
            first_is_eos = r.finish_reason == "stop" and entry.tokens == 0
            if first_is_eos and request.min_tokens and not entry.eos_forbidden:
                # The first token was eos: ask again with eos ruled out. Sampling anew with eos
                # masked draws from what masking from the start would have, without making every
                # request pay for a logits processor (it moves the batch onto a per-row path).
                del active[r.uid]
                entry.eos_forbidden = True
                uid, _ = self._insert(generator, request, forbid_eos=True)
                active[uid] = entry
                continue
            entry.tokens += 1
            if entry.logprobs is not None:  # eos too: a scorer asking for n tokens reads n scores
                entry.logprobs.append(token_score(r.logprobs, r.token, request.logprobs))
            if r.finish_reason != "stop":  # the eos token itself is not text
                entry.detokenizer.add_token(r.token)
            if r.finish_reason is not None:
                entry.detokenizer.finalize()
            piece = entry.detokenizer.last_segment
            if entry.stop_state is None:
                entry.emit(piece)
            else:
                entry.stop_state, text, state = TextStateMachine.step(entry.stop_state, piece)
                entry.emit(text)
                if state is None:
                    entry.finish("stop")
                    finished.append(r.uid)
                    continue
                if r.finish_reason is not None:
                    entry.stop_state, held, _ = TextStateMachine.flush(entry.stop_state)
                    entry.emit(held)
            if r.finish_reason is not None:
                entry.finish(r.finish_reason)
                finished.append(r.uid)
        return finished

    def _retire(self, generator: BatchGenerator, active: dict[int, _Active], uids: list[int]) -> None:
        uids = [uid for uid in dict.fromkeys(uids) if uid in active]
        for uid in uids:
            entry = active.pop(uid)
            if not entry.done:
                entry.finish("cancelled")
        if uids:
            # Those that ended by eos or length have left the batch already (their caches were kept
            # as they finished); remove is a no-op there. The others' caches are kept here.
            with mx.stream(generator.stream):
                caches = generator.remove(uids, return_prompt_caches=self._prompt_cache is not None)
                for cache, tokens in caches.values():
                    self._keep_cache(tokens, cache)
