"""Shared dependencies of the routes."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workbench.core import Workbench

_bearer = HTTPBearer(auto_error=False, description="WORKBENCH_API_TOKEN, when the server sets one.")


# Both dependencies are async: they never block, and a sync one costs every request a trip through
# anyio's shared threadpool (under load, tens of milliseconds of /status's answer).
async def get_workbench(request: Request) -> Workbench:
    return request.app.state.workbench


WorkbenchDep = Annotated[Workbench, Depends(get_workbench)]


async def require_token(
    workbench: WorkbenchDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With WORKBENCH_API_TOKEN set, the request must carry it as a bearer token."""
    settings = workbench.settings
    if not settings.requires_token():
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not secrets.compare_digest(given, expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token: send 'Authorization: Bearer <WORKBENCH_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = Depends(require_token)
