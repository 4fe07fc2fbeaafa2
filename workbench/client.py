"""`Client`: a running service's operations as `Workbench`'s own methods, over HTTP.

    from workbench.client import Client
    client = Client("http://127.0.0.1:8200", token=...)
    started = client.start_training(TrainingConfig(experiment_name="demo", training_type="lora", ...))
    status = client.wait("demo", timeout_s=600)

Each method takes and answers the same models as the `Workbench` method of the same name, so code
(the panels, the benchmarks, the notebooks, the tests' helpers) can drive either. Refusals raise the
library's own errors: `InputError` naming the field (every field in `.errors`), `Busy` for a 429,
`AllProvidersFailed` with its attempts for a 503 from generation, `ServiceError` for the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from workbench.errors import Busy, InputError, ServiceError
from workbench.evaluation.config import EvalConfig
from workbench.models.listing import ModelList, ServedModel
from workbench.providers.params import BatchGenerateParams, GenerateParams
from workbench.providers.router import AllProvidersFailed
from workbench.providers.store import ProviderConfig
from workbench.schemas import (
    BackupResponse,
    BatchItem,
    ConfigureResponse,
    DatasetPreview,
    EvalSamples,
    EvalStartResponse,
    EvalStatus,
    FallbackResponse,
    FuseResponse,
    GenerateResponse,
    HealthResponse,
    JobAction,
    JobEvent,
    JobEvents,
    JobStatus,
    MetricsResponse,
    PreviewRequest,
    ProviderState,
    StartResponse,
    StatusResponse,
)
from workbench.training.config import TrainingConfig
from workbench.training.record import TERMINAL


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # System -----------------------------------------------------------------------------------------

    def health(self) -> HealthResponse:
        return self._call(HealthResponse, "GET", "/health")

    def status(self) -> StatusResponse:
        return self._call(StatusResponse, "GET", "/status")

    def backup(self) -> BackupResponse:
        return self._call(BackupResponse, "POST", "/system/backup")

    # Training jobs ------------------------------------------------------------------------------------

    def start_training(self, config: TrainingConfig, request_id: str | None = None) -> StartResponse:
        body = config.model_dump(mode="json") | ({"request_id": request_id} if request_id else {})
        return self._call(StartResponse, "POST", "/train/start", body)

    def stop_training(self, experiment_name: str) -> JobAction:
        return self._call(JobAction, "POST", f"/train/{experiment_name}/stop")

    def resume_training(self, experiment_name: str) -> JobAction:
        return self._call(JobAction, "POST", f"/train/{experiment_name}/resume")

    def job_status(self, experiment_name: str) -> JobStatus:
        return self._call(JobStatus, "GET", f"/train/{experiment_name}/status")

    def list_jobs(self) -> list[JobStatus]:
        return self._call(list[JobStatus], "GET", "/train/jobs")

    def metrics(self, experiment_name: str) -> MetricsResponse:
        return self._call(MetricsResponse, "GET", f"/train/{experiment_name}/metrics")

    def events(self, experiment_name: str, after: int = 0) -> JobEvents:
        """The events written so far after the one numbered `after` (the service answers at once)."""
        return self._call(JobEvents, "GET", f"/train/{experiment_name}/events",
                          params={"follow": "false"}, headers={"Last-Event-ID": str(after)})

    def follow(self, experiment_name: str, after: int = 0) -> Iterator[JobEvent]:
        """Each event as the service sends it (server-sent events), until the job ends."""
        request = self._http.build_request("GET", f"/train/{experiment_name}/events",
                                           headers={"Last-Event-ID": str(after)})
        events = self._events(request)
        try:
            for _, data in events:
                yield JobEvent.model_validate(data)
        finally:
            events.close()  # hangs up at once when the caller stops early

    def wait(self, experiment_name: str, timeout_s: float | None = None) -> JobStatus:
        """The experiment's latest job once it has ended, or as it is after `timeout_s`."""
        return _until(lambda: self.job_status(experiment_name), timeout_s)

    def fuse(self, experiment_name: str) -> FuseResponse:
        return self._call(FuseResponse, "POST", f"/train/{experiment_name}/fuse")

    def preview_dataset(self, request: PreviewRequest) -> DatasetPreview:
        return self._call(DatasetPreview, "POST", "/datasets/preview", request.model_dump(mode="json"))

    # Evaluation jobs --------------------------------------------------------------------------------

    def start_evaluation(self, config: EvalConfig) -> EvalStartResponse:
        return self._call(EvalStartResponse, "POST", "/eval/start", config.model_dump(mode="json"))

    def stop_evaluation(self, name: str) -> EvalStatus:
        return self._call(EvalStatus, "POST", f"/eval/{name}/stop")

    def evaluation_status(self, name: str) -> EvalStatus:
        return self._call(EvalStatus, "GET", f"/eval/{name}/status")

    def list_evaluations(self) -> list[EvalStatus]:
        return self._call(list[EvalStatus], "GET", "/eval/jobs")

    def evaluation_events(self, name: str, after: int = 0) -> JobEvents:
        return self._call(JobEvents, "GET", f"/eval/{name}/events", params={"follow": "false"},
                          headers={"Last-Event-ID": str(after)})

    def evaluation_samples(self, name: str, offset: int = 0, limit: int = 50,
                           task: str | None = None) -> EvalSamples:
        params = {"offset": offset, "limit": limit} | ({"task": task} if task else {})
        return self._call(EvalSamples, "GET", f"/eval/{name}/samples", params=params)

    def wait_evaluation(self, name: str, timeout_s: float | None = None) -> EvalStatus:
        """The evaluation's latest job once it has ended, or as it is after `timeout_s`."""
        return _until(lambda: self.evaluation_status(name), timeout_s)

    # Providers ----------------------------------------------------------------------------------------

    def providers(self) -> dict[str, ProviderState]:
        return self._call(dict[str, ProviderState], "GET", "/providers")

    def configure_provider(self, config: ProviderConfig) -> ConfigureResponse:
        body = config.model_dump(mode="json")
        if config.api_key is not None:  # a SecretStr dumps masked: send the key itself
            body["api_key"] = config.api_key.get_secret_value()
        return self._call(ConfigureResponse, "POST", "/providers/configure", body)

    def remove_provider(self, provider: str) -> FallbackResponse:
        return self._call(FallbackResponse, "DELETE", f"/providers/{provider}")

    def fallback(self) -> FallbackResponse:
        return self._call(FallbackResponse, "GET", "/providers/fallback")

    def set_fallback(self, order: list[str] | None) -> FallbackResponse:
        return self._call(FallbackResponse, "POST", "/providers/fallback", {"order": order})

    # Generation ---------------------------------------------------------------------------------------

    def generate(self, params: GenerateParams) -> GenerateResponse:
        body = params.model_dump(mode="json", exclude_none=True) | {"stream": False}
        return self._call(GenerateResponse, "POST", "/generate", body)

    def stream(self, params: GenerateParams) -> RemoteStream:
        body = params.model_dump(mode="json", exclude_none=True) | {"stream": True}
        return RemoteStream(self, self._http.build_request("POST", "/generate", json=body))

    def generate_batch(self, params: BatchGenerateParams) -> list[BatchItem]:
        body = params.model_dump(mode="json", exclude_none=True)
        return self._call(list[BatchItem], "POST", "/generate/batch", body)

    def served_models(self) -> ModelList:
        return self._call(ModelList, "GET", "/v1/models")

    def served_model(self, model_id: str) -> ServedModel:
        return self._call(ServedModel, "GET", f"/v1/models/{quote(model_id, safe='')}")

    # HTTP -------------------------------------------------------------------------------------------

    def _call(self, answer, method: str, path: str, body: dict | None = None, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, json=body, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise refusal(response.status_code, response.content, response.headers)
        return TypeAdapter(answer).validate_python(response.json())

    def _events(self, request: httpx.Request) -> Iterator[tuple[str, dict]]:
        """(event, data) of a server-sent event stream."""
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 400:
                raise refusal(response.status_code, response.read(), response.headers)
            yield from _server_sent_events(response.iter_lines())
        except httpx.HTTPError as exc:
            raise ServiceError(f"the stream from {self.url} broke: {type(exc).__name__}: {exc}") from None
        finally:
            response.close()


class RemoteStream:
    """A streamed answer over HTTP, as `Workbench.stream`'s: iterate for text, then `result()`;
    `cancel()` hangs up (the service then frees the request's place in the batch)."""

    def __init__(self, client: Client, request: httpx.Request):
        self._events = client._events(request)
        self._result: GenerateResponse | None = None

    def __iter__(self) -> Iterator[str]:
        for event, data in self._events:
            if event == "token":
                yield data["text"]
            elif event == "done":
                self._result = GenerateResponse.model_validate(data)
            elif event == "error":
                raise ServiceError(data.get("detail", "the stream failed"), 502)

    def result(self) -> GenerateResponse:
        if self._result is None:
            for _ in self:  # read what is left
                pass
        if self._result is None:
            raise ServiceError("the stream ended without a result", 502)
        return self._result

    def cancel(self) -> None:
        self._events.close()


def _until(status_now, timeout_s: float | None):
    """A job's status once it has ended, or as it is after `timeout_s`."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = status_now()
        if status.status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return status
        time.sleep(0.3)


def refusal(status: int, content: bytes, headers=None) -> Exception:
    """The service's error body, `{"detail": [{"loc", "msg"}...]}`, as the library's own error."""
    try:
        body = json.loads(content)
    except ValueError:
        return ServiceError(f"HTTP {status}: {content[:300].decode(errors='replace')}", status)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # OpenAI's shape, under /v1
        error = body["error"]
        body = {"detail": [{"loc": ["body", error["param"]] if error.get("param") else [],
                            "msg": error.get("message")}]}
    detail = body.get("detail") if isinstance(body, dict) else None
    errors = [(_field(item.get("loc", ())), str(item.get("msg", item))) for item in detail
              if isinstance(item, dict)] if isinstance(detail, list) else []
    if not errors:
        errors = [(None, str(detail or body))]
    field, message = errors[0]
    if status == 503 and isinstance(body.get("attempts"), list):
        return AllProvidersFailed(body["attempts"])
    if status == 429:
        return Busy(field or "", message, int((headers or {}).get("Retry-After", 1)))
    if status >= 500:
        return ServiceError(message, status)
    return InputError(field, message, status, errors)


def _field(loc) -> str | None:
    loc = [str(part) for part in loc]
    return loc[1] if len(loc) > 1 and loc[0] in ("body", "path", "query", "header") else None


def _server_sent_events(lines) -> Iterator[tuple[str, dict]]:
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
