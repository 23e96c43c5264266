"""Nothing lost when the machine fights back (issue 29). The bad-input table (tests/bad_inputs/cases.py) holds the one-line refusals —
full disks on a real tmpfs, files that lie about their sizes; tests/test_rundir.py the races.
Here: a write the kernel refuses (RLIMIT_FSIZE: EFBIG, also where no tmpfs can be mounted) ends
in one line and no temporary file; temporary files of killed writers are swept (only ours, only
stale); ``run --resume`` checks every stage it skips by its outputs; ``simulate MODEL.nir``
writes one folder per graph; messages that misled now name what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from htakl_deploy.cli import main

QUICK = ["--limit-train", "128", "--limit-test", "8", "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1",
         "--no-lava", "--no-progress"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> Path:
    """A whole ``run`` without Lava (train, export, simulate, energy, map, report) on digits."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--out-dir", str(out), "--run-name", "r", *QUICK]) == 0
    return out / "r"


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "r"
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------ a write the kernel refuses
FSIZE_SCRIPT = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from htakl_deploy.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("argv, name", [
    (["simulate", "{run}", "--backend", "emulator", "--samples", "8", "--out", "{out}"], "spikes.h5"),
    (["export", "{run}", "--target", "nir", "--no-eval", "--out", "{out}"], "student_float.nir"),
    (["export", "{run}", "--target", "netx", "--no-eval", "--out", "{out}"], "student_float.nir"),
])
def test_a_refused_write_is_one_line_and_leaves_no_temporary_file(pipeline_run, tmp_path, argv, name):
    """RLIMIT_FSIZE makes the kernel refuse every write past 20 kB (EFBIG): a real failed write,
    no root needed. Before: simulate died in libhdf5 (SIGSEGV, exit 139) after 11 tracebacks."""
    run, out = _copy(pipeline_run, tmp_path), tmp_path / "out"
    args = [a.format(run=run, out=out) for a in argv]
    proc = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, "20000", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"htakl-deploy: error: cannot write {out / name}: File too large"), lines[0]
    assert not out.exists(), "a refused command left its output folder"


def test_a_killed_writers_temporary_file_is_swept_only_if_stale(tmp_path):
    from htakl_deploy.atomic import write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a.json.{dead_pid}.abcd1234.tmp"  # a writer killed by SIGKILL left it
    live = tmp_path / f".a.json.{os.getppid()}.abcd1234.tmp"  # a writer still at work
    other = [tmp_path / ".a.json.tmp", tmp_path / f".b.json.{dead_pid}.abcd1234.tmp", tmp_path / "a.json.12.x.tmp"]
    for p in (stale, live, *other):
        p.write_text("partial")
    write_json(tmp_path / "a.json", {"x": 1})
    assert not stale.exists() and live.exists() and all(p.exists() for p in other)
    from htakl_deploy.rundir import claim

    with claim(tmp_path):  # a command that claims the folder sweeps every name (only stale ones)
        pass
    assert not other[1].exists() and live.exists() and other[0].exists() and other[2].exists()


