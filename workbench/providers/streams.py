"""What a caller of the local engine holds: its request, the stream of text it reads while the
request runs, and the completion at the end (engine.py runs them)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    # Scoring (docs/architecture.md, "Scoring and log-probabilities"). `logprobs`: None for none,
    # else each generated token's log-probability and its `logprobs` most likely alternatives.
    # `echo`: score the prompt's own tokens too (then max_tokens may be 0: scoring only).
    logprobs: int | None = None
    echo: bool = False
    seed: int | None = None  # a sampler of its own, seeded: the same seed gives the same text
    # Constrained decoding (grammar.py): anything with `processor()` giving a logits processor.
    constraint: object | None = None


@dataclass
class TokenScore:
    """One token's log-probability (None for a prompt's first token: nothing precedes it) and
    its most likely alternatives, (token id, log-probability) in descending order."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (eos or a stop string), "length", or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens taken from the prompt cache instead of processed
    logprobs: list[TokenScore] | None = None  # generated tokens' (an ending eos too), when asked for
    prompt_logprobs: list[TokenScore] | None = None  # the prompt's tokens, with echo


class EngineClosed(RuntimeError):
    pass


class EngineFull(RuntimeError):
    """The batch and the queue behind it are full: the request was not taken."""


class GenerationStream:
    """What a caller holds while its request runs: iterate for text pieces, then read `result`."""

    def __init__(self, request: GenerationRequest, on_end=None):
        self.request = request
        self.result: Completion | None = None
        self._events: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._quiet = False  # set by wait(): no one reads the pieces, so the engine keeps them
        self._on_end = on_end

    def _end(self, final) -> None:
        """Hand over the last event (a Completion or an error), once, and give back its place."""
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end()
        self._events.put(final)

    def __iter__(self) -> Iterator[str]:
        while True:
            event = self._events.get()
            if isinstance(event, str):
                yield event
            elif isinstance(event, Completion):
                self.result = event
                return
            else:
                raise event

    def wait(self) -> Completion:
        # Handing over each piece would wake this thread once per token to throw it away.
        self._quiet = True
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Ask the engine to drop this request (a streaming client went away)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()
