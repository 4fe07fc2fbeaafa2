"""The providers the workbench knows, and what each needs before it can answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    kind: str  # "remote" (through litellm) or "local"
    needs_key: bool
    default_model: str | None
    default_api_base: str | None = None


PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo("openai", "remote", True, "gpt-4o-mini"),
        ProviderInfo("anthropic", "remote", True, "claude-3-5-haiku-latest"),
        ProviderInfo("together", "remote", True, "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ProviderInfo("ollama", "remote", False, "llama3.2", "http://127.0.0.1:11434"),
        ProviderInfo("local_mlx", "local", False, None),
    )
}
