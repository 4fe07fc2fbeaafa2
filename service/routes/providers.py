from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.schemas import ProviderState

router = APIRouter(prefix="/providers", tags=["providers"], dependencies=[Authorized])


@router.get("", response_model=dict[str, ProviderState])
def list_providers(workbench: WorkbenchDep) -> dict:
    """Every provider by name, with whether it is configured and usable now."""
    return workbench.providers()
