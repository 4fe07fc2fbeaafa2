from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from service.deps import Authorized, WorkbenchDep
from service.events import EVENTS_DOC, Follow, LastEventId, event_stream
from service.openapi import COMMON, error_responses
from workbench.evaluation.config import EvalConfig
from workbench.schemas import EvalSamples, EvalStartResponse, EvalStatus
from workbench.training.config import EXPERIMENT_NAME_PATTERN

router = APIRouter(prefix="/eval", tags=["evaluation"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 404, 409))

EvalName = Annotated[str, Path(pattern=EXPERIMENT_NAME_PATTERN, description="The evaluation's name.")]
MAX_PAGE = 500  # items a samples page may hold


@router.post("/start", response_model=EvalStartResponse)
def start(body: EvalConfig, workbench: WorkbenchDep):
    """Queue an evaluation: lm-eval tasks over a model, an experiment (its adapter, not fused) or a
    model folder. Unknown models and tasks, and task files that do not parse, are refused here."""
    return workbench.start_evaluation(body)


@router.get("/jobs", response_model=list[EvalStatus])
def jobs(workbench: WorkbenchDep):
    """Every evaluation job, newest first."""
    return workbench.list_evaluations()


@router.get("/{name}/status", response_model=EvalStatus)
def status(name: EvalName, workbench: WorkbenchDep):
    """The latest job of an evaluation: state, progress, and each task's metrics with their standard
    errors once it has completed."""
    return workbench.evaluation_status(name)


@router.get("/{name}/events", response_class=StreamingResponse, responses=EVENTS_DOC)
async def events(name: EvalName, workbench: WorkbenchDep, last_event_id: LastEventId = 0,
                 follow: Follow = True):
    """Progress as server-sent events (types: state, message, progress), until the job ends."""
    return await event_stream(lambda after: workbench.evaluation_events(name, after), last_event_id, follow)


@router.get("/{name}/samples", response_model=EvalSamples)
def samples(name: EvalName, workbench: WorkbenchDep,
            offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items in this page.")] = 50,
            task: Annotated[str | None, Query(max_length=200, description="Only this task's items.")] = None):
    """The items the evaluation scored: each one's prompt, target, response and scores."""
    return workbench.evaluation_samples(name, offset, limit, task)


@router.post("/{name}/stop", response_model=EvalStatus)
def stop(name: EvalName, workbench: WorkbenchDep):
    """Stop a queued or running evaluation (waits up to 30 s for it to end)."""
    return workbench.stop_evaluation(name)
