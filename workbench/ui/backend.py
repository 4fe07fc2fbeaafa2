"""What the panels call: one small interface, over in-process objects or over a running service.

    backend = connect()                        # this process's Workbench (created once, on first use)
    backend = connect(workbench)               # a Workbench you made
    backend = connect("http://127.0.0.1:8200", token=...)   # a running service

Both implementations take and answer plain dicts and lists, shaped as the HTTP API's JSON, so a panel
cannot tell them apart. Bad input and refused requests raise `BackendError(field, message)`, with the
field at fault where one is known (the service's 4xx `detail`, or pydantic's and `InputError`'s).

The dataset preview needs the model's tokenizer and the data files, which the service does not expose:
over HTTP `preview_dataset` and `token_lengths` raise a BackendError saying so.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from workbench.errors import InputError
from workbench.training.store import ACTIVE

Event = tuple[str, Any]  # ("token", text) as text arrives, then ("done", the full result dict)


class BackendError(Exception):
    """A request the workbench refused: `field` names the input at fault (None when none is known).
    `errors` holds every (field, message) pair; `attempts` the providers tried, when generation failed."""

    def __init__(self, field: str | None, message: str, status: int = 400,
                 errors: list[tuple[str | None, str]] | None = None, attempts: list[dict] | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message, self.status = field, message, status
        self.errors = errors or [(field, message)]
        self.attempts = attempts or []


class Backend:
    """The methods every panel calls; answers are the HTTP API's JSON, as plain dicts and lists."""

    kind = "abstract"  # "local" or "http"

    def health(self) -> dict:
        """GET /health: healthy or degraded, the problems, memory, device and BLAS."""
        raise NotImplementedError

    def status(self) -> dict:
        """GET /status: server information, training job counts, memory use."""
        raise NotImplementedError

    def providers(self) -> dict[str, dict]:
        """GET /providers: name -> configured, usable, model, api_base, masked api_key, health."""
        raise NotImplementedError

    def configure_provider(self, provider: str, api_key: str | None = None, model: str | None = None,
                           api_base: str | None = None, timeout: float | None = None) -> dict:
        """POST /providers/configure: answers the configuration with the key masked."""
        raise NotImplementedError

    def remove_provider(self, provider: str) -> list[str]:
        """DELETE /providers/{provider}: answers the fallback order left."""
        raise NotImplementedError

    def fallback(self) -> list[str]:
        """The order in which requests that name no provider try them."""
        raise NotImplementedError

    def set_fallback(self, order: list[str] | None) -> list[str]:
        """Sets that order (None: the default); answers it."""
        raise NotImplementedError

    def generate(self, params: dict) -> dict:
        """POST /generate: GenerateParams in, the full result out (provider_used, attempts...)."""
        raise NotImplementedError

    def stream(self, params: dict) -> Iterator[Event]:
        """The same, streamed: ("token", text) events, then one ("done", result)."""
        raise NotImplementedError

    def start_training(self, config: dict) -> dict:
        """POST /train/start: a TrainingConfig in; experiment_name, job_id, state out."""
        raise NotImplementedError

    def stop(self, name: str) -> dict:
        """Stops the experiment's job (waiting for its checkpoint, up to 30 s); answers its state."""
        raise NotImplementedError

    def resume(self, name: str) -> dict:
        """Continues a stopped, failed or interrupted job from its last checkpoint."""
        raise NotImplementedError

    def job_status(self, name: str) -> dict:
        """GET /train/{name}/status: the latest job of the experiment."""
        raise NotImplementedError

    def jobs(self) -> list[dict]:
        """GET /train/jobs: every job, newest first."""
        raise NotImplementedError

    def metrics(self, name: str) -> dict:
        """GET /train/{name}/metrics: {experiment_name, job_id, steps: [{step, loss, eval_loss...}]}."""
        raise NotImplementedError

    def preview_dataset(self, config: dict, n: int = 5) -> dict:
        """{summary, rows}: the first n rows as the model sees them (see workbench.data.preview)."""
        raise NotImplementedError

    def token_lengths(self, config: dict) -> list[int]:
        """Tokens in every row, chat template applied."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# In-process ---------------------------------------------------------------------------------------


class LocalBackend(Backend):
    """A Workbench's own objects. The workbench's modules are imported inside the methods, so that a
    panel over HTTP never loads litellm or mlx-lm."""

    kind = "local"

    def __init__(self, workbench):
        self.workbench = workbench

    def __repr__(self) -> str:
        return f"LocalBackend(home={str(self.workbench.settings.home_dir)!r})"

    def health(self) -> dict:
        return self.workbench.health()

    def status(self) -> dict:
        return self.workbench.status()

    def providers(self) -> dict[str, dict]:
        return self.workbench.providers()

    def configure_provider(self, provider, api_key=None, model=None, api_base=None, timeout=None) -> dict:
        from workbench.providers.secrets import mask_key
        from workbench.providers.store import ProviderConfig

        given = {"provider": provider, "api_key": api_key, "model": model, "api_base": api_base}
        if timeout is not None:
            given["timeout"] = timeout
        config = _checked(ProviderConfig, given)
        entry = _calling(self.workbench.router.configure, config)
        return {"configured": provider, "model": entry["model"], "api_base": entry["api_base"],
                "api_key": mask_key(entry["api_key"]), "timeout": entry["timeout"]}

    def remove_provider(self, provider: str) -> list[str]:
        if not self.workbench.router.remove(provider):
            raise BackendError("provider", f"{provider} is not configured", 404)
        return self.workbench.router.chain()

    def fallback(self) -> list[str]:
        return self.workbench.router.chain()

    def set_fallback(self, order: list[str] | None) -> list[str]:
        from pydantic import TypeAdapter

        from workbench.providers.params import ProviderName

        try:
            TypeAdapter(list[ProviderName] | None).validate_python(order)
        except ValidationError as exc:
            raise _from_pydantic(exc, "order") from None
        return self.workbench.router.set_fallback(order)

    def generate(self, params: dict) -> dict:
        from workbench.providers.params import GenerateParams

        return _generated(_calling(self.workbench.generate, _checked(GenerateParams, params)))

    def stream(self, params: dict) -> Iterator[Event]:
        from workbench.providers.params import GenerateParams

        checked = _checked(GenerateParams, params | {"stream": True})
        stream = _calling(self.workbench.stream, checked)
        try:
            for piece in _calling(iter, stream):
                yield "token", piece
            yield "done", _generated(stream.result())
        finally:
            stream.cancel()  # a reader that stops early frees the engine's batch slot

    def start_training(self, config: dict) -> dict:
        from workbench.training.config import TrainingConfig

        job = _calling(self.workbench.jobs.start, _checked(TrainingConfig, config))
        return {"experiment_name": job["experiment_name"], "job_id": job["job_id"], "status": "started",
                "state": job["status"], "model_path": job["model_path"]}

    def stop(self, name: str) -> dict:
        job = _calling(self.workbench.jobs.stop, name)
        # As the service does: give a running worker time to write its checkpoint and say "stopped".
        deadline = time.monotonic() + 30
        while job["status"] in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.2)
            job = self.workbench.store.get(job["job_id"])
        return _action(name, job, "stopped")

    def resume(self, name: str) -> dict:
        return _action(name, _calling(self.workbench.jobs.resume, name), "resumed")

    def job_status(self, name: str) -> dict:
        return _describe(_calling(self.workbench.jobs.job, name))

    def jobs(self) -> list[dict]:
        return [_describe(job) for job in self.workbench.store.jobs()]

    def metrics(self, name: str) -> dict:
        job = _calling(self.workbench.jobs.job, name)
        return {"experiment_name": name, "job_id": job["job_id"],
                "steps": self.workbench.store.metrics(job["job_id"])}

    def preview_dataset(self, config: dict, n: int = 5) -> dict:
        from workbench.data import preview, validate

        spec, tokenizer = self._data(config)
        settings = self.workbench.settings
        summary = _calling(validate, spec, settings)
        return {"summary": asdict(summary), "rows": _calling(preview, spec, tokenizer, settings, n)}

    def token_lengths(self, config: dict) -> list[int]:
        from workbench.data import token_lengths

        spec, tokenizer = self._data(config)
        return _calling(token_lengths, spec, tokenizer, self.workbench.settings)

    def _data(self, config: dict):
        """The data fields checked as the training form checks them, and the model's tokenizer."""
        from workbench.data import DataSpec
        from workbench.training.config import TrainingConfig

        # A training configuration around the data fields: the same validation, the same messages.
        full = _checked(TrainingConfig, {"experiment_name": "preview", "training_type": "lora"} | config)
        loaded = _calling(self.workbench.local.model, full.model_name)
        return DataSpec.from_config(full), loaded.engine.tokenizer


