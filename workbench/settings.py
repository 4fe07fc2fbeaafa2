"""The one settings object: every knob the workbench reads, from WORKBENCH_* environment variables."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# A token short enough to guess over the network protects nothing.
MIN_TOKEN_LENGTH = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    home: Path = Field(
        default=Path("~/.workbench"),
        description="Folder holding everything persistent: workbench.db, models/, datasets/, runs/.",
    )
    models_path: Path | None = Field(
        default=None,
        description="Where built and registered models live; default <home>/models. "
        "Point several homes at one folder to build once.",
    )
    host: str = Field(default="127.0.0.1", description="Address `python -m service` binds to.")
    port: int = Field(default=8200, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None,
        description="When set, every endpoint but /health needs `Authorization: Bearer <token>`.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the service answers besides its bound address, localhost, 127.0.0.1 "
        "and [::1] (a defence against DNS rebinding): comma-separated or a JSON list; '*' allows any.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (https://app.example:8443) whose pages may call the service "
        "(CORS), comma-separated or a JSON list; none by default, '*' for any.",
    )
    default_model: str = Field(
        default="tiny",
        description="Model used when a request names none. `tiny` is built locally on first use.",
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Names mapped to a registered name or a folder, as JSON: {"org/Model": "tiny"}.',
    )
    hub_downloads: bool = Field(
        default=True,
        description="Look names up on the Hugging Face hub when nothing local matches "
        "(off when HF_HUB_OFFLINE=1).",
    )
    hub_timeout_s: float = Field(default=5.0, gt=0, description="Limit on one hub lookup.")
    max_tokens_limit: int = Field(
        default=2048, ge=1, description="Largest max_tokens a request gets; more is capped."
    )
    loaded_models: int = Field(
        default=2, ge=1, description="How many local models stay loaded for generation at once."
    )
    prompt_cache_size: int = Field(
        default=10,
        ge=0,
        description="KV caches of past requests kept per loaded model, so a request that repeats "
        "a prefix (the history of a chat) skips processing it again; 0 turns prompt caching off.",
    )
    fallback_order: list[str] | None = Field(
        default=None,
        description='Provider order for requests that name none, as JSON: ["openai", "local_mlx"]. '
        "Default: configured remote providers in the order configured, then local_mlx.",
    )
    provider_cooldown_s: float = Field(
        default=30.0, ge=0, description="How long a provider that failed is skipped."
    )
    job_concurrency: int = Field(
        default=1, ge=1, description="Training jobs that run at once; more wait queued."
    )
    dataset_roots: list[Path] = Field(
        default_factory=list,
        description="Folders besides <home>/datasets that dataset_path may point into (JSON list).",
    )
    task_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders of lm-eval task YAML files besides <home>/tasks, usable by their `task:` "
        "name: separated by the system's path separator (':' on Linux and macOS) or a JSON list.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024,
        description="Largest request body accepted; a larger one is refused with 413 as it arrives.",
    )
    generation_queue: int = Field(
        default=64, ge=0,
        description="Requests that may wait per loaded model beyond the batch it is generating; "
        "more are refused with 429 and Retry-After.",
    )
    generation_batch: int = Field(
        default=32, ge=1, description="Requests a loaded model generates for at once (one batch)."
    )
    log_level: str = "INFO"

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _list_of_names(cls, value: object) -> object:
        """As `mlx_lm.server --allowed-origins` takes them: a list, or one string of names."""
        return _listed(value, lambda text: text.replace(",", " ").split())

    @field_validator("task_roots", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        """As PATH is written (os.pathsep between folders), or a JSON list (what `as_env` writes)."""
        return _listed(value, lambda text: text.split(os.pathsep))

    @cached_property
    def home_dir(self) -> Path:
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only, even when it existed: the database holds worker logs and judge answers,
        # providers.json holds keys, and runs/ hold what the models learnt.
        if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(0o700)
        return path

    @property
    def models_dir(self) -> Path:
        return self.models_path.expanduser().resolve() if self.models_path else self.home_dir / "models"

    def as_env(self) -> dict[str, str]:
        """These settings as WORKBENCH_* variables, for a child process (a training worker)."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None or name == "api_token":  # a worker needs no token: keep secrets in one place
                continue
            if name == "home":
                value = str(self.home_dir)
            env[f"WORKBENCH_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def requires_token(self) -> bool:
        return self.api_token is not None and bool(self.api_token.get_secret_value())

    def check_token(self) -> None:
        """Refuse a token too short to resist guessing; an empty one means no token."""
        if self.requires_token() and len(self.api_token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"WORKBENCH_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: use a long random "
                "one, such as the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )

    def check_bind(self) -> None:
        """Refuse to listen beyond this machine without a token."""
        if self.host not in LOOPBACK_HOSTS and not self.requires_token():
            raise ValueError(
                f"WORKBENCH_HOST={self.host} exposes the service beyond this machine: "
                "set WORKBENCH_API_TOKEN as well."
            )


def _listed(value: object, split) -> object:
    """A setting's list from the environment's one string: a JSON list, or `split` into parts."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text.startswith("[") else [part for part in split(text) if part]
    return value
