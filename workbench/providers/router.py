"""One fallback chain over all five providers, on litellm's Router.

litellm does each remote call (the provider's protocol, its timeout) and keeps the cooldowns of all
five (a provider that failed is skipped for `cooldown_time` without a call). The chain itself is
walked here, one provider per call, so each response can say exactly what was tried: provider,
outcome, error class, milliseconds; and every kind of failure cools a provider down, not only those
litellm picks. `local_mlx` runs in this process and is called directly: through litellm (as a
custom provider) each call paid 4.4 ms of its bookkeeping, a third of a short answer's time on the
tiny model.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from workbench.errors import Busy, InputError
from workbench.providers.catalog import LOCAL, PROVIDERS
from workbench.providers.litellm_bridge import litellm
from workbench.providers.local_mlx import GenerationResult, LocalMLX
from workbench.providers.params import GenerateParams
from workbench.providers.secrets import mask_key, redactor
from workbench.providers.store import ProviderConfig, ProviderStore
from workbench.providers.tools import ToolCallDeltas, remote_tool_calls, remote_tool_options
from workbench.schemas import GenerateResponse
from workbench.settings import Settings

log = logging.getLogger(__name__)

# A provider's answers that blame the request, not the provider (its input, its size).
REQUEST_REFUSED = frozenset({400, 413, 422})


class AllProvidersFailed(RuntimeError):
    def __init__(self, attempts: list[dict]):
        tried = ", ".join(f"{a['provider']}: {a['outcome']}" for a in attempts) or "none configured"
        super().__init__(f"no provider could answer ({tried})")
        self.attempts = attempts


@dataclass
class ProviderHealth:
    last_success: float | None = None
    last_error: dict | None = None


@dataclass
class Attempt:
    provider: str
    outcome: str  # "ok", "failed", "skipped"
    error: str | None = None  # exception class, or why it was skipped
    message: str | None = None
    ms: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Call:
    model: str  # the provider's model name, without litellm's prefix
    messages: list[dict]
    kwargs: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class ProviderStream:
    """A streamed answer from whichever provider took it: iterate for text, then `result()`."""

    def __init__(self, pieces, finish, cancel, attempts: list[dict]):
        self._pieces, self._finish, self.cancel, self.attempts = pieces, finish, cancel, attempts

    def __iter__(self):
        return iter(self._pieces)

    def result(self) -> GenerateResponse:
        result = self._finish()
        result.attempts = self.attempts
        return GenerateResponse.of(result)


class ProviderRouter:
    def __init__(self, settings: Settings, local: LocalMLX):
        self.settings = settings
        self.local = local
        self.store = ProviderStore(settings.home_dir / "providers.json")
        self.health = {name: ProviderHealth() for name in PROVIDERS}
        self._lock = threading.Lock()
        self._router = self._build()

    # Configuration ------------------------------------------------------------------------------

    def configure(self, config: ProviderConfig) -> dict:
        entry = self.store.configure(config)
        with self._lock:
            self._router = self._build()
            self.health[config.provider] = ProviderHealth()
        log.info("provider %s configured (model %s)", config.provider, entry["model"])
        return entry

    def remove(self, provider: str) -> bool:
        found = self.store.remove(provider)
        with self._lock:
            self._router = self._build()
        return found

    def set_fallback(self, order: list[str] | None) -> list[str]:
        self.store.set_fallback(order)
        return self.chain()

    def configured(self, name: str) -> bool:
        return name == LOCAL or name in self.store.configs

    def chain(self, provider: str | None = None) -> list[str]:
        """The providers a request walks, in order."""
        if provider:
            return [provider]
        order = self.store.fallback or self.settings.fallback_order
        if order:
            return list(order)
        remotes = sorted(self.store.configs, key=lambda n: self.store.configs[n]["configured_at"])
        return [n for n in remotes if n != LOCAL] + [LOCAL]

    def _build(self):
        model_list = []
        for name, entry in self.store.configs.items():
            if name == LOCAL:
                continue
            params = {"model": f"{PROVIDERS[name].litellm_prefix}/{entry['model']}",
                      "timeout": entry["timeout"], "max_retries": 0}
            if entry.get("api_key"):
                params["api_key"] = entry["api_key"]
            if entry.get("api_base"):
                params["api_base"] = entry["api_base"]
            model_list.append({"model_name": name, "litellm_params": params, "model_info": {"id": name}})
        return litellm.Router(
            model_list=model_list,
            num_retries=0,
            cooldown_time=self.settings.provider_cooldown_s,
            retry_after=0,
        )

    # Calls --------------------------------------------------------------------------------------

    def cooling_down(self) -> dict[str, float]:
        """Provider name -> until when (epoch seconds) it is skipped."""
        active = self._router.health().cooldowns.get_active_cooldowns(list(PROVIDERS), None)
        return {name: value["timestamp"] + value["cooldown_time"] for name, value in active}

    def complete(self, params: GenerateParams) -> GenerationResult:
        """Ask each provider of the chain in turn until one answers."""
        attempts: list[Attempt] = []
        for name in self._candidates(params, attempts):
            started = time.perf_counter()
            try:
                result = self._complete_with(name, params)
            except (InputError, Busy):
                raise  # the caller's to fix, or to retry later: not a failure of the provider
            except Exception as exc:
                attempts.append(self._failed(name, exc, started))
                continue
            self._succeeded(name, started, attempts)
            result.attempts = [a.as_dict() for a in attempts]
            return result
        raise AllProvidersFailed([a.as_dict() for a in attempts])

    def complete_many(self, requests: list[GenerateParams]) -> list[GenerationResult]:
        """Several at once. Those all for local_mlx go to its engine together (one batch, their
        prompts scored in one pass); otherwise each walks the chain on a thread of its own."""
        for params in requests:
            params.check_tools()  # the request's mistake, found before any provider is asked
        if all(p.provider == LOCAL for p in requests):
            attempts: list[Attempt] = []
            started = time.perf_counter()
            results = self.local.generate_many(requests)  # a refusal (4xx, 429) is raised as it is
            self._succeeded(LOCAL, started, attempts)
            for result in results:
                result.attempts = [a.as_dict() for a in attempts]
            return results
        with ThreadPoolExecutor(max_workers=min(len(requests), 16)) as pool:
            return list(pool.map(self.complete, requests))

    def _complete_with(self, name: str, params: GenerateParams) -> GenerationResult:
        if name == LOCAL:
            return self.local.generate(params)
        call = self._call_for(name, params)
        response = self._router.completion(model=name, messages=call.messages, disable_fallbacks=True,
                                           **call.kwargs)
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return GenerationResult(
            generated_text=choice.message.content or "",
            tool_calls=remote_tool_calls(getattr(choice.message, "tool_calls", None)),
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=call.model,
            model_path=f"{name}:{call.model}",
            provider_used=name,
            prompt=params.prompt,
            warnings=list(call.warnings),
        )

    def stream(self, params: GenerateParams) -> ProviderStream:
        """As `complete`, streamed. A provider may fail over to the next until its first piece."""
        attempts: list[Attempt] = []
        for name in self._candidates(params, attempts):
            started = time.perf_counter()
            if name == LOCAL:
                # In-process: stream from the engine itself, which also reports the folder and warnings.
                return self._local_stream(params, attempts, started)
            call = self._call_for(name, params)
            try:
                response = self._router.completion(model=name, messages=call.messages, stream=True,
                                                   disable_fallbacks=True, **call.kwargs)
                chunks = iter(response)
                first = next(chunks, None)
            except Exception as exc:
                attempts.append(self._failed(name, exc, started))
                continue
            self._succeeded(name, started, attempts)
            return self._remote_stream(name, call, params, first, chunks, [a.as_dict() for a in attempts])
        raise AllProvidersFailed([a.as_dict() for a in attempts])

    def _local_stream(self, params: GenerateParams, attempts: list[Attempt], started: float):
        prepared, stream = self.local.start(params)  # a refusal (4xx, 429) is raised, not a success
        self._succeeded(LOCAL, started, attempts)
        return ProviderStream(
            iter(stream), lambda: prepared.result(stream, params.prompt), stream.cancel,
            [a.as_dict() for a in attempts],
        )

    def _remote_stream(self, name, call, params, first, chunks, attempts) -> ProviderStream:
        parts, state = [], {"finish_reason": "stop", "usage": None}
        calls = ToolCallDeltas()

        def pieces():
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                choice = chunk.choices[0] if chunk.choices else None
                text = (choice.delta.content if choice and choice.delta else None) or ""
                calls.add(getattr(choice.delta, "tool_calls", None) if choice and choice.delta else None)
                if choice and choice.finish_reason:
                    state["finish_reason"] = choice.finish_reason
                if getattr(chunk, "usage", None):
                    state["usage"] = chunk.usage
                if text:
                    parts.append(text)
                    yield text

        def finish() -> GenerationResult:
            usage = state["usage"]
            return GenerationResult(
                generated_text="".join(parts), finish_reason=state["finish_reason"],
                tool_calls=calls.whole(),
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                model=call.model, model_path=f"{name}:{call.model}", provider_used=name, prompt=params.prompt,
                warnings=list(call.warnings),
            )

        return ProviderStream(pieces(), finish, lambda: None, attempts)

    def _candidates(self, params: GenerateParams, attempts: list[Attempt]):
        """The chain's providers that may be called now; the others go into `attempts` as skipped."""
        chain = self._usable_chain(params)
        cooling = self.cooling_down()
        for name in chain:
            if not self.configured(name):
                attempts.append(Attempt(name, "skipped", "not configured"))
            elif name in cooling:
                left = cooling[name] - time.time()
                attempts.append(Attempt(name, "skipped", f"cooling down for {left:.0f} s"))
            else:
                yield name

    def _succeeded(self, name: str, started: float, attempts: list[Attempt]) -> None:
        attempts.append(Attempt(name, "ok", ms=round((time.perf_counter() - started) * 1000, 1)))
        self.health[name].last_success = time.time()

    def _usable_chain(self, params: GenerateParams) -> list[str]:
        params.check_tools()
        if params.provider and not self.configured(params.provider):
            raise InputError(
                "provider", f"{params.provider} is not configured: POST /providers/configure first"
            )
        chain = self.chain(params.provider)
        if not any(self.configured(name) for name in chain):
            # Nothing to try: a setting to change, not a provider that is down (503).
            raise InputError(
                "provider", f"no provider of the fallback order {chain} is configured: configure one, "
                "or add local_mlx to the order (POST /providers/fallback)", status=409,
            )
        if LOCAL in chain:
            self.local.model(params.model)  # an unknown local model is the caller's error, found now
        return chain

    def _call_for(self, name: str, params: GenerateParams) -> _Call:
        """A remote provider's model, messages and sampling options for `params`."""
        kwargs = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            kwargs["stop"] = params.stop
        warnings = []
        # Scoring options (docs/architecture.md, "Scoring and log-probabilities"): litellm passes a
        # seed on; token scores are the local engine's alone, so asking a remote provider warns.
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.logprobs is not None:
            warnings.append(f"logprobs are answered by local models only; {name} answered text alone")
        if getattr(params, "prompt_tokens", None) is not None or getattr(params, "echo", False):
            raise InputError("prompt", f"token-id prompts and echo are for local models; {name} takes text")
        kwargs |= remote_tool_options(params)
        if params.messages is not None:
            messages = [m.model_dump(exclude_none=True) | {"content": m.content} for m in params.messages]
        else:
            messages = [{"role": "user", "content": params.prompt}]
        return _Call(self.store.configs[name]["model"], messages, kwargs, warnings)

    def _failed(self, name: str, exc: Exception, started: float) -> Attempt:
        # Every failure of the provider cools it down, in litellm's own cooldown store (which the
        # router consults). litellm by itself skips a lone deployment, and never cools down a 403 or
        # a refused connection reported as APIConnectionError. A remote provider's refusal of the
        # request itself (400, 413, 422) is no fault of the provider: the next one is asked, and the
        # provider stays in use for the next clients.
        status = getattr(exc, "status_code", None) or 500
        if int(status) not in REQUEST_REFUSED:
            self._router.health().cooldowns.add_deployment_to_cooldown(
                name, exc, int(status), self.settings.provider_cooldown_s
            )
        message = redactor(str(exc))[:300]
        attempt = Attempt(name, "failed", type(exc).__name__, message,
                          round((time.perf_counter() - started) * 1000, 1))
        self.health[name].last_error = {"at": time.time(), "error": attempt.error, "message": message}
        log.warning("provider %s failed after %.0f ms: %s", name, attempt.ms, attempt.error)
        return attempt

    # Listing ------------------------------------------------------------------------------------

    def listing(self) -> dict[str, dict]:
        cooling = self.cooling_down()
        listing = {}
        for name, info in PROVIDERS.items():
            entry = self.store.configs.get(name, {})
            configured = self.configured(name)
            health = self.health[name]
            listing[name] = {
                "kind": info.kind,
                "configured": configured,
                "usable": configured and name not in cooling,
                "model": (
                    self.settings.default_model if name == LOCAL else entry.get("model", info.default_model)
                ),
                "api_base": entry.get("api_base") or info.default_api_base,
                "api_key": mask_key(entry.get("api_key")),
                "needs_key": info.needs_key,
                "timeout": entry.get("timeout"),
                "health": {
                    "last_success": health.last_success,
                    "last_error": health.last_error,
                    "cooling_down_until": cooling.get(name),
                },
            }
        listing[LOCAL]["loaded_models"] = self.local.loaded_models()
        return listing
