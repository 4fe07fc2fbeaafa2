"""The providers the workbench knows, and what each needs before it can answer."""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "local_mlx"


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    kind: str  # "remote" (an API reached through litellm) or "local" (this process)
    litellm_prefix: str | None  # litellm's provider prefix: "<prefix>/<model>"; None: not through litellm
    needs_key: bool
    default_model: str | None
    default_api_base: str | None = None


PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo("openai", "remote", "openai", True, "gpt-4o-mini"),
        ProviderInfo("anthropic", "remote", "anthropic", True, "claude-3-5-haiku-latest"),
        ProviderInfo("together", "remote", "together_ai", True, "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        # Ollama's /api/chat; it runs locally and needs no key.
        ProviderInfo("ollama", "remote", "ollama_chat", False, "llama3.2", "http://127.0.0.1:11434"),
        # In this process, called directly (see router.py).
        ProviderInfo(LOCAL, "local", None, False, None),
    )
}
