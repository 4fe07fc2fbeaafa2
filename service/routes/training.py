from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import StreamingResponse

from service.deps import Authorized, WorkbenchDep
from service.events import EVENTS_DOC, Follow, LastEventId, event_stream
from service.openapi import COMMON, error_responses
from workbench.errors import InputError
from workbench.schemas import FuseResponse, JobAction, JobStatus, MetricsResponse, StartRequest, StartResponse
from workbench.training.config import EXPERIMENT_NAME_PATTERN

router = APIRouter(prefix="/train", tags=["training"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 404, 409, 507))

ExperimentName = Annotated[str, Path(pattern=EXPERIMENT_NAME_PATTERN, description="The experiment's name.")]


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="Same as the body's request_id.")]

@router.post("/start", response_model=StartResponse)
def start(body: StartRequest, workbench: WorkbenchDep, idempotency_key: IdempotencyKey = None):
    """Queue a training job; it starts at once when fewer than job_concurrency jobs run. A retry with
    the same request_id (or Idempotency-Key) answers the job it started."""
    if body.request_id and idempotency_key and body.request_id != idempotency_key:
        raise InputError("request_id", "differs from the Idempotency-Key header: send one, or the same")
    return workbench.start_training(body.training_config(), request_id=body.request_id or idempotency_key)


@router.get("/jobs", response_model=list[JobStatus])
def jobs(workbench: WorkbenchDep):
    """Every job, newest first."""
    return workbench.list_jobs()


@router.get("/{experiment_name}/status", response_model=JobStatus)
def status(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """The latest job of an experiment: state, phase, step, loss, speed, memory, checkpoint, error."""
    return workbench.job_status(experiment_name)


@router.post("/{experiment_name}/stop", response_model=JobAction)
def stop(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """Stop a queued or running job; a running one writes a checkpoint first (waits up to 30 s)."""
    return workbench.stop_training(experiment_name)


@router.post("/{experiment_name}/resume", response_model=JobAction)
def resume(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """Continue a stopped, failed or interrupted job from its last checkpoint."""
    return workbench.resume_training(experiment_name)


@router.get("/{experiment_name}/metrics", response_model=MetricsResponse)
def metrics(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """The step series of the experiment's latest job: loss, learning rate, tokens/s, memory, eval loss."""
    return workbench.metrics(experiment_name)


@router.get("/{experiment_name}/events", response_class=StreamingResponse, responses=EVENTS_DOC)
async def events(experiment_name: ExperimentName, workbench: WorkbenchDep, last_event_id: LastEventId = 0,
                 follow: Follow = True):
    """Progress as server-sent events (types: state, message, metrics), until the job ends."""
    return await event_stream(lambda after: workbench.events(experiment_name, after), last_event_id, follow)


@router.post("/{experiment_name}/fuse", response_model=FuseResponse)
def fuse(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """Write the base model with the trained adapter merged into it, as a model folder."""
    return workbench.fuse(experiment_name)
