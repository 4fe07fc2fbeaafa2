"""The HTTP face of the workbench: `uvicorn service.main:app --port 8200`."""

from __future__ import annotations

import logging
import sqlite3
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_standalone_docs import StandaloneDocs
from pydantic import ValidationError

import workbench
from service.body_guard import BodyGuard
from service.errors import install_error_handlers
from service.guard import RequestGuard
from service.openapi import keep_what_applies
from service.routes import datasets, evaluation, generate, openai_compat, providers, system, training
from workbench.core import Workbench
from workbench.providers.litellm_bridge import route_litellm_logs
from workbench.providers.secrets import redactor
from workbench.settings import Settings
from workbench.training import dbfile
from workbench.training.store import JobStore


def load_settings() -> Settings:
    """The settings, or the end of start-up with one clear line (no traceback) saying what to fix."""
    try:
        settings = Settings()
        settings.check_token()
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    return settings


def open_database(settings: Settings) -> dict | None:
    """Check (a damaged one is moved aside: answered) and open the job database once, here rather
    than in the lifespan, whose failures end in a traceback instead of one line saying what to do."""
    path = settings.home / "workbench.db"
    try:
        path = settings.home_dir / "workbench.db"
        store = JobStore(path, check=True)
    except dbfile.DatabaseDamaged as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise SystemExit(f"refusing to start: cannot open or create {path}: {exc}") from None
    store.close()
    return store.moved_aside


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    settings.check_token()
    # The engine thread runs Python between MLX calls and holds the GIL; a thread waiting for it (the
    # event loop, a /health call) waits up to the switch interval each time: 5 ms by default, which
    # added up to /health answers over 100 ms under 50 generations. 1 ms keeps them at a few ms.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    route_litellm_logs(settings.log_level)
    redactor.install()
    moved_aside = open_database(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bench = Workbench(settings)
        bench.store.moved_aside = bench.store.moved_aside or moved_aside
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
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )
    # Swagger UI's and ReDoc's scripts, styles and icons from an installed package, not a CDN: /docs
    # works offline (docs/architecture.md, "The service's edges").
    StandaloneDocs(app)
    install_error_handlers(app)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(RequestGuard, settings=settings)  # added last: runs first, before CORS
    for module in (system, providers, generate, openai_compat, training, evaluation, datasets):
        app.include_router(module.router)
    keep_what_applies(app, settings.requires_token())
    return app


app = create_app()
