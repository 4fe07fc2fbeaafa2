"""One error shape for every 4xx: FastAPI's own, `{"detail": [{"loc", "msg", "type"}]}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workbench.errors import InputError

log = logging.getLogger("service")


def input_error_body(exc: InputError) -> dict:
    return {"detail": [{"loc": ["body", exc.field], "msg": exc.message, "type": "invalid_input"}]}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=input_error_body(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the cause for the operator; the client gets no internals (paths, keys, traces).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error ({type(exc).__name__}); see the server log"},
        )
