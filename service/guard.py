"""What keeps other machines and other web pages from acting on the service.

A browser lets any page send a "simple" request (a form, or `fetch` with `text/plain`) to
127.0.0.1 without asking first, and a DNS name rebound to 127.0.0.1 turns a page into a
same-origin caller. So, before any route runs:

- with no API token, only clients on this machine are served, however the server was started
  (`uvicorn service.main:app --host 0.0.0.0` never passes through `python -m service`'s check);
- the `Host` header must name the address the request arrived at, localhost, a loopback address,
  or a name in WORKBENCH_ALLOWED_HOSTS (DNS rebinding);
- a request that changes something and comes from a web page (it carries `Origin`) must come
  from the service's own pages or a WORKBENCH_CORS_ORIGINS origin;
- a request body must be JSON (415 otherwise): a page can send `text/plain` cross-origin
  without a preflight, never `application/json`.

A pure ASGI middleware, so streamed answers pass through untouched.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from service.errors import is_openai, openai_code
from workbench.settings import Settings

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(address: str | None) -> bool:
    if not address:  # a Unix socket: only this machine can reach it
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def host_name(host: str) -> str:
    """`example.com:8200` -> `example.com`; `[::1]:8200` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]")[0]
    if host.count(":") == 1:
        return host.split(":")[0]
    return host


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestGuard:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.allowed_hosts = {h.lower().strip("[]") for h in settings.allowed_hosts}
        if settings.host not in ("0.0.0.0", "::"):  # WORKBENCH_HOST may be a name: it is ours
            self.allowed_hosts.add(settings.host.lower().strip("[]"))
        self.cors_origins = {o.rstrip("/").lower() for o in settings.cors_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, field, message = refusal
        await _refuse(scope, send, status, field, message)

    def refusal(self, scope) -> tuple[int, str, str] | None:
        """(status, header or field, reason) when the request must not reach a route."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = (scope.get("client") or (None,))[0]
        if not self.settings.requires_token() and not is_loopback(client):
            return (403, "client", f"{client} is not on this machine, and the service has no "
                    "WORKBENCH_API_TOKEN: set one to serve other machines")
        host = host_name(headers.get("host", ""))
        if not self._host_allowed(host, scope):
            return (421, "host", f"Host {host[:100]!r} is not an address of this service: add it to "
                    "WORKBENCH_ALLOWED_HOSTS to serve it under that name")
        if scope["method"] in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            return (403, "origin", f"requests from web pages at {origin[:100]} are not accepted: "
                    "add the origin to WORKBENCH_CORS_ORIGINS to allow them")
        length = headers.get("content-length", "0").strip()
        has_body = length not in ("", "0") or "transfer-encoding" in headers
        content_type = headers.get("content-type", "")
        if has_body and not is_json(content_type):
            return (415, "content-type", f"the body must be JSON, sent as 'Content-Type: application/json' "
                    f"(got {content_type[:100] or 'none'!r})")
        return None

    def _host_allowed(self, host: str, scope) -> bool:
        if "*" in self.allowed_hosts or host in _LOCAL_NAMES or host in self.allowed_hosts:
            return True
        bound = (scope.get("server") or (None,))[0]
        if bound and host == bound.lower().strip("[]"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.rstrip("/").lower()
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        # The service's own pages (/docs) post to the host they were loaded from.
        return urlsplit(origin).netloc == host_header.strip().lower() != ""


async def _refuse(scope, send, status: int, field: str, message: str) -> None:
    """The service's error shapes: OpenAI's under /v1, FastAPI's elsewhere."""
    if is_openai(scope["path"]):
        body = {"error": {"message": message, "type": "invalid_request_error", "param": field,
                          "code": openai_code(status, None, field)}}
    else:
        loc = ["client"] if field == "client" else ["header", field]
        body = {"detail": [{"loc": loc, "msg": message, "type": "refused"}]}
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
