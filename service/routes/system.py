from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.schemas import BackupResponse, HealthResponse, StatusResponse
from workbench.system import health as system_health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthResponse)
def health(workbench: WorkbenchDep) -> dict:
    """Readiness: MLX, BLAS, memory, device, the home's free disk space and the database. Needs no token."""
    report = system_health(workbench.settings.home_dir)
    if problems := workbench.database_problems():
        report["problems"] += problems
        report["status"] = "degraded"
    return report


@router.get("/status", response_model=StatusResponse, dependencies=[Authorized])
def status(workbench: WorkbenchDep) -> dict:
    """Server information, training jobs and memory use."""
    return workbench.status()


@router.post("/system/backup", response_model=BackupResponse, dependencies=[Authorized])
def backup(workbench: WorkbenchDep) -> dict:
    """Copy the job database while the service runs (SQLite's online backup) to <home>/backups/."""
    return workbench.backup()
