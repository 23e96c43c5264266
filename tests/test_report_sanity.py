"""Reports that cannot mislead: sanity warnings (dead layers, chance accuracy, few samples, different
sample sets, quantisation), intervals, the limit-test caption, and the report's added sections."""

from __future__ import annotations

import json

import pytest

from htakl_deploy.cli import main
from htakl_deploy.energy.diagnostics import config_fields_used, sanity_warnings, wilson_interval


def test_wilson_interval_hand_values():
    # 50/100: (p + z²/2n)/(1 + z²/n) = 0.5, half = 1.96·sqrt(0.0025 + 0.000096)/1.038416 = 0.09617
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.40383, abs=1e-5) and hi == pytest.approx(0.59617, abs=1e-5)
    lo, hi = wilson_interval(0.0, 24)  # 0 of 24: upper bound z²/(n + z²)
    assert lo == 0.0 and hi == pytest.approx(1.96 ** 2 / (24 + 1.96 ** 2), abs=1e-12)


def _report(rates, accs, samples, **export):
    return {"primary_backend": "emulator",
            "activity": {"emulator": {"samples": samples[0], "timesteps": 4,
                                      "layers": [{"name": f"l{i}", "firing_rate": r} for i, r in enumerate(rates)]}},
            "accuracy": [{"model": "student", "stage": "simulate", "backend": f"b{i}", "accuracy": a, "samples": n}
                         for i, (a, n) in enumerate(zip(accs, samples))],
            "export": {"quantisation_warnings": [], **export}}


def test_a_healthy_report_has_no_warning():
    report = _report([0.08, 0.2], [0.95, 0.96], [360, 360], float_accuracy=0.95, int_accuracy=0.945)
    assert sanity_warnings(report, 10) == []
    assert report["accuracy"][0]["interval_95"] == list(wilson_interval(0.95, 360))


@pytest.mark.parametrize("rates, accs, samples, export, codes", [
    ([0.0, 0.2], [0.95, 0.95], [360, 360], {}, ["dead_layer"]),
    ([0.1, 0.93], [0.95, 0.95], [360, 360], {}, ["saturated_layer"]),
    ([0.1, 0.2], [0.11, 0.95], [360, 360], {}, ["chance"]),          # 11 % of 360: interval reaches 10 %
    ([0.1, 0.2], [0.95, 0.95], [360, 50], {}, ["few_samples", "different_samples"]),
    ([0.1, 0.2], [0.95, 0.95], [360, 360], {"float_accuracy": 0.95, "int_accuracy": 0.90}, ["quantisation_loss"]),
])
def test_each_check_fires_alone(rates, accs, samples, export, codes):
    assert [w["code"] for w in sanity_warnings(_report(rates, accs, samples, **export), 10)] == codes


def test_config_table_hides_other_methods_settings():
    used, hidden = config_fields_used({"method": "hta-kl", "delta": 0.5, "lr": 0.1, "nld_lambda": 0.1,
                                       "seal_alpha": 0.6, "head_weight": 0.5})
    assert used == {"method": "hta-kl", "delta": 0.5, "lr": 0.1} and hidden == ["head_weight", "nld_lambda", "seal_alpha"]


def test_dead_student_report_shows_the_warnings(tmp_path, capsys):
    """A student whose LIF threshold no input reaches (v_threshold 1000) never fires: the run's
    terminal summary, report.md, report.html and report.json all say so."""
    rc = main(["run", "--out-dir", str(tmp_path), "--run-name", "dead", "--limit-train", "128", "--limit-test", "24",
               "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1", "--no-lava", "--no-progress",
               "--v-threshold", "1000", "--backends", "emulator", "--export-targets", "nir", "lava",
               "--map-target", "none"])
    assert rc == 0
    out = capsys.readouterr().out
    run = tmp_path / "dead"
    report = json.loads((run / "report.json").read_text())
    codes = [w["code"] for w in report["warnings"]]
    assert codes.count("dead_layer") == 2 and "chance" in codes
    assert "different_samples" not in codes  # run's export evaluates the --limit-test images too
    assert "warning: dead layer: LIF layer stage1.act never fires" in out
    md = (run / "report.md").read_text()
    assert "## Warnings" in md and "never fires on emulator" in md and "sanity warnings** (section Warnings)" in md
    assert "24 test images, every class in proportion (`--limit-test 24`)" in md and "full test split" not in md
    assert "Contents: [Summary](#summary) · [Warnings](#warnings)" in md
    for section in ("## Training", "## Quantisation", "## NeuroBench-style metrics", "## Stage timings"):
        assert section in md
    assert "nld_lambda" not in md and '| delta |' in md  # hta-kl's own settings only
    html = (run / "report.html").read_text()
    assert '<h2 id="warnings" class="warn">Warnings</h2>' in html and 'id="fig-training"' in html
    acc = next(a for a in report["accuracy"] if a["backend"] == "emulator")
    assert acc["samples"] == 24 and acc["interval_95"] == list(wilson_interval(acc["accuracy"], 24))
    assert len(report["training_curves"]["student"]) == 1 and report["quantisation"][0]["connection"] == "stage1.conv"
    assert report["neurobench"]["activation_sparsity"] == 1.0  # nothing fires


# -- opt-in (pytest -m browser): the reports in a real browser, screenshots ------------------------


def _run_for_screenshot(out, name, *extra):
    rc = main(["run", "--out-dir", str(out), "--run-name", name, "--no-lava", "--no-progress",
               "--backends", "torch-float", "emulator", "--export-targets", "nir", "lava", "--map-target", "none",
               *extra])
    assert rc == 0
    return out / name


@pytest.mark.browser
def test_screenshots_of_a_healthy_and_a_dead_student_report(tmp_path, capsys):
    """Headless Chromium renders both reports; the dead student's page shows the warning box (its
    orange border is in the screenshot), the healthy one's does not. Set HTAKL_SCREENSHOT_DIR to
    keep the PNGs (docs/img/ holds the ones on docs/ENERGY.md)."""
    import os
    import subprocess
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from test_report import CHROMIUM_FLAGS, _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` was not possible here")
    healthy = _run_for_screenshot(tmp_path, "healthy", "--epochs", "20", "--teacher-epochs", "10")
    dead = _run_for_screenshot(tmp_path, "dead", "--limit-train", "128", "--limit-test", "24", "--batch-size", "64",
                               "--epochs", "1", "--teacher-epochs", "1", "--v-threshold", "1000")
    capsys.readouterr()
    assert json.loads((healthy / "report.json").read_text())["warnings"] == []
    shots = Path(os.environ.get("HTAKL_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    orange = {}
    for run in (healthy, dead):
        shot = shots / f"report-{run.name}.png"
        common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        subprocess.run([*common, f"--screenshot={shot}", "--window-size=1100,1400", (run / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120, check=True)
        dom = subprocess.run([*common, "--dump-dom", (run / "report.html").as_uri()], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        assert "Contents:" in dom and "ERR_" not in dom
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
        assert pixels.std() > 20, "the screenshot is (almost) blank"
        # the warning box's border colour, #d9822b
        orange[run.name] = int((np.abs(pixels - np.array([217, 130, 43])).max(axis=-1) < 10).sum())
        if run is dead:
            assert "never fires on emulator" in dom and 'class="warn"' in dom
        else:
            assert "No sanity check fired" in dom and 'class="warn"' not in dom
    assert orange["dead"] > 500 and orange["healthy"] == 0, orange