def _describe(job: dict) -> dict:
    """A job as GET /train/{name}/status shows it (imported here: the job manager brings in mlx-lm,
    which a panel over HTTP never needs)."""
    from workbench.training.manager import describe

    return describe(job)


def _action(name: str, job: dict, action: str) -> dict:
    return {"experiment_name": name, "job_id": job["job_id"], "action": action, "state": job["status"],
            "current_step": job["current_step"], "checkpoint": job["checkpoint"]}


def _generated(result) -> dict:
    body = asdict(result)
    body["total_tokens"] = result.prompt_tokens + result.completion_tokens
    return body


def _checked(model, values: dict):
    """`model(**values)`, with pydantic's errors as one BackendError naming each field."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None


def _from_pydantic(exc: ValidationError, field: str | None = None) -> BackendError:
    # Only pydantic's message, never its `input`: that could be an api_key.
    errors = [(field or (str(e["loc"][0]) if e["loc"] else None), e["msg"]) for e in exc.errors()]
    return BackendError(errors[0][0], errors[0][1], 422, errors)


def _calling(function, *args):
    """The workbench's own errors as BackendErrors: InputError, and no provider answering."""
    from workbench.providers.router import AllProvidersFailed

    try:
        return function(*args)
    except InputError as exc:
        raise BackendError(exc.field, exc.message, exc.status) from None
    except AllProvidersFailed as exc:
        raise BackendError("provider", str(exc), 503, attempts=exc.attempts) from None
    except ValidationError as exc:
        raise _from_pydantic(exc) from None