def test_sigterm_ends_a_command_like_ctrl_c(pipeline_run, tmp_path):
    """SIGTERM while ``simulate`` writes: exit 143, one line, the claim, the temporary file and the
    folder the command created gone."""
    import signal
    import time

    run = _copy(pipeline_run, tmp_path)
    out = tmp_path / "sim"
    proc = subprocess.Popen([sys.executable, "-m", "htakl_deploy", "simulate", str(run), "--backend", "emulator",
                             "--timesteps", "1000", "--samples", "300", "--batch-size", "8", "--out", str(out)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(out.glob(".spikes.h5.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(out.glob(".spikes.h5.*.tmp")), "simulate never started writing: the test proves nothing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.startswith("htakl-deploy: stopped by SIGTERM"), err
    assert not out.exists() and not (tmp_path / ".sim.htakl-lock").exists()  # the folder it made is gone too


# ------------------------------------------------------------------ resume trusts outputs, not pipeline.json
def test_resume_runs_again_a_stage_whose_outputs_are_gone(pipeline_run, tmp_path, capsys):
    """Before: with export/ deleted, `run --resume` skipped export (pipeline.json said done) and
    failed in simulate, every time."""
    run = _copy(pipeline_run, tmp_path)
    shutil.rmtree(run / "export")
    (run / "report.md").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "distill: already done, skipped" in out
    assert "export: pipeline.json says done, but export/export_report.json is missing: running it again" in out
    assert (run / "export" / "student.lava.npz").is_file() and (run / "report.md").is_file()
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0  # now everything is there
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 7 and "missing" not in out, out


# ------------------------------------------------------------------ one simulate folder per graph
def test_simulate_nir_files_of_one_folder_write_one_folder_each(pipeline_run, tmp_path, capsys):
    """Before: A.nir then B.nir from one folder both wrote ./simulate/<backend>: B replaced A's spikes."""
    for name in ("A", "B"):
        shutil.copy(pipeline_run / "export/student_float.nir", tmp_path / f"{name}.nir")
    for name, samples in (("A", "2"), ("B", "3")):
        assert main(["simulate", str(tmp_path / f"{name}.nir"), "--data", "digits", "--backend", "emulator",
                     "--samples", samples]) == 0
    assert not (tmp_path / "simulate").exists()
    for name, samples in (("A", 2), ("B", 3)):
        sim = json.loads((tmp_path / f"{name}-export/simulate/emulator/simulate.json").read_text())
        assert sim["samples"] == samples and sim["artefact"].endswith(f"{name}-export/student.lava.npz")
    capsys.readouterr()


# ------------------------------------------------------------------ messages that misled
def test_run_refused_prints_no_stage_header(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["run", "--out-dir", str(tmp_path / "afile"), *QUICK]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("htakl-deploy: error: --out-dir: ") and err.count("\n") == 1, (out, err)


def test_a_state_dict_mismatch_names_the_tensor(pipeline_run, tmp_path, capsys):
    import torch

    ck = torch.load(pipeline_run / "student/last.pt", map_location="cpu", weights_only=True)
    first = next(iter(ck["model"]))
    ck["model"]["stage9.extra"] = torch.zeros(1)
    torch.save(ck, tmp_path / "extra.pt")
    del ck["model"]["stage9.extra"]
    ck["model"][first] = ck["model"][first][:1]
    torch.save(ck, tmp_path / "shape.pt")
    assert main(["export", str(tmp_path / "extra.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "tensor 'stage9.extra' is not part of it" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "shape.pt"), "--out", str(tmp_path / "e")]) == 2
    assert f"tensor '{first}' has shape [1," in capsys.readouterr().err


def test_compare_warns_on_corrupt_and_duplicate_runs_and_lays_out_fifty(pipeline_run, tmp_path, capsys):
    """Before: a corrupt summary.json was passed over in silence, a run given twice was listed
    twice, and with 50 runs the legend ran off the figure (matplotlib warned, naming its path)."""
    import warnings

    runs = []
    for i in range(50):
        shutil.copytree(pipeline_run, tmp_path / f"run{i}", ignore=shutil.ignore_patterns("*.pt", "*.h5", "*.nir"))
        runs.append(str(tmp_path / f"run{i}"))
    (tmp_path / "run3" / "summary.json").write_text("{oops")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matplotlib layout warning fails the test
        assert main(["compare", *runs, f"{runs[1]}/", "--html", str(tmp_path / "c.html"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 50
    lines = err.strip().splitlines()
    assert lines[0] == f"htakl-deploy: warning: {runs[1]} given 2 times (also as {runs[1]}/); shown once", err
    assert lines[1].startswith(f"htakl-deploy: warning: {runs[3]}: summary.json: not readable JSON"), err
    html = (tmp_path / "c.html").read_text()
    assert html.count("<img ") == 2 and "given 2 times" in html and "summary.json: not readable JSON" in html
