from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.sse import format_sse_event

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from workbench.errors import InputError
from workbench.schemas import FuseResponse, JobAction, JobStatus, MetricsResponse, StartRequest, StartResponse
from workbench.training.config import EXPERIMENT_NAME_PATTERN

router = APIRouter(prefix="/train", tags=["training"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 404, 409, 507))

ExperimentName = Annotated[str, Path(pattern=EXPERIMENT_NAME_PATTERN, description="The experiment's name.")]


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="Same as the body's request_id.")]

_EVENTS_DOC = {200: {"content": {"text/event-stream": {}, "application/json": {}},
                     "description": "Server-sent events; reconnect with Last-Event-ID to miss nothing. "
                     "With follow=false, the events so far as JSON."}}


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


@router.get("/{experiment_name}/events", response_class=StreamingResponse, responses=_EVENTS_DOC)
async def events(experiment_name: ExperimentName, workbench: WorkbenchDep,
                 last_event_id: int = Header(default=0, ge=0, alias="Last-Event-ID"),
                 follow: bool = Query(default=True, description="false: answer the events written so far "
                                      "at once, as JSON (a JobEvents), instead of streaming them.")):
    """Progress as server-sent events (types: state, message, metrics), until the job ends."""
    first = await run_in_threadpool(workbench.events, experiment_name, last_event_id)  # a 404 comes here
    if not follow:
        return JSONResponse(first.model_dump(mode="json"))

    async def stream():
        page, after = first, last_event_id
        while True:
            for event in page.events:
                after = event.id
                yield format_sse_event(data_str=json.dumps(event.model_dump()), event=event.type,
                                       id=str(event.id))
            if page.ended:
                return
            await asyncio.sleep(0.3)
            page = await run_in_threadpool(workbench.events, experiment_name, after)

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.post("/{experiment_name}/fuse", response_model=FuseResponse)
def fuse(experiment_name: ExperimentName, workbench: WorkbenchDep):
    """Write the base model with the trained adapter merged into it, as a model folder."""
    return workbench.fuse(experiment_name)
