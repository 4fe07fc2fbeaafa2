"""Keys in awkward forms through every error path, then a search of everything the service wrote.

Each planted key holds something that text escapes (a newline, quotes, a backslash, non-ASCII, a
percent sign). It is configured for a remote provider whose fake server fails in each way a real
one does (401 echoing the key, 500, garbage, a refused connection), and driven through configure,
/generate (whole and streamed), /v1, fallback, the 503 when every provider fails, 422s, and a
training job whose judge is that provider. Then every response, the service log, the database
(and its WAL), the run folders and the home's other files are searched for the key in each form
it can take in text. The service's home is a small filesystem of its own (where the test can mount
one), so a full disk is tried too: /providers/configure answers 507 and changes nothing.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import requests

from tests.api.conftest import run_service
from tests.fakes.llm_servers import FakeLLMServer, refused_port

KEYS = {
    "newline": "sk-new\nline-0123456789abcdef",
    "quotes": "sk-quo\"te'd-0123456789abcdef",
    "backslash": "sk-back\\slash\\n-0123456789abcdef",
    "unicode": "sk-uni\u00e9\u4e2d\U0001f511-0123456789abcdef",
    "percent": "sk-per%41cent+plus &amp;=0123456789abcdef",
}
FAILURES = ["401", "500", "garbage", "refused"]
PROTOCOL = {"openai": "openai", "anthropic": "anthropic"}


def _mount_small_home(path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(path)],
                          capture_output=True, timeout=10)
    return done.returncode == 0


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("secrets") / f"home-{uuid.uuid4().hex[:6]}"
    mounted = _mount_small_home(home)
    yield home, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(home)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def svc(small_home, models_dir):
    home, _ = small_home
    with run_service(home, models_dir) as service:
        service.post("/generate", json={"prompt": "warm up", "max_tokens": 2})
        yield service


class Seen:
    """Every response body and header the test received."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, response: requests.Response) -> requests.Response:
        self.texts.append(response.text)
        self.texts.append(json.dumps(dict(response.headers)))
        return response


def forms_of(key: str) -> set[str]:
    """The key as text can hold it; written here, apart from the redactor's own list, to check it."""
    once = [json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]]
    return {key, key[:-3], *once, *(json.dumps(f)[1:-1] for f in once), repr(key)[1:-1],
            repr(key + "'\"")[1:-4], key.encode("unicode_escape").decode(), str(key.encode())[2:-1],
            quote(key, safe=""), quote(key), quote_plus(key), html.escape(key)}


def leaks(text: str | bytes, key: str) -> list[str]:
    forms = forms_of(key)  # key[:-3] too: the mask shows the last 3 characters, never more
    if isinstance(text, bytes):
        return [form for form in forms if form.encode() in text or form.encode("utf-16-le") in text]
    return [form for form in forms if form in text]


def configure(svc, seen, provider, key, server=None, failure="401"):
    api_base = refused_port("/v1" if provider == "openai" else "") if failure == "refused" else server.api_base
    body = {"provider": provider, "api_key": key, "model": "fake-model", "api_base": api_base}
    response = seen(svc.post("/providers/configure", json=body))
    assert response.status_code == 200, response.text
    return response.json()


def drive_every_error_path(svc, seen, provider, key, failure):
    with FakeLLMServer(PROTOCOL[provider], behaviour="ok" if failure == "refused" else failure) as server:
        shown = configure(svc, seen, provider, key, server, failure)
        assert shown["api_key"] in ("***", "...def")
        seen(svc.post("/providers/fallback", json={"order": None}))
        answer = seen(svc.post("/generate", json={"prompt": "Hi", "max_tokens": 2}))
        assert answer.status_code == 200 and answer.json()["provider_used"] == "local_mlx", answer.text
        assert answer.json()["attempts"][0]["outcome"] == "failed"

        configure(svc, seen, provider, key, server, failure)  # a fresh configuration is not cooling down
        seen(svc.post("/generate", json={"prompt": "Hi", "provider": provider, "stream": True}))
        configure(svc, seen, provider, key, server, failure)
        seen(svc.post("/v1/chat/completions", json={"model": provider, "max_tokens": 2,
                                                     "messages": [{"role": "user", "content": "Hi"}]}))
        configure(svc, seen, provider, key, server, failure)
        seen(svc.post("/v1/completions", json={"model": provider, "prompt": "Hi", "max_tokens": 2,
                                                "stream": True}))
        configure(svc, seen, provider, key, server, failure)
        seen(svc.post("/providers/fallback", json={"order": [provider]}))
        every_one_failed = seen(svc.post("/generate", json={"prompt": "Hi", "max_tokens": 2}))
        assert every_one_failed.status_code == 503, every_one_failed.text
        seen(svc.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]}))
        seen(svc.get("/providers"))
        seen(svc.get("/status"))
        seen(svc.post("/providers/fallback", json={"order": None}))
        if failure != "refused" and key.isascii() and "\n" not in key:  # else no HTTP client sends it
            assert server.requests, "the provider was never called"
    # The error handlers: bad input that carries the key.
    seen(svc.post("/providers/configure", json={"provider": provider, "api_key": key, "timeout": "soon"}))
    seen(svc.post("/providers/configure", json={"provider": provider, "api_key": [key]}))
    seen(svc.post("/providers/configure", data=json.dumps({"provider": provider, "api_key": key})[:-3],
                  headers={"Content-Type": "application/json"}))
    seen(svc.post("/providers/configure", data=json.dumps({"provider": provider, "api_key": key}),
                  headers={"Content-Type": "text/plain"}))
    seen(svc.post("/v1/chat/completions", json={"model": key, "messages": []}))


