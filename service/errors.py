"""One error shape for every 4xx and 5xx: FastAPI's own, `{"detail": [{"loc", "msg", "type"}]}`.

Under /v1 the same errors take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so OpenAI clients show the reason. The bodies are declared in `service.openapi`.
"""

from __future__ import annotations

import json
import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workbench.errors import Busy, InputError, StorageError, UnknownModel
from workbench.providers.router import AllProvidersFailed

log = logging.getLogger("service")

# An error echoes the offending input; a 4 MB prompt refused for its length need not come back whole.
_ECHO_CHARS = 200

_KIND = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "request_too_large",
         415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def _without_secrets(error: dict) -> dict:
    """FastAPI echoes the offending input; never echo a key, nor a whole body that holds one."""
    given = error.get("input")
    if "api_key" in error.get("loc", ()) or (isinstance(given, dict) and "api_key" in given):
        return {k: v for k, v in error.items() if k != "input"}
    return error


def printable(value):
    """`value` made JSON that any client can read: a lone surrogate cannot be encoded as UTF-8 and
    NaN is not JSON, and either made the error renderer itself fail (a 500 for a 422)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def _short(value):
    """The echoed input, cut to a readable size."""
    text = json.dumps(value)
    if len(text) <= _ECHO_CHARS:
        return value
    return f"{text[:_ECHO_CHARS]}... ({len(text)} characters)"


# pydantic names the member of a union it tried (`stop.list[constrained-str].0`): not a field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|dict|list|none|constrained-.*|function-.*|.*\[.*\])$")


def _field_loc(loc: list) -> list:
    return [part for part in loc if not (isinstance(part, str) and _UNION_MEMBER.match(part))]


def error_content(path: str, status: int, errors: list[dict], **extra) -> dict:
    """The body of an error answer for a request to `path`."""
    errors = printable(jsonable_encoder(errors))
    for error in errors:
        error["loc"] = _field_loc(error.get("loc", []))
        if "input" in error:
            error["input"] = _short(error["input"])
    if is_openai(path):
        return _openai_error(status, errors)
    return {"detail": errors} | printable(jsonable_encoder(extra))


def error_response(path: str, status: int, errors: list[dict], headers: dict | None = None,
                   **extra) -> JSONResponse:
    if status == 422 and is_openai(path):
        status = 400  # OpenAI answers a request it cannot read as given with 400, naming `param`
    return JSONResponse(status_code=status, content=error_content(path, status, errors, **extra),
                        headers=headers)


# OpenAI's shape (docs/architecture.md, "Errors"). /v1 requests name the provider in `model`: an error
# the router raises about `provider` is about the field the client sent, `model`.
_V1_FIELDS = {"provider": "model"}
_CODES = {401: "invalid_api_key", 403: "forbidden", 405: "method_not_allowed", 409: "conflict",
          413: "request_too_large", 415: "unsupported_media_type", 421: "misdirected_request",
          429: "rate_limit_exceeded", 503: "service_unavailable", 507: "insufficient_storage"}
_VALIDATION_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter",
                     "json_invalid": "invalid_json"}


def is_openai(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _param(loc) -> str | None:
    parts = [str(part) for part in loc[1:]] if loc and loc[0] in ("body", "path", "query", "header") else []
    if parts:
        parts[0] = _V1_FIELDS.get(parts[0], parts[0])
    return ".".join(parts) or None


def openai_code(status: int, kind: str | None, param: str | None) -> str:
    """OpenAI's `code` for an error: the client's typed exceptions carry it as `.code`."""
    if status == 404:
        return "model_not_found" if param == "model" else "not_found"
    if status in (400, 422):
        if (kind or "").endswith(("_type", "_parsing")):  # pydantic's string_type, int_parsing...
            return "invalid_type"
        return _VALIDATION_CODES.get(kind or "", "invalid_value")
    return _CODES.get(status, "internal_error" if status >= 500 else "invalid_request")


def _openai_error(status: int, errors: list[dict]) -> dict:
    first = errors[0]
    param = _param(first.get("loc", ()))
    message = "; ".join(f"{where}: {e['msg']}" if (where := _param(e["loc"])) else e["msg"] for e in errors)
    kind = _KIND.get(status, "service_unavailable" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param,
                      "code": openai_code(status, first.get("type"), param)}}


def _http_error_item(exc: StarletteHTTPException) -> dict:
    if isinstance(exc.detail, list):
        return exc.detail[0]
    where = {400: ["body"], 401: ["header", "Authorization"], 404: ["path"], 405: ["method"]}
    return {"loc": where.get(exc.status_code, []), "msg": str(exc.detail), "type": f"http_{exc.status_code}"}


def _no_route(request: Request, exc: StarletteHTTPException) -> str:
    """Starlette's "Not Found" and "Method Not Allowed", said as an OpenAI client shows them."""
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{request.method} is not allowed on {request.url.path}; it takes {allowed or 'other methods'}"
    return f"{request.method} {request.url.path} is not an endpoint of this service (see /docs)"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, 422, [_without_secrets(e) for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        item = _http_error_item(exc)
        if is_openai(request.url.path) and exc.status_code in (404, 405) and isinstance(exc.detail, str):
            item["msg"] = _no_route(request, exc)
        return error_response(request.url.path, exc.status_code, [item],
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        error = {"loc": ["body", exc.field], "msg": exc.message, "type": "invalid_input"}
        status = exc.status
        if isinstance(exc, UnknownModel) and is_openai(request.url.path):
            status = 404  # as OpenAI answers a model it does not have: the client's NotFoundError
        return error_response(request.url.path, status, [error])

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        error = {"loc": ["body", exc.field], "msg": str(exc), "type": "busy"}
        return error_response(request.url.path, 429, [error],
                              headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> JSONResponse:
        # 507: the request was fine, the home folder could not keep it; nothing was half-written.
        log.error("%s", exc)
        name = getattr(exc.path, "name", str(exc.path))
        error = {"loc": ["storage", name], "type": "storage_full" if exc.full else "storage_error",
                 "msg": f"could not write {name}: {exc.reason}; nothing was changed. "
                        "Free space (or fix permissions) in the workbench home folder and retry."}
        return error_response(request.url.path, 507, [error])

    @app.exception_handler(AllProvidersFailed)
    async def _no_provider(request: Request, exc: AllProvidersFailed) -> JSONResponse:
        error = {"loc": ["body", "provider"], "msg": str(exc), "type": "no_provider"}
        return error_response(request.url.path, 503, [error], attempts=exc.attempts)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the cause for the operator; the client gets no internals (paths, keys, traces).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return unexpected_response(request.url.path, exc)


def unexpected_response(path: str, exc: Exception) -> JSONResponse:
    error = {"loc": [], "msg": f"internal error ({type(exc).__name__}); see the server log",
             "type": "internal"}
    return error_response(path, 500, [error])
