"""Whether the Hugging Face hub may be asked, for models and datasets alike.

The hub is off when the environment says so (HF_HUB_OFFLINE, and for datasets HF_DATASETS_OFFLINE)
or when `settings.hub_downloads` is off; then only what is cached locally is read. When it is on,
one quick lookup (`settings.hub_timeout_s`) comes before any download, so that a missing name fails
at once and an unreachable hub does not hold a request through the libraries' own retries.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Literal

from workbench.settings import Settings

RepoType = Literal["model", "dataset"]
Lookup = Literal["found", "missing", "unreachable"]

# The variables each library reads: huggingface_hub's for models, and `datasets` adds its own.
OFFLINE_VARIABLES = {"model": ("HF_HUB_OFFLINE",), "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_LOCK = threading.Lock()


def offline_reason(settings: Settings, repo_type: RepoType) -> str | None:
    """Why the hub must not be asked now, or None when it may be."""
    names = OFFLINE_VARIABLES[repo_type]
    if any(os.environ.get(name, "").strip().lower() in _TRUE for name in names):
        return f"offline mode is on ({' / '.join(names)})"
    if not settings.hub_downloads:
        return "hub downloads are off (WORKBENCH_HUB_DOWNLOADS)"
    return None


def lookup(repo_id: str, repo_type: RepoType, timeout: float) -> tuple[Lookup, str]:
    """Whether the hub holds `repo_id` ('found', 'missing' or 'unreachable'), after one request of at
    most `timeout` seconds, and the kind of error that kept it out of reach."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=timeout)
    except RepositoryNotFoundError:
        return "missing", ""
    except Exception as exc:  # no network shows up as httpx, OSError or HTTP errors alike
        return "unreachable", type(exc).__name__
    return "found", ""


@contextmanager
def datasets_offline(on: bool):
    """`datasets` in offline mode for one load, when the environment has not set it already.

    Only used when the hub cannot be reached or hub downloads are off, so other threads' hub requests
    meanwhile would not have succeeded anyway.
    """
    if not on:
        yield
        return
    from datasets import config

    with _OFFLINE_LOCK:
        saved = config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
        try:
            yield
        finally:
            config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE = saved