def test_a_key_in_awkward_forms_leaks_nowhere(svc, models_dir):
    seen = Seen()
    for n, key in enumerate(KEYS.values()):
        provider = ("openai", "anthropic")[n % 2]
        for failure in FAILURES:
            drive_every_error_path(svc, seen, provider, key, failure)

    # The judge path: a training job whose evaluation provider is a remote one that answers 401.
    key = KEYS["quotes"]
    with FakeLLMServer("openai", behaviour="401") as server:
        configure(svc, seen, "openai", key, server)
        body = {"experiment_name": "judged_secretly", "training_type": "lora", "dataset": "alpaca",
                "model_name": "mlx-community/Qwen3-1.7B-8bit", "max_steps": 2, "batch_size": 2,
                "eval_provider": "openai", "eval_prompts": 1}
        assert seen(svc.post("/train/start", json=body)).status_code == 200
        deadline = time.monotonic() + 240
        while seen(svc.get("/train/judged_secretly/status")).json()["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert server.requests, "the judge never called the provider"
    seen(svc.get("/train/judged_secretly/events"))
    seen(svc.get("/train/jobs"))

    found = {}
    written = [p for p in svc.home.rglob("*") if p.is_file() and p.name != "providers.json"]
    assert any(p.name == "workbench.db" for p in written) and any(p.name == "worker.log" for p in written)
    for name, key in KEYS.items():
        for i, text in enumerate(seen.texts):
            if hits := leaks(text, key):
                found[(name, f"response {i}")] = (hits, text[:300])
        for path in written:
            if hits := leaks(path.read_bytes(), key):
                found[(name, str(path.relative_to(svc.home)))] = hits
    assert not found, found
    assert stat.S_IMODE(os.stat(svc.home / "providers.json").st_mode) == 0o600
    stored = json.loads((svc.home / "providers.json").read_text())["providers"]
    assert stored["openai"]["api_key"] == KEYS["quotes"]  # kept exactly, to be sent exactly


def test_a_full_disk_leaves_the_provider_as_it_was_and_answers_507(svc, small_home):
    home, mounted = small_home
    if not mounted:
        pytest.skip("needs a small filesystem of its own (root and mount)")
    good = {"provider": "ollama", "api_base": "http://127.0.0.1:11"}
    assert svc.post("/providers/configure", json=good).status_code == 200
    before = (home / "providers.json").read_bytes()
    filler = home / "filler"
    try:
        with open(filler, "wb", buffering=0) as out:  # fill the filesystem to its last byte
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        out.write(b"\0" * size)
                except OSError:
                    pass
        response = svc.post("/providers/configure", json=good | {"api_base": "http://127.0.0.1:12"})
        assert response.status_code == 507, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == ["storage", "providers.json"] and "No space left" in error["msg"]
        assert (home / "providers.json").read_bytes() == before  # whole, and the old one
        assert svc.get("/providers").json()["ollama"]["api_base"] == "http://127.0.0.1:11"
        assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]
    finally:
        filler.unlink(missing_ok=True)
    again = svc.post("/providers/configure", json=good | {"api_base": "http://127.0.0.1:12"})
    assert again.status_code == 200 and again.json()["api_base"] == "http://127.0.0.1:12"
