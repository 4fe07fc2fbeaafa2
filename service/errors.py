"""One error shape for every 4xx: FastAPI's own, `{"detail": [{"loc", "msg", "type"}]}`.

Under /v1 the same errors take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so OpenAI clients show the reason.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from workbench.errors import InputError, StorageError
from workbench.providers.router import AllProvidersFailed

log = logging.getLogger("service")


def _without_secrets(error: dict) -> dict:
    """FastAPI echoes the offending input; never echo a key, nor a whole body that holds one."""
    given = error.get("input")
    if "api_key" in error.get("loc", ()) or (isinstance(given, dict) and "api_key" in given):
        return {k: v for k, v in error.items() if k != "input"}
    return error


def _answer(request: Request, status: int, errors: list[dict], **extra) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        first = errors[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in errors)
        kind = "invalid_request_error" if status < 500 else "service_unavailable"
        body = {"error": {"message": message, "type": kind, "param": field, "code": None}}
    else:
        body = {"detail": jsonable_encoder(errors)}
    return JSONResponse(status_code=status, content=body | extra)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(request, 422, [_without_secrets(e) for e in exc.errors()])

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        error = {"loc": ["body", exc.field], "msg": exc.message, "type": "invalid_input"}
        return _answer(request, exc.status, [error])

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> JSONResponse:
        # 507: the request was fine, the home folder could not keep it; nothing was half-written.
        log.error("%s", exc)
        name = getattr(exc.path, "name", str(exc.path))
        error = {"loc": ["storage", name], "type": "storage_full" if exc.full else "storage_error",
                 "msg": f"could not write {name}: {exc.reason}; nothing was changed. "
                        "Free space (or fix permissions) in the workbench home folder and retry."}
        return _answer(request, 507, [error])

    @app.exception_handler(AllProvidersFailed)
    async def _no_provider(request: Request, exc: AllProvidersFailed) -> JSONResponse:
        error = {"loc": ["body", "provider"], "msg": str(exc), "type": "no_provider"}
        return _answer(request, 503, [error], attempts=exc.attempts)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the cause for the operator; the client gets no internals (paths, keys, traces).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error ({type(exc).__name__}); see the server log"},
        )
