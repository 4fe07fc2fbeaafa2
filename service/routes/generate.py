from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.threads import in_generation_thread
from workbench.providers.params import BatchGenerateParams, GenerateParams
from workbench.providers.router import ProviderStream
from workbench.providers.secrets import redactor
from workbench.schemas import BatchItem, GenerateResponse

router = APIRouter(prefix="/generate", tags=["generation"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, 409, 429, 503))

_STREAM_DOC = {
    200: {
        "description": "JSON, or with `stream: true` server-sent events: `token` events carrying "
        "`{\"text\": ...}` as text arrives, then one `done` event with the full response "
        "(or an `error` event).",
        "content": {"text/event-stream": {}},
    }
}


@router.post("", response_model=GenerateResponse, responses=_STREAM_DOC)
async def generate(params: GenerateParams, workbench: WorkbenchDep):
    """Generate from a prompt or chat messages, whole or streamed."""
    if not params.stream:
        return await in_generation_thread(workbench.generate, params)
    stream = await in_generation_thread(workbench.stream, params)
    return StreamingResponse(_events(stream), media_type="text/event-stream")


async def _events(stream: ProviderStream):
    pieces = iter(stream)
    try:
        while (piece := await in_generation_thread(next, pieces, None)) is not None:
            yield format_sse_event(data_str=json.dumps({"text": piece}), event="token")
        body = stream.result()
        yield format_sse_event(data_str=json.dumps(body.model_dump(mode="json")), event="done")
    except Exception as exc:
        detail = redactor(f"{type(exc).__name__}: {exc}")
        yield format_sse_event(data_str=json.dumps({"detail": detail}), event="error")
    finally:
        stream.cancel()  # the client may have gone: free its place in the batch


@router.post("/batch", response_model=list[BatchItem])
async def generate_batch(params: BatchGenerateParams, workbench: WorkbenchDep):
    """Generate for several prompts at once (the local engine batches them together)."""
    return await in_generation_thread(workbench.generate_batch, params)
