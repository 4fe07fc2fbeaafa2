"""The HTTP face of the workbench: `uvicorn service.main:app --port 8200`."""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

import workbench
from service.body_guard import BodyGuard
from service.errors import install_error_handlers
from service.openapi import keep_what_applies
from service.routes import generate, openai_compat, providers, system, training
from workbench.core import Workbench
from workbench.providers.litellm_bridge import route_litellm_logs
from workbench.providers.secrets import redactor
from workbench.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # The engine thread runs Python between MLX calls and holds the GIL; a thread waiting for it (the
    # event loop, a /health call) waits up to the switch interval each time: 5 ms by default, which
    # added up to /health answers over 100 ms under 50 generations. 1 ms keeps them at a few ms.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    route_litellm_logs(settings.log_level)
    redactor.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bench = Workbench(settings)
        app.state.workbench = bench
        bench.warm_up()
        yield
        bench.close()

    app = FastAPI(
        title="MLX training workbench",
        version=workbench.__version__,
        description="Fine-tune (SFT, LoRA, QLoRA) and serve LLMs with MLX. "
        "With WORKBENCH_API_TOKEN set, send it as a bearer token (Authorize button).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    for module in (system, providers, generate, openai_compat, training):
        app.include_router(module.router)
    keep_what_applies(app)
    return app


app = create_app()
