from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.openapi import error_responses
from service.threads import in_system_thread
from workbench.schemas import BackupResponse, HealthResponse, StatusResponse

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthResponse)
async def health(workbench: WorkbenchDep):
    """Health (MLX, BLAS, memory, device) and readiness (what is still loading). Needs no token."""
    return await in_system_thread(workbench.health)


@router.get("/status", response_model=StatusResponse, dependencies=[Authorized],
            responses=error_responses(401))
async def status(workbench: WorkbenchDep):
    """Server information, training jobs and memory use."""
    return await in_system_thread(workbench.status)


@router.post("/system/backup", response_model=BackupResponse, dependencies=[Authorized],
             responses=error_responses(401))
def backup(workbench: WorkbenchDep):
    """Copy the job database while the service runs (SQLite's online backup) to <home>/backups/."""
    return workbench.backup()
