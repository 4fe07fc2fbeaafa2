"""litellm, imported safely, and the local engine registered with it as a custom provider."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict

# Before litellm is first imported: otherwise each import tries to download a price list from the
# internet, which fails offline and can hang on a network that drops packets.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import CustomLLM, ModelResponse  # noqa: E402

from workbench.providers.catalog import LOCAL, PROVIDERS  # noqa: E402
from workbench.providers.params import GenerateParams  # noqa: E402

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

# Request fields only the local engine understands; remote providers never see them.
LOCAL_ONLY = ("workbench_instance", "workbench_model", "raw_prompt", "min_tokens")
SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "min_tokens")


class LocalMLXHandler(CustomLLM):
    """Answers litellm calls for `workbench_local/<model>` from a LocalMLX in this process."""

    def __init__(self):
        super().__init__()
        self.instances: dict[str, object] = {}

    def _params(self, model: str, messages: list, optional_params: dict) -> tuple[object, GenerateParams]:
        local = self.instances[optional_params["workbench_instance"]]
        raw = optional_params.get("raw_prompt")
        sampling = {k: optional_params[k] for k in SAMPLING if optional_params.get(k) is not None}
        params = GenerateParams(
            model=optional_params["workbench_model"], prompt=raw,
            messages=None if raw is not None else messages, **sampling,
        )
        return local, params

    def completion(self, model, messages, optional_params, **kwargs) -> ModelResponse:
        local, params = self._params(model, messages, optional_params)
        result = local.generate(params)
        response = ModelResponse(
            model=result.model,
            choices=[{"index": 0, "finish_reason": result.finish_reason,
                      "message": {"role": "assistant", "content": result.generated_text}}],
            usage={"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                   "total_tokens": result.prompt_tokens + result.completion_tokens},
        )
        response._hidden_params["workbench"] = asdict(result)
        return response

    def streaming(self, model, messages, optional_params, **kwargs):
        local, params = self._params(model, messages, optional_params)
        prepared, stream = local.start(params)
        try:
            for piece in stream:
                yield {"text": piece, "is_finished": False, "finish_reason": None, "usage": None,
                       "index": 0, "tool_use": None}
        finally:
            stream.cancel()
        result = prepared.result(stream, params.prompt)
        yield {"text": "", "is_finished": True, "finish_reason": result.finish_reason, "index": 0,
               "tool_use": None,
               "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                         "total_tokens": result.prompt_tokens + result.completion_tokens}}

    async def acompletion(self, *args, **kwargs) -> ModelResponse:
        return await asyncio.to_thread(self.completion, *args, **kwargs)


local_handler = LocalMLXHandler()
litellm.custom_provider_map = [
    entry for entry in litellm.custom_provider_map if entry["provider"] != PROVIDERS[LOCAL].litellm_prefix
] + [{"provider": PROVIDERS[LOCAL].litellm_prefix, "custom_handler": local_handler}]
