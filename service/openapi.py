"""The error answers every route may give, declared in the OpenAPI schema with their bodies.

A client generated from /openapi.json then knows each status a route can answer, and its shape:
`{"detail": [{"loc", "msg", "type"}]}` everywhere but /v1, OpenAI's `{"error": {"message", "type",
"param", "code"}}` under /v1, where invalid input is a 400 rather than a 422 (as `service.errors`
renders them). Routers declare the statuses that apply to them with
`error_responses`; the statuses any request can meet (a body that cannot be read, too large, of
another content type, invalid) are in `COMMON`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where: body, path, query or header, then the field.")
    msg: str = Field(description="What is wrong, and what would be accepted.")
    type: str = Field(description="A machine-readable kind of error.")
    input: Any = Field(default=None, description="The value refused (shortened), when it can be shown.")
    ctx: dict | None = None


class ErrorBody(BaseModel):
    detail: list[ErrorItem] = Field(min_length=1)


class ProviderFailureBody(ErrorBody):
    attempts: list[dict] = Field(
        description="Each provider tried, in order: provider, outcome (failed, skipped), error, ms."
    )


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


_WHY = {
    400: "The body could not be read as JSON, or the request cannot be served as asked; under /v1 also "
    "a field missing, of the wrong type or out of range (`param` names it).",
    401: "WORKBENCH_API_TOKEN is set and the request lacks the bearer token.",
    403: "Without WORKBENCH_API_TOKEN, a client on another machine; or another site's Origin.",
    404: "No such experiment, provider or model.",
    409: "The request conflicts with the server's state: an experiment already running or with "
    "nothing to resume; no provider of the fallback order configured.",
    413: "The body exceeds WORKBENCH_MAX_BODY_BYTES.",
    415: "The body is not JSON (Content-Type).",
    421: "The Host header names neither this service nor one of WORKBENCH_ALLOWED_HOSTS.",
    422: "A field is missing, of the wrong type or out of range; each error names it.",
    429: "The model's batch and queue are full: retry after `Retry-After` seconds.",
    503: "No provider could answer: each attempt is listed.",
    507: "The workbench home cannot keep what the request needs (disk full): nothing was changed.",
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer", "minimum": 0}}}

COMMON = (400, 403, 413, 415, 421, 422)  # 403 and 421 from the request guard (service/guard.py)


def error_responses(*statuses: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or route: each status with its description and body model."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = OpenAIErrorBody if openai else (ProviderFailureBody if status == 503 else ErrorBody)
        entry: dict[str, Any] = {"model": model, "description": _WHY[status]}
        if status == 429:
            entry["headers"] = _RETRY_AFTER
        declared[status] = entry
    return declared


_BODY_ONLY = (400, 413, 415)


def keep_what_applies(app, token_required: bool) -> None:
    """Drop, from each operation's declared errors, those it cannot answer: one without a body
    cannot find it unreadable, too large or of another type (400, 413, 415), and one that takes no
    input at all has nothing to refuse (422). Routers declare errors wholesale; this trims them in
    the published schema. Without a token configured, the bearer token is published as optional."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            for path, operations in generate()["paths"].items():  # generate() keeps what it makes
                for operation in operations.values():
                    takes_body = "requestBody" in operation
                    drop = (() if takes_body else _BODY_ONLY)
                    # /v1 answers invalid input with a 400, as OpenAI does (service/errors.py).
                    openai = path.startswith("/v1/")
                    drop += (() if (takes_body or operation.get("parameters")) and not openai else (422,))
                    for status in drop:
                        operation["responses"].pop(str(status), None)
                    if not token_required and operation.get("security"):
                        operation["security"].append({})  # OpenAPI's "or no credentials at all"
        return app.openapi_schema

    app.openapi = openapi
