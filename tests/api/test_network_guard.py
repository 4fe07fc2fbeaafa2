"""Another machine, for real: the service in a network namespace of its own, started the way the
README allows (`uvicorn service.main:app --host 0.0.0.0`, which skips `python -m service`'s check),
and a client in a second namespace joined to it by a veth pair. Both namespaces, and their 10.x
addresses, exist only during the test: no traffic leaves this machine. Needs root and `ip netns`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest

from service.launch import ROOT, free_port
from tests.api.conftest import ALIASES

TOKEN = "netns-token-0123456789abcdef"
SERVER_IP, CLIENT_IP = "10.213.77.1", "10.213.77.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _netns_works() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        return False
    probe = f"wbprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _netns_works(), reason="needs root and network namespaces")


@pytest.fixture(scope="module")
def namespaces():
    tag = uuid.uuid4().hex[:6]
    server, client = f"wbsrv{tag}", f"wbcli{tag}"
    try:
        for ns in (server, client):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # Made inside the server namespace, one end moved to the client's: nothing in the host's.
        _ip("-n", server, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", client)
        _ip("-n", server, "addr", "add", f"{SERVER_IP}/30", "dev", "veth0")
        _ip("-n", client, "addr", "add", f"{CLIENT_IP}/30", "dev", "veth1")
        _ip("-n", server, "link", "set", "veth0", "up")
        _ip("-n", client, "link", "set", "veth1", "up")
        yield server, client
    finally:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def curl(ns: str, url: str, *args: str) -> tuple[int, str]:
    done = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "10", "-w", "\n%{http_code}", *args, url],
                          capture_output=True, text=True, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


@contextmanager
def service_in(ns: str, home, models_dir: str, **extra: str):
    port = free_port()
    env = os.environ | {"WORKBENCH_HOME": str(home), "WORKBENCH_MODELS_PATH": models_dir,
                        "WORKBENCH_HUB_DOWNLOADS": "false", "WORKBENCH_MODEL_ALIASES": json.dumps(ALIASES),
                        "HF_HUB_OFFLINE": "1"} | extra
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "service.log", "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "uvicorn", "service.main:app",
                                 "--host", "0.0.0.0", "--port", str(port)],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while curl(ns, f"http://127.0.0.1:{port}/health")[0] != 200:
            assert proc.poll() is None, (home / "service.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not answer in its namespace"
            time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_without_a_token_another_machine_is_refused_however_the_service_started(
        namespaces, tmp_path, models_dir):
    server, client = namespaces
    with service_in(server, tmp_path / "home", models_dir) as port:
        base = f"http://{SERVER_IP}:{port}"
        for path, args in [("/health", ()), ("/status", ()),
                           ("/train/anything/stop", ("-X", "POST"))]:
            code, body = curl(client, base + path, *args)
            assert code == 403, (path, body)
            assert "WORKBENCH_API_TOKEN" in json.loads(body)["detail"][0]["msg"]
        # This machine still is served.
        assert curl(server, f"http://127.0.0.1:{port}/status")[0] == 200


def test_with_a_token_another_machine_is_served_under_the_bound_address_only(
        namespaces, tmp_path, models_dir):
    server, client = namespaces
    with service_in(server, tmp_path / "home", models_dir, WORKBENCH_API_TOKEN=TOKEN) as port:
        base = f"http://{SERVER_IP}:{port}"
        auth = ("-H", f"Authorization: Bearer {TOKEN}")
        assert curl(client, base + "/status", *auth)[0] == 200
        assert curl(client, base + "/status")[0] == 401
        # A name rebound to this address (DNS rebinding) is not one of the service's names.
        code, body = curl(client, base + "/status", *auth, "-H", "Host: rebound.example")
        assert code == 421 and "WORKBENCH_ALLOWED_HOSTS" in body
