"""`htakl-deploy compare`: three real runs of different methods side by side (table + HTML with plots)."""

from __future__ import annotations

import json

from htakl_deploy.cli import main

SMALL = ["--limit-train", "128", "--limit-test", "24", "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1",
         "--no-lava", "--no-progress", "--backends", "emulator", "--export-targets", "nir", "lava",
         "--map-target", "none"]


def test_compare_three_methods(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "--out-dir", str(runs), "--run-name", "kd", "--method", "kd", *SMALL]) == 0
    teacher = str(runs / "kd" / "teacher" / "last.pt")
    assert main(["run", "--out-dir", str(runs), "--run-name", "hta", "--method", "hta-kl", "--teacher", teacher,
                 *SMALL]) == 0
    assert main(["run", "--out-dir", str(runs), "--run-name", "ce", "--method", "ce", *SMALL]) == 0
    capsys.readouterr()

    page = tmp_path / "cmp.html"
    assert main(["compare", *(str(runs / n) for n in ("kd", "hta", "ce")), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "method", "T"]
    body = [line.split() for line in lines[2:5]]
    assert [(r[0], r[1]) for r in body] == [("kd", "kd"), ("hta", "hta-kl"), ("ce", "ce")]
    for n in ("kd", "hta", "ce"):
        energy = json.loads((runs / n / "energy" / "emulator.json").read_text())
        uj = f"{energy['per_sample']['energy_pj'] * 1e-6:.4f} µJ"
        assert uj in next(line for line in lines if line.startswith(n + " ")), (n, uj)
    html = page.read_text()
    assert html.count("<img ") == 2 and "Accuracy vs energy per sample" in html and "Firing rate per LIF layer" in html
    assert main(["compare", str(runs / "kd"), str(runs / "ce"), "--json", "--html", str(page)]) == 0
    rows = json.loads(capsys.readouterr().out)
    sim = json.loads((runs / "ce" / "simulate" / "emulator" / "simulate.json").read_text())
    assert rows[1]["emulator_acc"] == [sim["accuracy"], 24] and rows[1]["method"] == "ce"


def test_compare_refuses_a_non_run_and_writes_nothing(tmp_path, capsys):
    page = tmp_path / "c.html"
    assert main(["compare", str(tmp_path), "--html", str(page)]) == 2
    assert "not a run directory" in capsys.readouterr().err and not page.exists()
