"""litellm, imported safely, with its log records routed through the root logger."""

from __future__ import annotations

import logging
import os

# Before litellm is first imported: otherwise each import tries to download a price list from the
# internet, which fails offline and can hang on a network that drops packets.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.suppress_debug_info = True
litellm.telemetry = False

_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def route_litellm_logs(log_level: str) -> None:
    """Send litellm's log records through the root logger's handlers only, warnings and up unless
    `log_level` is DEBUG. litellm logs three INFO lines a call, each twice (its own handler and the
    root's): at 16 concurrent clients on the tiny model that was 9% of the service's time. And its
    own handler would miss the key redaction, which filters the root's handlers."""
    debug = log_level.upper() == "DEBUG"
    for name in _LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
