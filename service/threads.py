"""Worker threads for the routes' blocking calls, kept apart by what they wait on.

FastAPI runs sync routes and `run_in_threadpool` calls in anyio's one pool of 40 threads. A
generation holds its thread until the answer is complete, so 40 long generations took every thread
and `/health` waited 41 s behind them. Generations get their own, larger allowance; the system
routes (health, status) get theirs, so nothing a client asks for can keep them waiting.
"""

from __future__ import annotations

from functools import cache, partial

import anyio.to_thread

# More than the local engines take at once (batch and queue per loaded model): past that they
# answer 429 at once, so this bound is never what a request waits for.
GENERATION_THREADS = 256
SYSTEM_THREADS = 4


@cache
def _limiter(name: str, tokens: int) -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(tokens)


async def in_generation_thread(func, *args, **kwargs):
    """Run a call that waits on generation (the engine or a remote provider)."""
    limiter = _limiter("generation", GENERATION_THREADS)
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs), limiter=limiter)


async def in_system_thread(func, *args, **kwargs):
    """Run a quick call of the health and status routes, never behind generations."""
    limiter = _limiter("system", SYSTEM_THREADS)
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs), limiter=limiter)
