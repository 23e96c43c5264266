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
