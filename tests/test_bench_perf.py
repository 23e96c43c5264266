"""Smoke runs of the performance benchmarks with tiny settings: they finish and report their ratios
(positive, finite); the timings themselves are not asserted."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_train_overhead_smoke(tmp_path, capsys):
    out = tmp_path / "t.json"
    r = load("train_overhead").main(["--reps", "1", "--limit-train", "256", "--no-memory",
                                     "--json", str(out)])
    assert positive(r["ratio_time_ours_over_plain"]) and positive(r["ratio_time_ours_aug_over_plain"])
    assert all(positive(v) for v in r["images_per_s"].values())
    assert json.loads(out.read_text())["ratio_time_ours_over_plain"] == r["ratio_time_ours_over_plain"]
    assert "ours / plain" in capsys.readouterr().out


def test_counter_overhead_smoke():
    r = load("counter_overhead").main(["--samples", "16", "--repeats", "1", "--no-memory"])
    for key in ("ratio_count_over_float", "ratio_count_over_emulator", "ratio_count_nb_off_over_float"):
        assert positive(r[key]), key
    assert r["acs_per_sample"] is not None


def test_counter_memory_child(capsys):
    load("counter_overhead").main(["--variant", "count", "--samples", "8", "--repeats", "1"])
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["peak_mb"] >= m["rss_before_mb"] > 0 and m["delta_mb"] >= 0


def check_scale_out(r: dict) -> None:
    for key in ("ratio_throughput_nproc_over_1", "ratio_throughput_nproc_over_1p_nthreads",
                "ratio_wall_1_over_nproc"):
        assert positive(r[key]), key
    assert [(v["processes"], v["threads_per_process"]) for v in r["variants"]] == [(1, 1), (2, 1), (1, 2)]
    assert all(0.0 <= v["student_test_acc"] <= 1.0 for v in r["variants"])


def test_scale_out_main_with_stub_runs(tmp_path, monkeypatch, capsys):
    """main → bench → ratios and table, with each `distill` command replaced by a stub run (three
    real commands, one through torchrun, take ~25 s: see the slow test below)."""
    mod = load("scale_out")
    seen = []

    def fake_run(cmd, capture_output, text, env):
        seen.append((cmd, env["OMP_NUM_THREADS"]))
        run = Path(cmd[cmd.index("--out-dir") + 1]) / cmd[cmd.index("--run-name") + 1]
        (run / "student").mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"student": {"test_acc": 0.5}, "teacher": {"test_acc": 0.6}}))
        epoch = {"kind": "epoch", "images_per_s": 100.0 * len(seen), "epoch_train_s": 1.0}
        (run / "student" / "metrics.jsonl").write_text(json.dumps(epoch) + "\n")
        return mod.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    r = mod.main(["--epochs", "1", "--teacher-epochs", "1", "--out-dir", str(tmp_path)])
    check_scale_out(r)
    assert r["ratio_throughput_nproc_over_1"] == 2.0
    assert "torch.distributed.run" in seen[1][0] and [e for _, e in seen] == ["1", "1", "2"]
    assert "processes / 1 process" in capsys.readouterr().out


@pytest.mark.slow
def test_scale_out_real_runs(tmp_path):
    r = load("scale_out").main(["--epochs", "1", "--teacher-epochs", "1", "--limit-train", "256",
                                "--out-dir", str(tmp_path)])
    check_scale_out(r)
