import json
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, json, workbench; from workbench.system import health; "
         "print(json.dumps({**health(), 'env': os.environ.get('OPENBLAS_CORETYPE')}))")


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


x86_linux = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                               reason="OpenBLAS's x86-64 core names")


@x86_linux
def test_openblas_picks_kernels_for_this_cpu_and_leaves_the_inherited_variable_alone():
    # An old core pinned for every program (the project's machines pin Haswell) would halve MLX's matmuls.
    health, _ = run_probe(OPENBLAS_CORETYPE="Prescott")
    assert "Prescott" not in health["blas"]["detail"]
    assert health["blas"]["coretype"] == "auto"
    assert health["env"] == "Prescott"  # other libraries and child processes still see it


@x86_linux
def test_a_core_can_be_forced_or_inherited():
    forced, _ = run_probe(WORKBENCH_BLAS_CORETYPE="Prescott")
    assert "Prescott" in forced["blas"]["detail"]
    inherited, _ = run_probe(WORKBENCH_BLAS_CORETYPE="inherit", OPENBLAS_CORETYPE="Prescott")
    assert "Prescott" in inherited["blas"]["detail"]
