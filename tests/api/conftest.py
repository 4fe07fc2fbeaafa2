"""The service over real HTTP: uvicorn in a subprocess on a free port, with a temporary home."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from service.launch import service_process
from workbench.client import Client
from workbench.training import record
from workbench.training.config import TrainingConfig

ALIASES = {"mlx-community/Qwen3-1.7B-8bit": "tiny"}
MODEL = "mlx-community/Qwen3-1.7B-8bit"  # mapped to the tiny local model by the test settings
TERMINAL = set(record.TERMINAL)


@dataclass
class Service:
    url: str
    log: Path
    home: Path
    token: str | None = None

    def _headers(self, headers):
        headers = dict(headers or {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return headers

    def get(self, path, headers=None, **kw):
        return requests.get(self.url + path, headers=self._headers(headers), timeout=120, **kw)

    def post(self, path, json=None, headers=None, **kw):
        return requests.post(self.url + path, json=json, headers=self._headers(headers), timeout=120, **kw)

    def delete(self, path, headers=None, **kw):
        return requests.delete(self.url + path, headers=self._headers(headers), timeout=120, **kw)

    def log_text(self) -> str:
        return self.log.read_text()

    def client(self) -> Client:
        """The library's client of this service (what notebooks and programs use)."""
        return Client(self.url, self.token)


@contextmanager
def run_service(home: Path, models_dir: str, **env_extra: str):
    home.mkdir(parents=True, exist_ok=True)
    log = home / "service.log"
    env = {
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_MODELS_PATH": models_dir,
        "WORKBENCH_HUB_DOWNLOADS": "false",
        "WORKBENCH_MODEL_ALIASES": json.dumps(ALIASES),
        "HF_HUB_OFFLINE": "1",
    } | env_extra
    with service_process(env, log) as url:
        yield Service(url, log, home, env_extra.get("WORKBENCH_API_TOKEN"))


@pytest.fixture(scope="session")
def api(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("service-home"), models_dir) as service:
        yield service


# Training jobs over HTTP -------------------------------------------------------------------------

def start(svc, **config):
    """A small LoRA job on the tiny model, `config` overriding, started through the client; its answer
    as JSON."""
    body = {"model_name": MODEL, "training_type": "lora", "dataset": "alpaca", "batch_size": 2} | config
    with svc.client() as client:
        return client.start_training(TrainingConfig(**body)).model_dump(mode="json")


def wait_for(svc, name, until=TERMINAL, timeout=180, step_at_least=None):
    """The job's status (as JSON) once it is in `until` (and past `step_at_least`); fails if it ends
    otherwise."""
    with svc.client() as client:
        return _wait_for(client, name, until, timeout, step_at_least)


def _wait_for(client: Client, name, until, timeout, step_at_least):
    deadline = time.monotonic() + timeout
    while True:
        status = client.job_status(name).model_dump(mode="json")
        if status["status"] in until and (step_at_least is None or status["current_step"] >= step_at_least):
            return status
        if status["status"] in TERMINAL - set(until):
            raise AssertionError(f"{name} ended {status['status']}: {status['error']}")
        assert time.monotonic() < deadline, f"{name} still {status['status']} at step {status['current_step']}"
        time.sleep(0.3)
