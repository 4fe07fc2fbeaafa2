"""Run the service in a child process on a free port: for tests, benchmarks and notebooks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def service_process(env: dict[str, str], log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """Start uvicorn with `env` added to this process's environment; yield its base URL once
    /health answers; stop it on exit. Output goes to `log_path`, shown in any start-up error."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "service.main:app",
               "--host", "127.0.0.1", "--port", str(port)]
    with http_process(command, port, env, log_path, timeout, "service") as (url, _):
        yield url


@contextmanager
def http_process(command: list[str], port: int, env: dict[str, str], log_path: Path, timeout: float,
                 name: str) -> Iterator[tuple[str, int]]:
    """Run `command` (an HTTP server on `port` with a /health route); yield its URL and pid once
    /health answers; stop it on exit. Also starts the peers that benchmarks measure against."""
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(command, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer within {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]
