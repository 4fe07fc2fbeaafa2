"""The service over real HTTP: uvicorn in a subprocess on a free port, with a temporary home."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ALIASES = {"mlx-community/Qwen3-1.7B-8bit": "tiny"}


@dataclass
class Service:
    url: str
    log: Path
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

    def log_text(self) -> str:
        return self.log.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def run_service(home: Path, models_dir: str, **env_extra: str):
    port = _free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "service.log"
    env = os.environ | {
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_MODELS_PATH": models_dir,
        "WORKBENCH_HUB_DOWNLOADS": "false",
        "WORKBENCH_MODEL_ALIASES": json.dumps(ALIASES),
        "HF_HUB_OFFLINE": "1",
    } | env_extra
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"service did not answer within 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Service(url, log, env_extra.get("WORKBENCH_API_TOKEN"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def api(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("service-home"), models_dir) as service:
        yield service
