"""Every /v1 refusal in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so that the
official openai client raises its typed errors with `.param` and `.code` set: 400 (invalid input,
which OpenAI answers with 400 where the rest of the service says 422), 401, 404 (a model, a path),
405, 409, 413, 429 and 503. The rest of the service keeps FastAPI's shape."""

import openai
import pytest
import requests

from tests.api.conftest import run_service

TOKEN = "wb-openai-errors-5e4d3c"
MAX_BODY = 64 * 1024
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, models_dir):
    with run_service(tmp_path_factory.mktemp("openai-errors"), models_dir, WORKBENCH_API_TOKEN=TOKEN,
                     WORKBENCH_MAX_BODY_BYTES=str(MAX_BODY), WORKBENCH_GENERATION_BATCH="1",
                     WORKBENCH_GENERATION_QUEUE="0") as service:
        yield service


def client(svc, key=TOKEN):
    return openai.OpenAI(base_url=svc.url + "/v1", api_key=key, max_retries=0, timeout=60)


def raised(call, kind):
    with pytest.raises(kind) as caught:
        call()
    error = caught.value
    assert set(error.body) == {"message", "type", "param", "code"}, error.body  # the client's `.body`
    return error


def test_a_wrong_key_is_an_authentication_error(svc):
    error = raised(lambda: client(svc, key="wrong").models.list(), openai.AuthenticationError)
    assert error.code == "invalid_api_key" and "bearer token" in error.message
    assert TOKEN not in str(error.body)


def test_an_unknown_model_is_not_found_naming_model(svc):
    error = raised(lambda: client(svc).models.retrieve("nobody/none"), openai.NotFoundError)
    assert (error.param, error.code) == ("model", "model_not_found")


def test_an_unknown_path_and_a_wrong_method_answer_in_openai_s_shape(svc):
    error = raised(lambda: client(svc).get("/no/such/thing", cast_to=object), openai.NotFoundError)
    assert error.code == "not_found" and "/v1/no/such/thing" in error.message
    error = raised(lambda: client(svc).delete("/chat/completions", cast_to=object), openai.APIStatusError)
    assert (error.status_code, error.code) == (405, "method_not_allowed") and "POST" in error.message


@pytest.mark.parametrize("extra, param, code", [
    ({"temperature": 5}, "temperature", "invalid_value"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages.0.role", "invalid_value"),
    ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
])
def test_invalid_input_is_a_bad_request_naming_the_field(svc, extra, param, code):
    body = {"model": "tiny", "messages": HI, "max_tokens": 2} | extra
    error = raised(lambda: client(svc).chat.completions.create(**body), openai.BadRequestError)
    assert (error.status_code, error.param, error.code) == (400, param, code)


def test_an_unknown_model_is_openai_s_model_not_found(svc):
    body = {"model": "nobody/none", "messages": HI, "max_tokens": 2}
    error = raised(lambda: client(svc).chat.completions.create(**body), openai.NotFoundError)
    assert (error.status_code, error.param, error.code) == (404, "model", "model_not_found")
    assert "nobody/none" in error.message
    # Elsewhere it stays the 400 naming the field.
    refused = svc.post("/generate", json={"model": "nobody/none", "prompt": "Hi"})
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["body", "model"]


def test_a_missing_field_is_a_bad_request_naming_it(svc):
    response = svc.post("/v1/completions", json={"model": "tiny"})
    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "prompt", "code": "missing_required_parameter"}
    # Elsewhere, FastAPI's shape and status stay as they were.
    assert svc.post("/generate", json={"prompt": 5}).json()["detail"][0]["loc"] == ["body", "prompt"]


def test_a_provider_error_names_model_the_field_the_client_sent(svc):
    unconfigured = raised(lambda: client(svc).chat.completions.create(model="together", messages=HI),
                          openai.BadRequestError)
    assert unconfigured.param == "model" and "together" in unconfigured.message
    svc.post("/providers/configure", json={"provider": "openai", "api_key": "sk-unused",
                                           "api_base": "http://127.0.0.1:9/v1", "timeout": 2})
    try:
        failed = raised(lambda: client(svc).chat.completions.create(model="openai", messages=HI),
                        openai.InternalServerError)
        assert (failed.status_code, failed.param, failed.code) == (503, "model", "service_unavailable")
    finally:
        svc.delete("/providers/openai")


def test_a_body_over_the_limit_is_413(svc):
    error = raised(lambda: client(svc).completions.create(model="tiny", prompt="x" * MAX_BODY),
                   openai.APIStatusError)
    assert (error.status_code, error.code) == (413, "request_too_large")


def test_a_full_model_is_a_rate_limit_error(svc):
    """One request generates (batch of 1, no queue); the next is told to retry."""
    busy = client(svc).completions.create(model="tiny", prompt="assistant\n", max_tokens=2000,
                                          temperature=1.0, stream=True)
    try:
        error = raised(lambda: client(svc).completions.create(model="tiny", prompt="Hi", max_tokens=2),
                       openai.RateLimitError)
    finally:
        busy.close()
    assert (error.param, error.code) == ("model", "rate_limit_exceeded")
    assert int(error.response.headers["Retry-After"]) >= 1


def test_a_conflict_is_409_in_openai_s_shape(svc):
    svc.post("/providers/fallback", json={"order": ["openai"]})
    try:
        error = raised(lambda: client(svc).chat.completions.create(model="auto", messages=HI),
                       openai.ConflictError)
    finally:
        svc.post("/providers/fallback", json={"order": None})
    assert (error.param, error.code) == ("model", "conflict")


def test_outside_v1_fastapi_s_shape_stays(svc):
    response = requests.get(svc.url + "/no/such/thing", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 404 and response.json()["detail"][0]["msg"] == "Not Found"
