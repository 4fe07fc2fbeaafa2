"""One error shape for every 4xx: FastAPI's own, `{"detail": [{"loc", "msg", "type"}]}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from workbench.errors import InputError
from workbench.providers.router import AllProvidersFailed

log = logging.getLogger("service")


def input_error_body(exc: InputError) -> dict:
    return {"detail": [{"loc": ["body", exc.field], "msg": exc.message, "type": "invalid_input"}]}


def _without_secrets(error: dict) -> dict:
    """FastAPI echoes the offending input; never echo a key, nor a whole body that holds one."""
    given = error.get("input")
    if "api_key" in error.get("loc", ()) or (isinstance(given, dict) and "api_key" in given):
        return {k: v for k, v in error.items() if k != "input"}
    return error


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_without_secrets(e) for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=input_error_body(exc))

    @app.exception_handler(AllProvidersFailed)
    async def _no_provider(request: Request, exc: AllProvidersFailed) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc), "attempts": exc.attempts})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the cause for the operator; the client gets no internals (paths, keys, traces).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error ({type(exc).__name__}); see the server log"},
        )
