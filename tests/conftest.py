"""Fixtures shared by all tests: one models folder per run (the tiny model is built once)."""

from __future__ import annotations

import pytest

import workbench  # noqa: F401  (loads OpenBLAS before anything imports mlx)
from workbench.models.builder import builtin_spec, ensure_built
from workbench.settings import Settings


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    ensure_built(builtin_spec("tiny"), folder)
    return str(folder)


@pytest.fixture
def settings(tmp_path, models_dir) -> Settings:
    return Settings(home=tmp_path / "home", models_path=models_dir, hub_downloads=False)


@pytest.fixture(scope="session")
def tiny(models_dir):
    """The tiny model and tokenizer, loaded once through mlx_lm.load like any real model."""
    import mlx_lm

    return mlx_lm.load(f"{models_dir}/tiny")


@pytest.fixture(scope="module")
def engine(tiny):
    """A local engine over the tiny model with its default settings (one a module, closed after it)."""
    from workbench.providers.engine import LocalEngine

    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer)
    yield engine
    engine.close()
