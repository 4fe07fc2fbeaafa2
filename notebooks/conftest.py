"""pytest's set-up for the notebooks (`pytest --nbmake notebooks`): one models folder for them all.

Each notebook keeps its state in a temporary WORKBENCH_HOME of its own. Left alone, each would also
build the tiny model into that home (about 20 s on 2 cores). Here, unless WORKBENCH_MODELS_PATH is set
already, every notebook of the run gets the same fresh models folder: the first notebook builds the
tiny model there (under a file lock) and the others load it. The variable is set only while a
notebook runs, so the unit tests collected beside them never see it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_shared: dict[str, str] = {}
_set_here = pytest.StashKey[bool]()


def _models_folder() -> str:
    if "path" not in _shared:
        _shared["path"] = tempfile.mkdtemp(prefix="workbench-notebook-models-")
    return _shared["path"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.path.suffix != ".ipynb" or os.environ.get("WORKBENCH_MODELS_PATH"):
        return
    os.environ["WORKBENCH_MODELS_PATH"] = _models_folder()  # the kernel inherits it as it starts
    item.stash[_set_here] = True


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    if item.stash.get(_set_here, False):
        os.environ.pop("WORKBENCH_MODELS_PATH", None)


def pytest_sessionfinish(session):
    if "path" in _shared:
        shutil.rmtree(_shared.pop("path"), ignore_errors=True)

