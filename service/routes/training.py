from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.schemas import FuseResponse, JobAction, JobStatus, MetricsResponse, StartRequest, StartResponse
from workbench.errors import InputError
from workbench.training.config import EXPERIMENT_NAME_PATTERN
from workbench.training.manager import describe
from workbench.training.store import ACTIVE, TERMINAL

router = APIRouter(prefix="/train", tags=["training"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 404, 409, 507))

ExperimentName = Annotated[str, Path(pattern=EXPERIMENT_NAME_PATTERN, description="The experiment's name.")]


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="Same as the body's request_id.")]

_EVENTS_DOC = {200: {"content": {"text/event-stream": {}},
                     "description": "Server-sent events; reconnect with Last-Event-ID to miss nothing."}}


@router.post("/start", response_model=StartResponse)
def start(body: StartRequest, workbench: WorkbenchDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Queue a training job; it starts at once when fewer than job_concurrency jobs run. A retry with
    the same request_id (or Idempotency-Key) answers the job it started."""
    if body.request_id and idempotency_key and body.request_id != idempotency_key:
        raise InputError("request_id", "differs from the Idempotency-Key header: send one, or the same")
    job = workbench.jobs.start(body.training_config(), request_id=body.request_id or idempotency_key)
    return {"experiment_name": job["experiment_name"], "job_id": job["job_id"], "status": "started",
            "state": job["status"], "model_path": job["model_path"]}


@router.get("/jobs", response_model=list[JobStatus])
def jobs(workbench: WorkbenchDep) -> list[dict]:
    """Every job, newest first."""
    return [describe(job) for job in workbench.store.jobs()]


@router.get("/{experiment_name}/status", response_model=JobStatus)
def status(experiment_name: ExperimentName, workbench: WorkbenchDep) -> dict:
    """The latest job of an experiment: state, phase, step, loss, speed, memory, checkpoint, error."""
    return describe(workbench.jobs.job(experiment_name))


@router.post("/{experiment_name}/stop", response_model=JobAction)
def stop(experiment_name: ExperimentName, workbench: WorkbenchDep) -> dict:
    """Stop a queued or running job; a running one writes a checkpoint first (waits up to 30 s)."""
    job = workbench.jobs.stop(experiment_name)
    deadline = time.monotonic() + 30
    while job["status"] in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
        job = workbench.store.get(job["job_id"])
    return {"experiment_name": experiment_name, "job_id": job["job_id"], "action": "stopped",
            "state": job["status"], "current_step": job["current_step"], "checkpoint": job["checkpoint"]}


@router.post("/{experiment_name}/resume", response_model=JobAction)
def resume(experiment_name: ExperimentName, workbench: WorkbenchDep) -> dict:
    """Continue a stopped, failed or interrupted job from its last checkpoint."""
    job = workbench.jobs.resume(experiment_name)
    return {"experiment_name": experiment_name, "job_id": job["job_id"], "action": "resumed",
            "state": job["status"], "current_step": job["current_step"], "checkpoint": job["checkpoint"]}


@router.get("/{experiment_name}/metrics", response_model=MetricsResponse)
def metrics(experiment_name: ExperimentName, workbench: WorkbenchDep) -> dict:
    """The step series of the experiment's latest job: loss, learning rate, tokens/s, memory, eval loss."""
    job = workbench.jobs.job(experiment_name)
    return {"experiment_name": experiment_name, "job_id": job["job_id"],
            "steps": workbench.store.metrics(job["job_id"])}


@router.get("/{experiment_name}/events", response_class=StreamingResponse, responses=_EVENTS_DOC)
async def events(experiment_name: ExperimentName, workbench: WorkbenchDep,
                 last_event_id: int = Header(default=0, ge=0, alias="Last-Event-ID")):
    """Progress as server-sent events (types: state, message, metrics), until the job ends."""
    job = workbench.jobs.job(experiment_name)

    async def stream():
        after = last_event_id
        while True:
            new = await run_in_threadpool(workbench.store.events, [job["job_id"]], after)
            for event in new:
                after = event["id"]
                yield format_sse_event(data_str=json.dumps(event), event=event["type"], id=str(event["id"]))
            current = await run_in_threadpool(workbench.store.get, job["job_id"])
            if current["status"] in TERMINAL and not new:
                return
            await asyncio.sleep(0.3)

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.post("/{experiment_name}/fuse", response_model=FuseResponse)
def fuse(experiment_name: ExperimentName, workbench: WorkbenchDep) -> dict:
    """Write the base model with the trained adapter merged into it, as a model folder."""
    path = workbench.fuse(experiment_name)
    return {"experiment_name": experiment_name, "path": str(path)}
