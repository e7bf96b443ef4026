"""The anonymous-memory sampler reads every 5 ms while the models load and the first step runs, and
slowly in the later steps (each reading takes the GIL, which a Python-bound rollout loop pays for)."""

import pytest

pytest.importorskip("torch")

from planner.executor.metrics import AnonPeak, anon_bytes  # noqa: E402


@pytest.mark.skipif(anon_bytes() is None, reason="no /proc/self/status here")
def test_the_sampler_slows_down_in_the_steady_steps_and_still_sees_a_peak():
    peak = AnonPeak(interval_s=0.005, steady_s=0.25)
    assert peak._interval == 0.005
    peak.mark("first_step")
    assert peak._interval == 0.005
    block = bytearray(64 * 2**20)  # 64 MiB of anonymous memory, touched
    block[::4096] = b"x" * len(block[::4096])
    peak.mark("steps")
    assert peak._interval == 0.25
    del block
    out = peak.stop()
    assert out["peak_anon"] - out["start_anon"] >= 60 * 2**20 and peak.peak_phase == "first_step"
