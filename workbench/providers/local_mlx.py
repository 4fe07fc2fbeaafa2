"""The `local_mlx` provider: models loaded in this process, each served by its own LocalEngine."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from workbench.errors import Busy, InputError, UnknownModel
from workbench.models.loading import load_resolved
from workbench.models.resolver import ModelNotFound, ModelResolver, ResolvedModel
from workbench.providers.engine import LocalEngine
from workbench.providers.grammar import GrammarCompiler, format_grammar, lark_grammar
from workbench.providers.params import GenerateParams, SamplingParams
from workbench.providers.streams import EngineFull, GenerationRequest, GenerationStream, TokenScore
from workbench.providers.tools import Tool, forced_call_lark, parse_tool_calls, template_tools
from workbench.settings import Settings

NAME = "local_mlx"


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    engine: LocalEngine
    context_length: int
    loaded_at: float = field(default_factory=time.time)
    vocab_size: int = 0  # token ids below it are the tokenizer's (a token-id prompt is checked)
    _grammar: GrammarCompiler | None = None

    @property
    def grammar(self) -> GrammarCompiler:
        """llguidance's view of the tokenizer, made on the first constrained request."""
        if self._grammar is None:
            self._grammar = GrammarCompiler(self.engine.tokenizer)
        return self._grammar


@dataclass
class GenerationResult:
    generated_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    model_path: str
    provider_used: str = NAME
    warnings: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    prompt: str | None = None
    attempts: list[dict] = field(default_factory=list)
    # Scores, when asked for (docs/architecture.md, "Scoring and log-probabilities"): one dict per
    # token (token, token_id, logprob, top_logprobs); `prompt_logprobs` for the prompt with echo.
    logprobs: list[dict] | None = None
    prompt_logprobs: list[dict] | None = None
    prompt_text: str | None = None  # the prompt as text, with echo (a token-id prompt decoded)
    tool_calls: list[dict] | None = None


@dataclass
class PreparedRequest:
    loaded: LoadedModel
    request: GenerationRequest
    warnings: list[str]
    started: float = field(default_factory=time.perf_counter)
    tools: list[Tool] | None = None  # the calls to read back from the answer

    def result(self, stream: GenerationStream, prompt: str | None = None) -> GenerationResult:
        done = stream.result
        assert done is not None, "read the stream to its end first"
        text, finish, calls = done.text, done.finish_reason, None
        if self.tools:
            text, calls = parse_tool_calls(text, self.loaded.engine.tokenizer, self.tools)
            finish = "tool_calls" if calls and finish == "stop" else finish
        return GenerationResult(
            generated_text=text,
            finish_reason=finish,
            tool_calls=calls or None,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            model=self.loaded.resolved.name,
            model_path=self.loaded.resolved.path,
            warnings=self.warnings,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 1),
            prompt=prompt,
            logprobs=self._scores(done.logprobs),
            prompt_logprobs=self._scores(done.prompt_logprobs),
            prompt_text=(self.loaded.engine.tokenizer.decode(self.request.prompt_tokens)
                         if self.request.echo else None),
        )

    def _scores(self, scores: list[TokenScore] | None) -> list[dict] | None:
        if scores is None:
            return None
        decode = self.loaded.engine.tokenizer.decode
        names: dict[int, str] = {}

        def name(token: int) -> str:
            if token not in names:
                names[token] = decode([token])
            return names[token]

        return [{"token": name(s.token), "token_id": s.token, "logprob": s.logprob,
                 "top_logprobs": [{"token": name(t), "token_id": t, "logprob": v} for t, v in s.top]}
                for s in scores]


