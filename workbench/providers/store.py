"""Provider configuration: validated input, and its file under the home folder (mode 0600)."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from workbench.files import make_private, write_private
from workbench.providers.catalog import PROVIDERS
from workbench.providers.params import ProviderName
from workbench.providers.secrets import redactor

DEFAULT_TIMEOUT_S = 4.0  # a failing provider must give way to the next within 5 s


class ProviderConfig(BaseModel):
    """What `POST /providers/configure` takes."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    api_key: SecretStr | None = Field(
        default=None, validate_default=True, description="Needed by openai, anthropic and together."
    )
    model: str | None = Field(default=None, min_length=1, description="The provider's model name.")
    api_base: str | None = Field(
        default=None, description="Where the provider's API lives: http(s)://host[:port][/path]."
    )
    timeout: float = Field(
        default=DEFAULT_TIMEOUT_S, gt=0, le=600,
        description="Seconds one call may take before the next provider is asked.",
    )

    @field_validator("api_key")
    @classmethod
    def _key_where_needed(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        provider = PROVIDERS.get(info.data.get("provider", ""))
        if provider and provider.needs_key and not (value and value.get_secret_value().strip()):
            raise ValueError(f"{provider.name} needs an api_key")
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, such as http://127.0.0.1:11434")
        try:
            parsed.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return value.rstrip("/")


class ProviderStore:
    """`providers.json` under the home folder: configurations (keys included) and fallback order.
    Written atomically with mode 0600, since it holds keys: a write that fails (a full disk) leaves
    the file and this object as they were, and raises StorageError."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.configs: dict[str, dict] = {}
        self.fallback: list[str] | None = None
        if path.exists():
            make_private(path)
            data = json.loads(path.read_text())
            self.configs = data.get("providers", {})
            self.fallback = data.get("fallback")
            for config in self.configs.values():
                redactor.add(config.get("api_key"))

    def configure(self, config: ProviderConfig) -> dict:
        entry = {
            "api_key": config.api_key.get_secret_value() if config.api_key else None,
            "model": config.model or PROVIDERS[config.provider].default_model,
            "api_base": config.api_base or PROVIDERS[config.provider].default_api_base,
            "timeout": config.timeout,
            "configured_at": time.time(),
        }
        redactor.add(entry["api_key"])
        with self._lock:
            configs = self.configs | {config.provider: entry}
            self._save(configs, self.fallback)
            self.configs = configs
        return entry

    def remove(self, provider: str) -> bool:
        with self._lock:
            configs = {k: v for k, v in self.configs.items() if k != provider}
            self._save(configs, self.fallback)
            found, self.configs = len(configs) != len(self.configs), configs
        return found

    def set_fallback(self, order: list[str] | None) -> None:
        with self._lock:
            self._save(self.configs, order)
            self.fallback = copy.copy(order)

    def _save(self, configs: dict, fallback: list[str] | None) -> None:
        """The file first, this object after: a failed write changes nothing anywhere."""
        write_private(self.path, json.dumps({"providers": configs, "fallback": fallback}, indent=2))
