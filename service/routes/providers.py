from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from workbench.providers.params import ProviderName
from workbench.providers.store import ProviderConfig
from workbench.schemas import ConfigureResponse, FallbackRequest, FallbackResponse, ProviderState

router = APIRouter(prefix="/providers", tags=["providers"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 507))


@router.get("", response_model=dict[str, ProviderState])
def list_providers(workbench: WorkbenchDep):
    """Every provider by name: configured, usable, model, api_base, masked key and health."""
    return workbench.providers()


@router.post("/configure", response_model=ConfigureResponse)
def configure(config: ProviderConfig, workbench: WorkbenchDep):
    """Configure a provider; kept across restarts (the key in a file only the owner can read)."""
    return workbench.configure_provider(config)


@router.delete("/{provider}", response_model=FallbackResponse, responses=error_responses(404))
def remove(provider: ProviderName, workbench: WorkbenchDep):
    """Forget a provider's configuration and key; answers the fallback order left."""
    return workbench.remove_provider(provider)


@router.post("/fallback", response_model=FallbackResponse)
def set_fallback(body: FallbackRequest, workbench: WorkbenchDep):
    """Set the order in which requests that name no provider try them."""
    return workbench.set_fallback(body.order)


@router.get("/fallback", response_model=FallbackResponse)
def get_fallback(workbench: WorkbenchDep):
    """The order in which requests that name no provider try them."""
    return workbench.fallback()
