"""The plan's phase 1: the service answers, documents itself and lists its providers."""

PROVIDERS = ["openai", "anthropic", "together", "ollama", "local_mlx"]


def test_api_responds(api):
    assert api.get("/status").status_code == 200


def test_docs_accessible(api):
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/status", "/health", "/providers", "/generate", "/generate/batch"):
        assert path in paths


def test_providers_listed(api):
    providers = api.get("/providers").json()
    for name in PROVIDERS:
        assert name in providers
    assert providers["local_mlx"]["usable"] is True
    assert providers["openai"]["configured"] is False


def test_basic_health_check(api):
    health = api.get("/health").json()
    assert health["status"] in ("healthy", "degraded")
    assert health["mlx_available"] is True
