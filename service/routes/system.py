from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.schemas import HealthResponse, StatusResponse
from workbench.system import health as system_health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthResponse)
def health(workbench: WorkbenchDep) -> dict:
    """Readiness: MLX, BLAS, memory, device and the home's free disk space. Needs no token."""
    return system_health(workbench.settings.home_dir)


@router.get("/status", response_model=StatusResponse, dependencies=[Authorized])
def status(workbench: WorkbenchDep) -> dict:
    """Server information, training jobs and memory use."""
    return workbench.status()