class LocalMLX:
    def __init__(self, settings: Settings, resolver: ModelResolver):
        self.settings = settings
        self.resolver = resolver
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, name: str | None) -> LoadedModel:
        """The loaded model for a name, loading it (and unloading the least used) if needed."""
        name = name or self.settings.default_model
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and not self._retrained(cached):
                self._loaded.move_to_end(name)
                return cached
            try:
                resolved = self.resolver.resolve(name)
            except ModelNotFound as exc:
                raise UnknownModel(str(exc)) from None
            try:
                model, tokenizer, config = load_resolved(resolved)
            except Exception as exc:
                raise InputError("model", f"{name!r} could not be loaded: {exc}") from None
            if cached is not None:
                cached.engine.close()
            engine = LocalEngine(model, tokenizer, max_batch=self.settings.generation_batch,
                                 max_waiting=self.settings.generation_queue,
                                 prompt_cache_size=self.settings.prompt_cache_size)
            loaded = LoadedModel(resolved, engine, config.get("max_position_embeddings", 4096),
                                 vocab_size=max(tokenizer.get_vocab().values()) + 1)
            self._loaded[name] = loaded
            while len(self._loaded) > self.settings.loaded_models:
                _, evicted = self._loaded.popitem(last=False)
                evicted.engine.close()
            return loaded

    def _retrained(self, loaded: LoadedModel) -> bool:
        """An experiment trained again since it was loaded has a new adapter: load that one."""
        return self.resolver.adapter_changed(loaded.resolved)

    def loaded_models(self) -> list[dict]:
        return [
            {"name": m.resolved.name, "path": m.resolved.path, "source": m.resolved.source,
             "adapter_path": m.resolved.adapter_path, "engine": m.engine.stats()}
            for m in self._loaded.values()
        ]

    def prepare(self, params: SamplingParams, *, prompt: str | None = None,
                messages: list | None = None) -> PreparedRequest:
        loaded = self.model(params.model)
        tools = self._tools(loaded, params)
        prompt_tokens = getattr(params, "prompt_tokens", None)
        if prompt_tokens is not None:
            tokens = self._checked_tokens(loaded, prompt_tokens)
        else:
            tokens = self._tokens(loaded, prompt, messages, tools)
        if not tokens:
            raise InputError("prompt", "the prompt encodes to no tokens")
        room = loaded.context_length - len(tokens)
        if room < 1:
            raise InputError(
                "prompt", f"{len(tokens)} tokens; the model takes at most {loaded.context_length - 1}"
            )
        warnings = []
        max_tokens = params.max_tokens
        limit = min(self.settings.max_tokens_limit, room)
        if max_tokens > limit:
            warnings.append(f"max_tokens {max_tokens} was capped to {limit}")
            max_tokens = limit
        request = GenerationRequest(
            prompt_tokens=list(tokens),
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=tuple(params.stop),
            min_tokens=min(params.min_tokens, max_tokens),
            logprobs=getattr(params, "logprobs", None),
            echo=getattr(params, "echo", False),
            seed=getattr(params, "seed", None),
        )
        constraint = self._constraint(loaded, params, tools)
        if constraint is not None:
            # The grammar decides where the answer ends (eos only once it is complete).
            request = replace(request, constraint=constraint, min_tokens=0)
        return PreparedRequest(loaded, request, warnings, tools=tools)

    @staticmethod
    def _checked_tokens(loaded: LoadedModel, tokens: list[int]) -> list[int]:
        """A token-id prompt, every id in the model's vocabulary (else a 4xx naming `prompt`)."""
        outside = sorted({t for t in tokens if t >= loaded.vocab_size})
        if outside:
            raise InputError("prompt", f"token ids {outside[:5]} are outside the vocabulary of "
                             f"{loaded.resolved.name!r} (ids 0 to {loaded.vocab_size - 1})")
        return list(tokens)

    @staticmethod
    def _tools(loaded: LoadedModel, params: SamplingParams) -> list[Tool] | None:
        """The tools the model is shown and whose calls are read back (none for tool_choice none)."""
        tools = getattr(params, "tools", None)
        if not tools or getattr(params, "tool_choice", None) == "none":
            return None
        if not loaded.engine.tokenizer.has_tool_calling:
            raise InputError("tools", f"the chat template of {loaded.resolved.name!r} has no tool format "
                             "that mlx-lm can parse calls from")
        return tools

    @staticmethod
    def _constraint(loaded: LoadedModel, params: SamplingParams, tools: list[Tool] | None):
        """The grammar the answer is decoded under: a forced tool call, else the response_format."""
        tokenizer = loaded.engine.tokenizer
        forced = tools and forced_call_lark(tools, getattr(params, "tool_choice", None),
                                            tokenizer.tool_call_start, tokenizer.tool_call_end)
        if forced:
            return loaded.grammar.constraint(lark_grammar(forced), "tools")
        grammar = format_grammar(getattr(params, "response_format", None))
        return None if grammar is None else loaded.grammar.constraint(grammar, "response_format")

    @staticmethod
    def _tokens(loaded: LoadedModel, prompt: str | None, messages: list | None,
                tools: list[Tool] | None = None) -> list[int]:
        """The request's tokens. What the tokenizer or the chat template refuses is the request's
        own error (a 4xx), never the model's failure: taken for one, it cooled local_mlx down and
        every client got 503."""
        tokenizer = loaded.engine.tokenizer
        field = "messages" if messages is not None else "prompt"
        try:
            if messages is not None:
                chat = [m.template_dict() for m in messages]
                extra = {"tools": template_tools(tools)} if tools else {}
                return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, **extra))
            return list(tokenizer.encode(prompt))
        except Exception as exc:
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if messages is not None:
                why = f"the chat template of {loaded.resolved.name!r} refuses these messages: {why}"
            else:
                why = f"the tokenizer refuses this prompt: {why}"
            raise InputError(field, why) from None

    @staticmethod
    def _submit(loaded: LoadedModel, requests: list[GenerationRequest]) -> list[GenerationStream]:
        try:
            return loaded.engine.submit_all(requests)
        except EngineFull as exc:
            raise Busy("model", f"{loaded.resolved.name} is busy: {exc}; try again shortly") from None

    def start(self, params: GenerateParams) -> tuple[PreparedRequest, GenerationStream]:
        prepared = self.prepare(params, prompt=params.prompt, messages=params.messages)
        return prepared, self._submit(prepared.loaded, [prepared.request])[0]

    def generate(self, params: GenerateParams) -> GenerationResult:
        prepared, stream = self.start(params)
        stream.wait()
        return prepared.result(stream, params.prompt)

    def generate_many(self, requests: list[GenerateParams]) -> list[GenerationResult]:
        """Several generations submitted at once, so the engine takes them into one batch (and
        scores their prompts in one pass); all are taken or none (Busy)."""
        prepared = [self.prepare(p, prompt=p.prompt, messages=p.messages) for p in requests]
        by_model: dict[int, list[int]] = {}
        for i, p in enumerate(prepared):
            by_model.setdefault(id(p.loaded), []).append(i)
        streams: list[GenerationStream | None] = [None] * len(prepared)
        for indices in by_model.values():
            loaded = prepared[indices[0]].loaded
            for i, stream in zip(indices, self._submit(loaded, [prepared[i].request for i in indices])):
                streams[i] = stream
        for stream in streams:
            stream.wait()
        return [p.result(s, r.prompt) for p, s, r in zip(prepared, streams, requests)]

    def close(self) -> None:
        with self._lock:
            for loaded in self._loaded.values():
                loaded.engine.close()
            self._loaded.clear()
