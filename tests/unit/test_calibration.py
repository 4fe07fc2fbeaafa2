"""CPU kernels chosen by measurement: the faster side wins, the decision is kept, a setting overrides it."""

from __future__ import annotations

import mlx.core as mx

import workbench  # noqa: F401  (before mlx)
from workbench.training import calibration, fastmath, losses, policy


def made_slower(kernel, calls: list):
    """`kernel` with a chain of pointless element-wise work on its first input: the same answer, later."""

    def slower(first, *rest, **kw):
        calls.append(1)
        waste = first
        for _ in range(60):
            waste = mx.sin(waste) * 1.0001
        return kernel(first, *rest, **kw) + 1e-30 * waste.sum()

    return slower


def no_attention(queries, keys, values, cache, scale, mask, sinks=None):
    return queries  # no work at all: faster than any attention


def test_calibration_takes_the_faster_side_of_each_kernel(tiny, tmp_path):
    model, _ = tiny
    calls = []
    kernels = {"swiglu": made_slower(fastmath.swiglu, calls), "attention": no_attention,
               "cross_entropy": made_slower(losses.cross_entropy, calls)}
    # 256 positions: attention's scores then outweigh the tiny model's products, so skipping them is
    # faster beyond any noise of a shared machine.
    found = calibration.calibrate(model, batch_size=2, max_seq_length=256, home=tmp_path, cache_limit_mb=None,
                                  repeats=5, kernels=kernels)
    assert found.fast_kernels == ["attention"], found.timings_ms
    block, loss = found.timings_ms["block"], found.timings_ms["loss"]
    assert block["swiglu"] > block["mlx"] > block["attention"]
    assert loss["fast"] > loss["mlx"]
    assert found.shape["batch"] == 2 and found.shape["seq"] == 256 and not found.cached


def test_a_decision_is_kept_for_the_same_machine_and_shape_and_measured_anew_for_another(tiny, tmp_path):
    model, _ = tiny
    calls = []
    kernels = {"swiglu": made_slower(fastmath.swiglu, calls), "attention": fastmath.attention,
               "cross_entropy": losses.cross_entropy}
    first = calibration.calibrate(model, 2, 64, tmp_path, None, kernels=kernels)
    traced = len(calls)
    again = calibration.calibrate(model, 2, 64, tmp_path, None, kernels=kernels)
    assert again.cached and len(calls) == traced  # nothing measured, nothing traced
    assert again.fast_kernels == first.fast_kernels and again.timings_ms == first.timings_ms
    other = calibration.calibrate(model, 2, 128, tmp_path, None, kernels=kernels)
    assert not other.cached and other.key != first.key


def test_the_cache_limit_is_measured_against_mlx_s_default(tiny, tmp_path):
    model, _ = tiny
    found = calibration.calibrate(model, 1, 64, tmp_path, cache_limit_mb=4096)
    assert set(found.timings_ms["cache"]) == {"mlx-default", "memory"}
    faster = min(found.timings_ms["cache"], key=found.timings_ms["cache"].get)
    assert found.cache_limit == faster


def test_a_job_s_settings_force_its_choices_without_measuring(tiny, tmp_path):
    model, _ = tiny
    forced = policy.calibrated(policy.choose(cache_limit_mb=64, fast_kernels="on"), model, 2, 64, tmp_path,
                               fast_kernels="on", cache_limit_mb=64)
    assert forced.fast_kernels == calibration.FAST_KERNELS and forced.cache_limit_mb == 64
    assert forced.calibration is None and not (tmp_path / "cache").exists()
    off = policy.calibrated(policy.choose(fast_kernels="off"), model, 2, 64, tmp_path, fast_kernels="off")
    assert off.fast_kernels == () and off.calibration is not None  # only the cache limit was measured


def test_the_policy_runs_only_what_calibration_measured_faster(tiny, tmp_path):
    model, _ = tiny
    chosen = policy.calibrated(policy.choose(), model, 2, 64, tmp_path)
    measured = chosen.calibration
    block, loss = measured["timings_ms"]["block"], measured["timings_ms"]["loss"]
    for kernel in ("swiglu", "attention"):
        assert (kernel in chosen.fast_kernels) == (block[kernel] < block["mlx"])
    assert ("loss" in chosen.fast_kernels) == (loss["fast"] < loss["mlx"])
    assert chosen.as_dict()["calibration"]["cpu"] == calibration.cpu_identity()["cpu"]


def test_calibration_leaves_the_run_s_random_state_and_mode_alone(tiny, tmp_path):
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = tiny
    lora = type(model)(model.args)
    lora.update(model.parameters())
    lora.freeze()
    linear_to_lora_layers(lora, len(lora.layers), {"rank": 4, "scale": 2.0, "dropout": 0.3})  # draws at random
    lora.train()
    mx.random.seed(7)
    expected = mx.random.uniform(shape=(4,)).tolist()
    mx.random.seed(7)
    calibration.calibrate(lora, 2, 64, tmp_path, None)
    assert mx.random.uniform(shape=(4,)).tolist() == expected
    assert lora.training


def test_the_openblas_core_measured_fastest_is_chosen_and_kept(tmp_path):
    from workbench import blas

    cache = tmp_path / "blas.json"
    # Prescott: OpenBLAS's SSE3 kernels, several times slower than what it detects on any x86-64 CPU
    # that runs the suite.
    found = blas.calibrate_core(cache, set(), candidates=["Prescott", "auto"])
    assert found["choice"] == "auto", found
    assert found["gflops"]["Prescott"] < found["gflops"]["auto"]
    assert found["cores"]["Prescott"] == "Prescott"
    assert blas.calibrate_core(cache, set(), candidates=["Prescott"]) == found  # cached: not measured again
    assert blas.core_candidates({"avx2", "avx512f"})[0] == "auto"
    assert "SkylakeX" in blas.core_candidates({"avx2", "avx512f"})