# Over HTTP ----------------------------------------------------------------------------------------


class HttpBackend(Backend):
    """The same methods as requests to a running service (`python -m service`)."""

    kind = "http"

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        import httpx  # litellm's own HTTP client: always installed

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r})"  # never the token

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(None, f"cannot reach {self.url}: {type(exc).__name__}: {exc}", 503) from None
        if response.status_code >= 400:
            raise _http_error(response.status_code, response.content)
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/health")

    def status(self) -> dict:
        return self._call("GET", "/status")

    def providers(self) -> dict[str, dict]:
        return self._call("GET", "/providers")

    def configure_provider(self, provider, api_key=None, model=None, api_base=None, timeout=None) -> dict:
        body = {"provider": provider, "api_key": api_key, "model": model, "api_base": api_base}
        if timeout is not None:
            body["timeout"] = timeout
        return self._call("POST", "/providers/configure", body)

    def remove_provider(self, provider: str) -> list[str]:
        return self._call("DELETE", f"/providers/{provider}")["order"]

    def fallback(self) -> list[str]:
        return self._call("GET", "/providers/fallback")["order"]

    def set_fallback(self, order: list[str] | None) -> list[str]:
        return self._call("POST", "/providers/fallback", {"order": order})["order"]

    def generate(self, params: dict) -> dict:
        return self._call("POST", "/generate", params | {"stream": False})

    def stream(self, params: dict) -> Iterator[Event]:
        import httpx

        try:
            with self._client.stream("POST", "/generate", json=params | {"stream": True}) as response:
                if response.status_code >= 400:
                    raise _http_error(response.status_code, response.read())
                for event, data in _server_sent_events(response.iter_lines()):
                    if event == "token":
                        yield "token", data["text"]
                    elif event == "done":
                        yield "done", data
                    elif event == "error":
                        raise BackendError(None, data.get("detail", "the stream failed"), 500)
        except httpx.HTTPError as exc:
            raise BackendError(None, f"cannot reach {self.url}: {type(exc).__name__}: {exc}", 503) from None

    def start_training(self, config: dict) -> dict:
        return self._call("POST", "/train/start", config)

    def stop(self, name: str) -> dict:
        return self._call("POST", f"/train/{name}/stop")

    def resume(self, name: str) -> dict:
        return self._call("POST", f"/train/{name}/resume")

    def job_status(self, name: str) -> dict:
        return self._call("GET", f"/train/{name}/status")

    def jobs(self) -> list[dict]:
        return self._call("GET", "/train/jobs")

    def metrics(self, name: str) -> dict:
        return self._call("GET", f"/train/{name}/metrics")

    def preview_dataset(self, config: dict, n: int = 5) -> dict:
        raise _no_data_over_http()

    def token_lengths(self, config: dict) -> list[int]:
        raise _no_data_over_http()

    def close(self) -> None:
        self._client.close()


def _no_data_over_http() -> BackendError:
    return BackendError(None, "dataset previews are not available over HTTP (the service has no endpoint "
                        "for them): use a local backend, connect() or connect(Workbench(...))", 501)


def _http_error(status: int, content: bytes) -> BackendError:
    """The service's error body as a BackendError: {"detail": [{"loc", "msg"}...]} or {"detail": "..."}."""
    try:
        body = json.loads(content)
    except ValueError:
        return BackendError(None, f"HTTP {status}: {content[:300].decode(errors='replace')}", status)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail:
        errors = []
        for item in detail:
            loc = [str(p) for p in item.get("loc", ())]
            errors.append((loc[1] if len(loc) > 1 and loc[0] in ("body", "path") else None,
                           str(item.get("msg", item))))
        return BackendError(errors[0][0], errors[0][1], status, errors, body.get("attempts"))
    return BackendError(None, str(detail or body), status)


def _server_sent_events(lines) -> Iterator[tuple[str, dict]]:
    """(event, data as JSON) for each event of a text/event-stream."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, json.loads("\n".join(data))


# Which backend ------------------------------------------------------------------------------------

_default: LocalBackend | None = None
_default_lock = threading.Lock()


def connect(target=None, token: str | None = None) -> Backend:
    """A backend for the panels: this process's own Workbench (no argument: created on first use and
    shared by every panel), a given Workbench, a URL of a running service, or a Backend as it is."""
    global _default
    if isinstance(target, Backend):
        return target
    if isinstance(target, str):
        return HttpBackend(target, token)
    if target is not None:
        return LocalBackend(target)
    with _default_lock:
        if _default is None:
            from workbench.core import Workbench

            workbench = Workbench()
            atexit.register(workbench.close)  # stops this process's training workers cleanly
            _default = LocalBackend(workbench)
        return _default
