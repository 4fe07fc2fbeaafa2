from __future__ import annotations

from fastapi import APIRouter

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from workbench.schemas import DatasetPreview, PreviewRequest

router = APIRouter(prefix="/datasets", tags=["datasets"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401))


@router.post("/preview", response_model=DatasetPreview)
def preview(request: PreviewRequest, workbench: WorkbenchDep):
    """A training configuration's data as the model would see it: the summary (rows, format, problems),
    the first rows with their trained tokens marked, and on request every row's token count."""
    return workbench.preview_dataset(request)
