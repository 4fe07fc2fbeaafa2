from __future__ import annotations

from fastapi import APIRouter, HTTPException

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.schemas import ConfigureResponse, FallbackRequest, FallbackResponse, ProviderState
from workbench.providers.params import ProviderName
from workbench.providers.secrets import mask_key
from workbench.providers.store import ProviderConfig

router = APIRouter(prefix="/providers", tags=["providers"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 507))


@router.get("", response_model=dict[str, ProviderState])
def list_providers(workbench: WorkbenchDep) -> dict:
    """Every provider by name: configured, usable, model, api_base, masked key and health."""
    return workbench.providers()


@router.post("/configure", response_model=ConfigureResponse)
def configure(config: ProviderConfig, workbench: WorkbenchDep) -> dict:
    """Configure a provider; kept across restarts (the key in a file only the owner can read)."""
    entry = workbench.router.configure(config)
    return {"configured": config.provider, "model": entry["model"], "api_base": entry["api_base"],
            "api_key": mask_key(entry["api_key"]), "timeout": entry["timeout"]}


@router.delete("/{provider}", response_model=FallbackResponse, responses=error_responses(404))
def remove(provider: ProviderName, workbench: WorkbenchDep) -> dict:
    """Forget a provider's configuration and key; answers the fallback order left."""
    if not workbench.router.remove(provider):
        raise HTTPException(404, detail=f"{provider} is not configured")
    return {"order": workbench.router.chain()}


@router.post("/fallback", response_model=FallbackResponse)
def set_fallback(body: FallbackRequest, workbench: WorkbenchDep) -> dict:
    """Set the order in which requests that name no provider try them."""
    return {"order": workbench.router.set_fallback(body.order)}


@router.get("/fallback", response_model=FallbackResponse)
def get_fallback(workbench: WorkbenchDep) -> dict:
    """The order in which requests that name no provider try them."""
    return {"order": workbench.router.chain()}
