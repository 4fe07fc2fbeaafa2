"""A job's events as the routes answer them: server-sent events until the job ends (resumable with
Last-Event-ID), or, with follow=false, those written so far as JSON. Training and evaluation jobs
share it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.sse import format_sse_event

from workbench.schemas import JobEvents

EVENTS_DOC = {200: {"content": {"text/event-stream": {}, "application/json": {}},
                    "description": "Server-sent events; reconnect with Last-Event-ID to miss nothing. "
                    "With follow=false, the events so far as JSON."}}
LastEventId = Annotated[int, Header(ge=0, alias="Last-Event-ID")]
Follow = Annotated[bool, Query(description="false: answer the events written so far at once, as JSON (a "
                               "JobEvents), instead of streaming them.")]


async def event_stream(page_after: Callable[[int], JobEvents], last_event_id: int, follow: bool):
    """The events after `last_event_id`, read through `page_after` (a Workbench method: a 404 for an
    unknown job comes from its first call, before the stream starts)."""
    first = await run_in_threadpool(page_after, last_event_id)
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
            page = await run_in_threadpool(page_after, after)

    return StreamingResponse(stream(), media_type="text/event-stream")
