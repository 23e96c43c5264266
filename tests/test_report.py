"""`htakl-deploy report`: the three files, numbers taken over exactly, self-contained HTML,
missing parts reported (not crashed on), bad RUN_DIR → exit 2; opt-in: the page in Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.distill.models import build_model
from htakl_deploy.energy.counter import count_ops
from htakl_deploy.energy.document import write_report
from htakl_deploy.energy.models import load_preset
from htakl_deploy.energy.report import energy_report
from htakl_deploy.energy.rundata import activity_from_spikes
from htakl_deploy.energy.spikefile import read_spikes, record_float, write_spikes
from htakl_deploy.export.fold import fold_batchnorm
from htakl_deploy.export.graph import LIFNode, graph_from_classifier
from htakl_deploy.export.nir_io import write_nir
from htakl_deploy.export.quantize import quantize, quantize_input, run_int

T, SAMPLES = 4, 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures: a small but real student, run in integer and float maths ---------------------


@pytest.fixture(scope="module")
def student():
    """Quantised convnet on 8×8 digits-sized input, with spikes from both maths."""
    torch.manual_seed(0)
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True).eval()
    with torch.no_grad():  # untrained weights are too small to make the LIF layers fire
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    graph = graph_from_classifier(fold_batchnorm(model))
    q = quantize(graph)
    x = np.repeat(np.random.default_rng(0).random((1, SAMPLES, 1, 8, 8)), T, axis=0)
    out, vals = run_int(q, x, record=True)
    int_layers = {n: vals[n] for n, v in graph.nodes.items() if isinstance(v, LIFNode)}
    assert all(v.any() for v in int_layers.values())
    return {"graph": graph, "q": q, "x": x, "int_layers": int_layers, "int_pred": out.sum(0).argmax(-1),
            "float_layers": record_float(graph, torch.as_tensor(x))}


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def add_backend(root: Path, student, backend: str, *, accuracy: float, preset: str | None = "paper-45nm",
                agreement: dict | None = None) -> dict | None:
    """simulate/<backend>/{simulate.json, spikes.h5} and, with a preset, energy/<backend>.json."""
    labels = np.arange(SAMPLES) % 10
    integer = backend != "torch-float"
    layers = student["int_layers"] if integer else student["float_layers"]
    x = quantize_input(student["x"], student["q"].input_scale) if integer else student["x"]
    spikes = root / "simulate" / backend / "spikes.h5"
    write_spikes(spikes, layers=layers, input=x, labels=labels, predictions=student["int_pred"],
                 attrs={"backend": backend})
    sim = {"backend": backend, "samples": SAMPLES, "timesteps": T, "accuracy": accuracy, "wall_s": 0.5,
           "samples_per_s": SAMPLES / 0.5, "spikes_file": "spikes.h5"}
    if agreement:
        sim["agreement"] = agreement
    _json(root / "simulate" / backend / "simulate.json", sim)
    if preset is None:
        return None
    rep = energy_report(count_ops(student["graph"], read_spikes(spikes), neurobench=False), load_preset(preset),
                        spikes_file=str(spikes), backend=backend)
    _json(root / "energy" / f"{backend}.json", rep)
    return rep


def base_run(root: Path) -> Path:
    """config.json + provenance.json + summary.json, as `htakl-deploy distill` leaves them."""
    _json(root / "config.json", {"teacher_only": False, "data": "digits", "model": "convnet", "method": "hta-kl",
                                 "timesteps": T, "encoding": "direct", "seed": 0, "lr": 0.01, "batch_size": 128})
    _json(root / "provenance.json", {"versions": {"python": "3.11.2", "torch": "2.13.0+cpu", "lava-nc": None},
                                     "git": {"sha": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
                                     "argv": ["htakl-deploy", "distill", "--run-name", "demo"], "seed": 0,
                                     "host": "box", "platform": "Linux", "started_unix_s": 1.7e9})
    _json(root / "summary.json", {"data": "digits", "model": "convnet", "method": "hta-kl", "timesteps": T,
                                  "teacher": {"test_acc": 0.9889, "best_test_acc": 0.9917, "timesteps": 1},
                                  "student": {"test_acc": 0.9806, "best_test_acc": 0.9833, "timesteps": T}})
    return root


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, student):
    root = base_run(tmp_path_factory.mktemp("run") / "demo")
    _json(root / "export" / "export_report.json",
          {"nir": {"accuracy": {"samples": 360, "timesteps": T, "float_acc": 0.9806, "int_acc": 0.9778,
                                "decision_agreement": 0.9944}, "clipped_weights": 0}})
    write_nir(student["graph"], root / "export" / "student_quant.nir", quantized=student["q"])
    energies = {
        "lava-fixed_pt": add_backend(root, student, "lava-fixed_pt", accuracy=0.5, agreement={
            "vs": "emulator", "spike_agreement": 1.0, "decision_agreement": 1.0}),
        "emulator": add_backend(root, student, "emulator", accuracy=0.5),
        "torch-float": add_backend(root, student, "torch-float", accuracy=2 / 3, preset="loihi1"),
    }
    report = write_report(root)
    return root, report, energies


# -- the full report -----------------------------------------------------------------------


def test_three_files_written_atomically(full_run):
    root, report, _ = full_run
    for name in ("report.md", "report.html", "report.json"):
        assert (root / name).stat().st_size > 0
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert json.loads((root / "report.json").read_text())["format"] == "htakl-report/1"


def test_json_holds_the_input_numbers(full_run):
    root, _, energies = full_run
    rep = json.loads((root / "report.json").read_text())
    acc = {(a["stage"], a["backend"]): a["accuracy"] for a in rep["accuracy"]}
    assert acc[("simulate", "lava-fixed_pt")] == 0.5 and acc[("simulate", "emulator")] == 0.5
    assert acc[("simulate", "torch-float")] == 2 / 3
    assert acc[("export", "torch-float")] == 0.9806 and acc[("export", "integer")] == 0.9778
    assert {(a["model"], a["accuracy"]) for a in rep["accuracy"] if a["stage"] == "training"} == \
        {("teacher", 0.9889), ("student", 0.9806)}
    lava = next(a for a in rep["accuracy"] if a["backend"] == "lava-fixed_pt")
    assert lava["agreement"]["spike_agreement"] == 1.0
    assert rep["backends"] == ["lava-fixed_pt", "emulator", "torch-float"]
    assert rep["primary_backend"] == "lava-fixed_pt"
    for b, e in energies.items():
        ps, want = rep["energy"][b]["per_sample"], e["per_sample"]
        assert ps["measured_pj"] == want["energy_pj"]
        assert ps["analytic_pj"] == want["analytic_energy_pj"]
        assert ps["paper_style_pj"] == want["paper_style_energy_pj"]
        assert ps["ann_teacher_pj"] == want["ann_teacher_energy_pj"]
        assert rep["energy"][b]["energy_model"] == e["energy_model"]
        layers = rep["energy"][b]["layers"]
        assert [x["name"] for x in layers] == [x["name"] for x in e["layers"]]
        # per-layer rows add up to the totals of the energy file
        assert sum(x["measured_pj"] for x in layers) + ps["neuron_pj"] == pytest.approx(want["energy_pj"])
        assert sum(x["analytic_pj"] for x in layers) + ps["neuron_pj"] == pytest.approx(want["analytic_energy_pj"])
        assert sum(x["ann_teacher_pj"] for x in layers) == pytest.approx(want["ann_teacher_energy_pj"])
        rates = {n["name"]: n["firing_rate"] for n in e["neurons"]}
        assert {x["name"]: x["firing_rate"] for x in rep["activity"][b]["layers"]} == rates
    assert rep["energy"]["torch-float"]["per_sample"]["neuron_pj"] > 0  # loihi1 charges neuron updates
    assert rep["provenance"]["git"]["sha"].startswith("0123456789abcdef")
    assert rep["provenance"]["config"]["method"] == "hta-kl"
    assert not any("Lava" in m for m in rep["missing"]) and rep["problems"] == []


def test_markdown_is_readable(full_run):
    root, report, energies = full_run
    md = (root / "report.md").read_text()
    assert md.startswith("# htakl-deploy report: demo")
    assert "This report summarises run `demo`" in md
    for text in ("| backend |", "98.06 %", "97.78 %", " nJ", "paper-45nm", "loihi1",
                 "Horowitz", "Davies", "0123456789abcdef0123456789abcdef01234567", "Figure 1", "firing rate"):
        assert text in md, text
    measured = energies["lava-fixed_pt"]["per_sample"]["energy_pj"]
    from htakl_deploy.energy.document import fmt_energy
    assert fmt_energy(measured) in md


def test_html_is_self_contained_with_embedded_plots(full_run):
    root, report, _ = full_run
    page = (root / "report.html").read_text()
    assert not re.search(r"https?://|<link\b|<script\b|@import|url\(", page, re.I)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(report["figures"]) == 4
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_MAGIC) and len(png) > 5000
    for f in report["figures"]:
        assert f'id="fig-{f["id"]}"' in page
    assert "<table>" in page and "paper-45nm" in page


# -- missing and broken parts --------------------------------------------------------------


def test_bare_run_dir_reports_what_is_missing(tmp_path, capsys):
    root = tmp_path / "bare"
    _json(root / "config.json", {"data": "digits", "model": "convnet", "method": "kd", "timesteps": 2})
    assert main(["report", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "wrote" in out and "no Lava run in this directory" in err
    rep = json.loads((root / "report.json").read_text())
    assert rep["accuracy"] == [] and rep["energy"] == {} and rep["figures"] == []
    missing = " ".join(rep["missing"])
    for text in ("provenance.json", "summary.json", "export_report.json", "no simulator run",
                 "no Lava run in this directory", "no energy report"):
        assert text in missing, text
    md = (root / "report.md").read_text()
    assert "no Lava run in this directory" in md and "No energy report in this directory" in md
    assert "<img" not in (root / "report.html").read_text()


def test_spikes_without_energy_still_give_firing_rates(tmp_path, student):
    root = base_run(tmp_path / "partial")
    add_backend(root, student, "emulator", accuracy=0.5, preset=None)
    rep = write_report(root)
    assert rep["energy"] == {} and rep["primary_backend"] == "emulator"
    assert "no energy report for emulator" in " ".join(rep["missing"])
    got = rep["activity"]["emulator"]
    want = count_ops(student["graph"], read_spikes(root / "simulate/emulator/spikes.h5"), neurobench=False)
    assert {x["name"]: x["firing_rate"] for x in got["layers"]} == {n["name"]: n["firing_rate"] for n in want["neurons"]}
    assert got["source"] == "simulate/emulator/spikes.h5"
    assert [f["id"] for f in rep["figures"]] == ["firing_rates", "spikes_per_timestep"]
    assert activity_from_spikes(root / "simulate/emulator/spikes.h5", "x", chunk=4) == {**got, "source": "x"}


def test_corrupt_parts_are_listed_not_fatal(tmp_path, student):
    root = base_run(tmp_path / "broken")
    add_backend(root, student, "emulator", accuracy=0.5)
    (root / "energy" / "lava-fixed_pt.json").write_text("{ truncated")
    (root / "energy" / "other.json").write_text(json.dumps({"format": "something-else"}))
    (root / "export").mkdir()
    (root / "export" / "export_report.json").write_text("[]")
    rep = write_report(root)
    problems = " ".join(rep["problems"])
    assert "energy/lava-fixed_pt.json: not readable JSON" in problems
    assert "energy/other.json: format 'something-else'" in problems
    assert "export/export_report.json: expected a JSON object" in problems
    assert list(rep["energy"]) == ["emulator"]
    assert "could not read" in (root / "report.md").read_text()


def _bad_dir(tmp_path: Path, make: str) -> Path:
    target = tmp_path / "notarun"
    if make == "file":
        target.write_text("x")
    elif make != "missing":
        target.mkdir()
    if make == "bad_config":
        (target / "config.json").write_text("{ nope")
    return target


@pytest.mark.parametrize("make", ["missing", "no_config", "bad_config", "file"])
def test_bad_run_dir_is_a_one_line_user_error(tmp_path, capsys, make):
    target = _bad_dir(tmp_path, make)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("htakl-deploy: error: RUN_DIR: ") and str(target) in err, err
    if target.is_dir():
        assert not any(p.name.startswith("report") for p in target.iterdir())


def test_bad_run_dir_subprocess_exit_2_without_traceback(tmp_path):
    target = _bad_dir(tmp_path, "no_config")
    proc = subprocess.run([sys.executable, "-m", "htakl_deploy", "report", str(target)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "is not a run directory (no config.json" in proc.stderr and str(target) in proc.stderr


# -- opt-in: render the page in a real browser ---------------------------------------------


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, env=env, timeout=900)
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.mark.browser
def test_report_renders_in_chromium(full_run, tmp_path):
    from PIL import Image

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` was not possible here")
    root, report, _ = full_run
    url = (root / "report.html").resolve().as_uri()
    shot = Path(os.environ.get("HTAKL_REPORT_SCREENSHOT", tmp_path / "report.png"))
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,3000", url],
                   capture_output=True, text=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout

    assert "htakl-deploy report: demo" in dom and "ERR_" not in dom and "This site can" not in dom
    imgs = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', dom)
    assert len(imgs) == len(report["figures"]) == 4
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in imgs)

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 20, "the screenshot is (almost) blank"
    # matplotlib's first bar colour (tab:blue, 31 119 180): the plots were decoded and drawn
    blue = (np.abs(pixels - np.array([31, 119, 180])).max(axis=-1) < 12).sum()
    assert blue > 2000, f"only {blue} plot-coloured pixels in the screenshot"
