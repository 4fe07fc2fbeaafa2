"""The request guard on a small app of its own: who may call, under which Host, with which body."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from service.guard import RequestGuard, host_name, is_loopback
from workbench.settings import Settings

TOKEN = "a-long-enough-token-0123"


def guarded_app(**settings) -> FastAPI:
    app = FastAPI()

    @app.get("/thing")
    def read() -> dict:
        return {"ok": True}

    @app.post("/thing/stop")
    def act() -> dict:
        return {"acted": True}

    @app.post("/v1/thing")
    def act_v1() -> dict:
        return {"acted": True}

    app.add_middleware(RequestGuard, settings=Settings(**settings))
    return app


def call(app, method, path, client="127.0.0.1", **kw):
    async def go():
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8200") as http:
            request = http.build_request(method, path, **kw)
            return await http.send(request)

    return asyncio.run(go())


@pytest.mark.parametrize("client", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_this_machine_is_served_without_a_token(client):
    assert call(guarded_app(), "GET", "/thing", client=client).status_code == 200


@pytest.mark.parametrize("client", ["10.1.2.3", "192.168.0.7", "fe80::1", "::ffff:10.0.0.1", "testclient"])
def test_other_machines_are_refused_without_a_token(client):
    response = call(guarded_app(), "GET", "/thing", client=client)
    assert response.status_code == 403
    assert response.json()["detail"][0]["loc"] == ["client"]
    assert "WORKBENCH_API_TOKEN" in response.json()["detail"][0]["msg"]


def test_other_machines_are_served_with_a_token():
    # The guard lets them through; the token itself is checked by each route (service.deps).
    assert call(guarded_app(api_token=TOKEN), "GET", "/thing", client="10.1.2.3").status_code == 200


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:8200", True), ("localhost:8200", True), ("LOCALHOST", True), ("[::1]:8200", True),
    ("127.0.0.2", True), ("attacker.example:8200", False), ("127.0.0.1.attacker.example", False),
    ("workbench.lan:8200", False),
])
def test_only_known_host_names_are_served(host, allowed):
    response = call(guarded_app(), "GET", "/thing", headers={"Host": host})
    assert response.status_code == (200 if allowed else 421), response.text
    if not allowed:
        assert "WORKBENCH_ALLOWED_HOSTS" in response.json()["detail"][0]["msg"]


def test_a_listed_host_name_is_served():
    app = guarded_app(allowed_hosts="workbench.lan, other.lan")
    assert call(app, "GET", "/thing", headers={"Host": "workbench.lan:8200"}).status_code == 200
    assert call(app, "GET", "/thing", headers={"Host": "third.lan"}).status_code == 421
    named = guarded_app(host="myhost.lan", api_token=TOKEN)  # the name WORKBENCH_HOST binds to
    assert call(named, "GET", "/thing", headers={"Host": "myhost.lan:8200"}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_a_body_that_is_not_json_is_refused(content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = call(guarded_app(), "POST", "/thing/stop", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert response.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_json_bodies_and_empty_posts_pass():
    app = guarded_app()
    assert call(app, "POST", "/thing/stop", json={"a": 1}).status_code == 200
    assert call(app, "POST", "/thing/stop", content=b'{}',
                headers={"Content-Type": "application/vnd.api+json; charset=utf-8"}).status_code == 200
    assert call(app, "POST", "/thing/stop").status_code == 200


def test_under_v1_the_refusal_has_openai_s_shape():
    response = call(guarded_app(), "POST", "/v1/thing", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["param"] == "content-type"


def test_a_web_page_elsewhere_cannot_act_even_with_an_empty_body():
    app = guarded_app()
    other = {"Origin": "https://evil.example"}
    assert call(app, "POST", "/thing/stop", headers=other).status_code == 403
    assert call(app, "POST", "/thing/stop", headers={"Origin": "null"}).status_code == 403
    assert call(app, "GET", "/thing", headers=other).status_code == 200  # reading: CORS hides the answer
    # The service's own pages (/docs) and listed origins may.
    same = {"Origin": "http://127.0.0.1:8200", "Host": "127.0.0.1:8200"}
    assert call(app, "POST", "/thing/stop", headers=same).status_code == 200
    listed = guarded_app(cors_origins='["https://app.example"]')
    assert call(listed, "POST", "/thing/stop", headers={"Origin": "https://app.example"}).status_code == 200


def test_helpers():
    assert host_name("[::1]:8200") == "::1" and host_name("Example.com:80") == "example.com"
    assert is_loopback(None) and is_loopback("127.0.0.1") and not is_loopback("10.0.0.1")


def test_a_short_token_is_refused_at_start():
    with pytest.raises(ValueError, match="16 characters"):
        Settings(api_token="short-token").check_token()
    Settings(api_token=TOKEN).check_token()
    Settings(api_token="").check_token()  # empty: no token at all
