import json
import subprocess
import sys

import pytest

PROBE = "import workbench, json; from workbench.system import health; print(json.dumps(health()))"


def run_probe(**env):
    import os

    done = subprocess.run([sys.executable, "-c", PROBE], env=os.environ | env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS swap is a Linux matter; macOS uses Accelerate")
def test_openblas_is_loaded_under_mlx():
    health, _ = run_probe()
    assert health["blas"]["library"] == "openblas"
    assert health["status"] == "healthy", health["problems"]


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS swap is a Linux matter; macOS uses Accelerate")
def test_without_openblas_it_warns_once_and_reports_degraded():
    health, stderr = run_probe(WORKBENCH_BLAS_PATH="/nonexistent/libopenblas.so.0")
    assert health["blas"]["library"] == "reference"
    assert health["status"] == "degraded"
    assert any("reference BLAS" in p for p in health["problems"])
    assert stderr.count("reference BLAS") == 1
