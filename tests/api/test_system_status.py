"""The plan's phase 2.1: status and health."""

import sys


def test_status_endpoint(api):
    response = api.get("/status")
    assert response.status_code == 200
    data = response.json()
    for key in ("status", "server_info", "training_jobs", "memory_usage"):
        assert key in data
    assert data["server_info"]["mlx"] and data["server_info"]["default_model"] == "tiny"
    assert data["memory_usage"]["process_rss_mb"] > 0


def test_health_check(api):
    response = api.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] in ["healthy", "degraded"]
    assert "mlx_available" in health
    assert "memory_usage" in health
    assert health["memory_usage"]["system_total_mb"] > health["memory_usage"]["system_available_mb"] > 0
    assert health["device"]["mlx_device"] in ("cpu", "gpu")


def test_health_names_the_blas_in_use(api):
    blas = api.get("/health").json()["blas"]
    if sys.platform == "linux":
        # The README's setup installs OpenBLAS; the reference BLAS would make CPU math ~50x slower.
        assert blas["library"] == "openblas", blas
        assert "OpenBLAS" in blas["detail"]
    else:
        assert blas["fast"] is True
