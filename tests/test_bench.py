"""The benchmark scripts still run (a tiny smoke run; the timings themselves are not asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loss_step_bench_reports_a_ratio():
    result = load("loss_step").bench((1, 8, 8), 10, batch=16, timesteps=2, steps=2)
    assert set(result["step_s_median"]) == {"kd", "hta-kl"}
    assert result["step_ratio_hta_over_kd"] > 0


def test_method_step_bench_covers_every_method(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "method_step.py"), "--steps", "1", "--batch", "16", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for method in ("ce", "kd", "rkl", "fixed", "hta-kl", "ckdsnn", "seal", "kdsnn", "lasnn", "bkdsnn"):
        assert method in text
    json.loads(text)


def test_h5_sink_bench_writes_the_same_file_both_ways(tmp_path):
    """bench/h5_sink.py at a tiny budget: both variants run, and the file written through AtomicH5's
    file object reads back with the same spikes as the one h5py wrote by name."""
    result = load("h5_sink").main(["--samples", "8", "--repeats", "2", "--json", str(tmp_path / "s.json")])
    assert set(result["median_s"]) == {"direct", "sink"} and result["sink_over_direct"] > 0 and result["identical"]
    assert json.loads((tmp_path / "s.json").read_text())["samples"] == 8
