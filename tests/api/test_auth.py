"""With WORKBENCH_API_TOKEN set, every endpoint but /health needs the bearer token."""

import pytest

from tests.api.conftest import run_service

TOKEN = "wb-token-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("guarded"), models_dir, WORKBENCH_API_TOKEN=TOKEN) as service:
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
