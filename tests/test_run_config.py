"""`run`'s settings: one validated config (file ← flags), saved in pipeline.json, restored on --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from htakl_deploy.cli import main
from htakl_deploy.errors import UserError
from htakl_deploy.runconfig import EXPORT_TARGETS, SIM_BACKENDS, PipelineConfig


def test_backend_and_target_names_are_the_real_tables():
    from htakl_deploy.export.pipeline import TARGETS
    from htakl_deploy.hw.simulate import BACKENDS

    assert set(SIM_BACKENDS) == set(BACKENDS) and set(EXPORT_TARGETS) == set(TARGETS)


@pytest.mark.parametrize("changes, expected", [
    ({"lava_samples": 0}, "--lava-samples: got 0, expected an integer >= 1"),
    ({"lava_check": -1}, "--lava-check: got -1"),
    ({"backends": ["emulator", "loihi"]}, "--backends: got 'loihi', expected one of"),
    ({"backends": "emulator"}, "--backends: got 'emulator', expected a list"),
    ({"export_targets": ["onnx", "lava"]}, "holding nir"),
    ({"preset": "nope"}, "--preset: got 'nope', expected one of"),
    ({"lava": "no"}, "--lava: got 'no', expected true or false"),
])
def test_pipeline_config_refuses_bad_values(changes, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        PipelineConfig(**changes)


def test_pipeline_config_lists_become_tuples_and_lava_off_drops_lava_backends():
    c = PipelineConfig(backends=["emulator", "lava-fixed_pt", "emulator"], lava=False)
    assert c.backends == ("emulator", "lava-fixed_pt") and c.sim_backends == ("emulator",)
    assert c.effective_lava_check == 0 and PipelineConfig(**c.to_dict()) == c


@pytest.mark.parametrize("command, text, expected", [
    ("run", "lava_sample = 3\n", "unknown key 'lava_sample'; did you mean 'lava_samples'?"),
    ("run", "tempreature = 3.0\n", "did you mean 'temperature' or"),
    ("distill", "lava = false\n", "'lava' is a setting of `htakl-deploy run`"),
    ("run", "backends = ['emulator', 'loihi']\n", "--backends: got 'loihi'"),
])
def test_config_file_keys(tmp_path, capsys, command, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    rc = main([command, "--config", str(path), "--out-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


CONFIG = """\
data = "digits"
limit-train = 256
limit-test = 24
batch_size = 64
epochs = 8
checkpoint_every = 1
teacher_epochs = 1
progress = false
lava_samples = 3
preset = "paper-45nm"
backends = ["torch-float", "emulator", "lava-fixed_pt"]
export_targets = ["nir", "lava"]
"""


def test_killed_no_lava_run_resumes_without_lava_and_keeps_its_settings(tmp_path, capsys):
    """`run --config X --no-lava`, SIGKILLed during training, then `run --resume`: Lava never starts,
    pipeline.json's settings are the original ones, finished stages are skipped on a second resume,
    and a pipeline flag given on resume overrides the saved value (and the run says so)."""
    cfg = tmp_path / "x.toml"
    cfg.write_text(CONFIG)
    run = tmp_path / "runs" / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "htakl_deploy", "run", "--config", str(cfg), "--no-lava",
                             "--out-dir", str(tmp_path / "runs"), "--run-name", "r"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run / "student" / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the student never wrote a checkpoint"
            time.sleep(0.05)
        original = json.loads((run / "pipeline.json").read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode()
        assert "Triton" not in err and "Warning" not in err, err  # no third-party noise at start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert original["settings"] == {**PipelineConfig().to_dict(), "lava": False, "lava_samples": 3,
                                   "export_targets": ["nir", "lava"]}
    assert not (run / "student" / "done.json").exists()  # killed in training, not after it

    assert main(["run", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    resumed = json.loads((run / "pipeline.json").read_text())
    assert resumed["settings"] == original["settings"]
    assert sorted(p.name for p in (run / "simulate").iterdir()) == ["emulator", "torch-float"]
    assert "simulate:lava" not in out and "[1/7] distill" in out
    assert "lava_check" not in json.loads((run / "export" / "export_report.json").read_text())["lava"]
    assert "(continuing)" in out and "report: " in out

    # everything done: a second resume skips every stage
    mtime = (run / "report.html").stat().st_mtime_ns
    assert main(["run", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 7 and (run / "report.html").stat().st_mtime_ns == mtime

    # a pipeline flag on resume overrides the saved value, says so, and re-runs only what depends on it
    sims = {b: (run / "simulate" / b / "simulate.json").stat().st_mtime_ns for b in ("emulator", "torch-float")}
    assert main(["run", "--resume", str(run), "--preset", "loihi1"]) == 0
    out = capsys.readouterr().out
    assert "--preset given on resume: loihi1 (was paper-45nm)" in out
    assert out.count("already done, skipped") == 4  # distill, export, two simulations
    assert sims == {b: (run / "simulate" / b / "simulate.json").stat().st_mtime_ns for b in sims}
    assert json.loads((run / "energy" / "emulator.json").read_text())["energy_model"]["name"] == "loihi1"
    assert json.loads((run / "pipeline.json").read_text())["settings"]["preset"] == "loihi1"


def test_run_json_prints_only_json_on_stdout(tmp_path, capsys):
    rc = main(["run", "--out-dir", str(tmp_path), "--run-name", "r", "--limit-train", "128", "--limit-test", "8",
               "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1", "--no-lava", "--no-progress",
               "--backends", "emulator", "--export-targets", "nir", "lava", "--json"])
    assert rc == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert list(result["accuracy"]) == ["emulator"] and result["samples"] == {"emulator": 8}
    assert result["energy_per_sample_uj"]["emulator"] > 0 and "[1/6] distill" in cap.err
    assert not (tmp_path / "r" / "export" / "student_T4.onnx").exists()
    saved = json.loads((tmp_path / "r" / "pipeline.json").read_text())
    assert saved["settings"]["backends"] == ["emulator"] and saved["settings"]["export_targets"] == ["nir", "lava"]
    assert all(saved["stages"][s]["done"] for s in ("distill", "export", "simulate:emulator", "energy", "map", "report"))


def test_stage_progress_bar_takes_samples_done_so_far(monkeypatch):
    """simulate (and Lava's runner) report the samples finished so far, not increments."""
    import io

    from htakl_deploy.pipeline import _progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    ctx = _progress_bar(True, "lava-fixed_pt", 10)
    progress = ctx.__enter__()
    progress(3)
    progress(7)
    assert ctx.bar.n == 7 and ctx.bar.total == 10
    ctx.__exit__(None, None, None)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    assert _progress_bar(True, "emulator").__enter__() is None
