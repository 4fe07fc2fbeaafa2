"""With WORKBENCH_API_TOKEN set, every endpoint but /health needs the bearer token. Without one,
web pages elsewhere cannot act on the service (the request guard; other machines: test_network_guard)."""

import os
import subprocess
import sys

import pytest
import requests

from service.launch import ROOT
from tests.api.conftest import run_service

TOKEN = "wb-token-9f8e7d6c5b4a"
APP_ORIGIN = "https://notebook.example:8443"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("guarded"), models_dir, WORKBENCH_API_TOKEN=TOKEN,
                     WORKBENCH_CORS_ORIGINS=APP_ORIGIN) as service:
        yield service


def test_health_needs_no_token(guarded):
    assert guarded.get("/health", headers={"Authorization": ""}).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc", TOKEN])
def test_other_endpoints_refuse_without_the_right_token(guarded, authorization):
    headers = {"Authorization": authorization or ""}
    for method, path in [("get", "/status"), ("get", "/providers"), ("post", "/generate")]:
        response = getattr(guarded, method)(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert TOKEN not in response.text


def test_the_right_token_opens_them(guarded):
    assert guarded.get("/status").status_code == 200
    response = guarded.post("/generate", json={"prompt": "Hi", "max_tokens": 3})
    assert response.status_code == 200
    assert TOKEN not in guarded.log_text()


def test_the_published_schema_says_the_token_is_required(guarded):
    security = guarded.get("/openapi.json").json()["paths"]["/status"]["get"]["security"]
    assert security and {} not in security


def test_a_cross_origin_text_plain_post_acts_on_nothing(api):
    # What any web page can send to 127.0.0.1 without asking the browser's permission first.
    body = '{"provider": "ollama", "api_base": "http://127.0.0.1:1"}'
    plain = requests.post(api.url + "/providers/configure", data=body, timeout=30,
                          headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert plain.status_code == 403 and plain.json()["detail"][0]["loc"] == ["header", "origin"]
    no_origin = requests.post(api.url + "/providers/configure", data=body, timeout=30,
                              headers={"Content-Type": "text/plain"})
    assert no_origin.status_code == 415 and no_origin.json()["detail"][0]["loc"] == ["header", "content-type"]
    stop = requests.post(api.url + "/train/anything/stop", timeout=30, headers={"Origin": "null"})
    assert stop.status_code == 403
    assert api.get("/providers").json()["ollama"]["configured"] is False


def test_cors_is_off_by_default(api):
    preflight = requests.options(api.url + "/generate", timeout=30, headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_listed_origins_get_cors(guarded):
    preflight = requests.options(guarded.url + "/generate", timeout=30, headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    answer = guarded.get("/status", headers={"Origin": APP_ORIGIN})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == APP_ORIGIN


def test_a_rebound_host_name_is_refused(api):
    response = api.get("/status", headers={"Host": "rebound.example:8200"})
    assert response.status_code == 421
    assert response.json()["detail"][0]["loc"] == ["header", "host"]


def test_a_short_token_refuses_to_start_with_a_clear_message(tmp_path):
    env = os.environ | {"WORKBENCH_HOME": str(tmp_path), "WORKBENCH_API_TOKEN": "short"}
    done = subprocess.run([sys.executable, "-m", "uvicorn", "service.main:app", "--port", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "refusing to start: WORKBENCH_API_TOKEN is shorter than 16 characters" in done.stderr
    assert "Traceback" not in done.stderr and "short" not in done.stderr.replace("shorter", "")
