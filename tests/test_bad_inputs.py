"""Hostile input, every subcommand: the table in ``tests/bad_inputs/cases.py`` (400+ cases).

Each case runs in-process through ``htakl_deploy.cli.main`` in its own workspace (a copy of a
tiny real run: teacher, student, NIR, Lava artefact, spike recording) and must end with exit
code 2, exactly one stderr line ``htakl-deploy: error: ...`` containing the case's words, no
traceback, no file created or changed in the workspace, no child process left, and no planted
payload run. ``python tests/bad_inputs/run_all.py`` prints the same classification as counts.

Further down: the restricted CIFAR unpickler, read-only output folders with the permission check
really enforced (a subprocess as ``nobody``: root ignores mode bits), the umask of written
files, Ctrl-C messages per command, and interrupted export/simulate runs finished by running
the same command again.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bad_inputs.cases import CASES, Payload
from bad_inputs.harness import MARKER, build_fixture_run, namespace_command, run_case, run_isolated


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    return build_fixture_run(tmp_path_factory.mktemp("bad-inputs-fixture"))


@pytest.fixture(scope="module")
def isolated_outcomes(fixture_run, tmp_path_factory):
    """The cases that need a real full disk, run together in one child process with its own mount
    namespace (a tmpfs per case; nothing stays mounted whatever happens here)."""
    if namespace_command() is None:
        pytest.skip("cannot mount a tmpfs here (needs root or user namespaces): the full-disk cases cannot run")
    return run_isolated([c for c in CASES if c.isolate], tmp_path_factory.mktemp("isolated"), fixture_run)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, fixture_run, tmp_path, request):
    if case.isolate:
        out = request.getfixturevalue("isolated_outcomes")[case.id]
    else:
        out = run_case(case, tmp_path / "ws", fixture_run)
    kind = out.kind(case.expect)
    assert kind == "clean", (
        f"{kind}: rc={out.rc}, stderr={out.stderr!r}, expected words {case.expect!r}, "
        f"changed={out.changed[:5]}, children={out.children}, left in TMPDIR={out.leftovers[:5]}\n"
        f"{out.traceback or ''}")


def test_case_table_is_large_and_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 200
    commands = {c.argv[0] for c in CASES if c.argv}
    assert {"distill", "train-teacher", "export", "simulate", "energy", "report", "run"} <= commands


# ------------------------------------------------------------------ no code from data
def _cifar_batch(obj, path: Path, protocol: int) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_unpickler_reads_real_batches_and_refuses_payloads(tmp_path, protocol):
    from htakl_deploy.distill.data.cifar import _read_batch
    from htakl_deploy.errors import UserError

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    good = _cifar_batch({b"batch_label": b"training batch 1 of 5", b"labels": [0, 1, 2, 3, 9], b"data": data,
                         b"filenames": [b"a.png"] * 5}, tmp_path / "good", protocol)
    x, y = _read_batch(good, b"labels", 10)
    assert np.array_equal(x.reshape(5, -1), data) and y.tolist() == [0, 1, 2, 3, 9]

    marker = tmp_path / MARKER
    for payload in (Payload(tmp_path), {b"data": Payload(tmp_path), b"labels": [0]},
                    {b"data": np.array([Payload(tmp_path)], dtype=object), b"labels": [0]}):
        evil = _cifar_batch(payload, tmp_path / "evil", protocol)
        with pytest.raises(UserError, match="refers to io.open, which CIFAR batches never hold"):
            _read_batch(evil, b"labels", 10)
        assert not marker.exists(), "unpickling ran the payload"
    # the same payload through a plain pickle.load does run: the test can fail
    pickle.loads(pickle.dumps(Payload(tmp_path)))
    assert marker.exists()


def test_checkpoint_errors_never_advise_unsafe_loading(tmp_path, capsys):
    import torch

    from htakl_deploy.cli import main

    torch.save({"format": "htakl-deploy/checkpoint", "x": Payload(tmp_path)}, tmp_path / "evil.pt")
    assert main(["export", str(tmp_path / "evil.pt")]) == 2
    err = capsys.readouterr().err
    assert "weights_only" not in err and "False" not in err and "could run code" in err, err
    assert not (tmp_path / MARKER).exists()


# ------------------------------------------------------------------ read-only outputs, enforced
NOBODY = 65534

READ_ONLY_SCRIPT = r"""
import contextlib, io, json, sys
from htakl_deploy.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException as e:
            rc = repr(e)
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root (to drop to nobody) and setpriv")
def test_read_only_outputs_refused_as_nobody(fixture_run):
    """Each command pointed at a folder it may not write: one line, exit 2, nothing written. Run as
    nobody (setpriv) so the kernel enforces the mode bits; the test first checks that it does."""
    base = Path(tempfile.mkdtemp(prefix="htakl-ro-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        run = base / "run"
        shutil.copytree(fixture_run, run)
        for p in [run, *run.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        os.chmod(ro, 0o555)
        home = base / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "OMP_NUM_THREADS": "1"}
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        probe = subprocess.run([*drop, "touch", str(ro / "probe")], capture_output=True, env=env)
        assert probe.returncode != 0 and not (ro / "probe").exists(), "mode bits not enforced: the test proves nothing"
        commands = [
            ["distill", "--no-progress", "--epochs", "1", "--teacher-epochs", "1", "--limit-train", "64",
             "--out-dir", str(ro / "runs")],
            ["export", str(run), "--out", str(ro / "export"), "--no-eval"],
            ["simulate", str(run), "--backend", "emulator", "--samples", "2", "--out", str(ro / "sim")],
            ["energy", str(run / "simulate/emulator/spikes.h5"), "--graph", str(run / "export/student_quant.nir"),
             "--json-out", str(ro / "e.json")],
            ["report", str(ro)],
        ]
        before = sorted(p.name for p in ro.iterdir())
        proc = subprocess.run([*drop, sys.executable, "-c", READ_ONLY_SCRIPT, json.dumps(commands)],
                              capture_output=True, text=True, env=env, cwd=home, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        for argv, (rc, err) in zip(commands, results):
            lines = err.splitlines()
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("htakl-deploy: error: "), (argv[0], rc, err)
            assert "Traceback" not in err
        assert "cannot write in" in results[0][1] and "--out-dir" in results[0][1]
        assert "--out" in results[1][1] and "--out" in results[2][1] and "--json" in results[3][1]
        assert sorted(p.name for p in ro.iterdir()) == before
    finally:
        os.chmod(base / "ro", 0o755) if (base / "ro").exists() else None
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ shared files keep the umask
def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(fixture_run, tmp_path, mask, want):
    """Every file export/simulate/energy/report write gets 0666 & ~umask (``ls -l``: -rw-r--r--
    under 022), like any file the user creates, not mkstemp's 0600."""
    from htakl_deploy.cli import main

    run = tmp_path / "run"
    shutil.copytree(fixture_run, run)
    old = os.umask(mask)
    try:
        assert main(["export", str(run), "--target", "nir", "lava", "--lava-check", "0", "--no-eval",
                     "--out", str(tmp_path / "exp")]) == 0
        assert main(["simulate", str(run), "--backend", "emulator", "--samples", "2",
                     "--out", str(tmp_path / "sim")]) == 0
        assert main(["energy", str(tmp_path / "sim/spikes.h5"), "--graph", str(tmp_path / "exp/student_quant.nir"),
                     "--json-out", str(tmp_path / "sim/energy.json")]) == 0
        assert main(["report", str(run)]) == 0
    finally:
        os.umask(old)
    modes = {**_modes(tmp_path / "exp"), **_modes(tmp_path / "sim"),
             **{k: v for k, v in _modes(run).items() if k.startswith("report.")}}
    assert len(modes) >= 10 and set(modes.values()) == {want}, {k: oct(v) for k, v in modes.items()}


def test_distill_run_directory_follows_the_umask(tmp_path):
    from htakl_deploy.cli import main

    old = os.umask(0o022)
    try:
        assert main(["train-teacher", "--no-progress", "--epochs", "1", "--limit-train", "64",
                     "--limit-test", "8", "--batch-size", "32", "--out-dir", str(tmp_path), "--run-name", "t"]) == 0
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "t")
    assert {"config.json", "provenance.json", "teacher/last.pt", "summary.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}


# ------------------------------------------------------------------ messages that fit the command
@pytest.mark.parametrize("command, target", [
    (["simulate", "RUN", "--backend", "emulator"], "htakl_deploy.hw.simulate.simulate"),
    (["export", "RUN"], "htakl_deploy.export.pipeline.run_export"),
    (["energy", "S.h5", "--graph", "G.nir"], "htakl_deploy.energy.report.report_for_files"),
])
def test_ctrl_c_message_fits_the_command(monkeypatch, capsys, command, target):
    from htakl_deploy.cli import main

    module, name = target.rsplit(".", 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, interrupted)
    assert main(command) == 130
    err = capsys.readouterr().err
    assert err.startswith("htakl-deploy: interrupted") and "distill" not in err and "--resume" not in err, err


def test_positional_arguments_are_named_as_such(tmp_path, capsys):
    from htakl_deploy.cli import main

    (tmp_path / "x.pt").write_bytes(os.urandom(512))
    assert main(["export", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("htakl-deploy: error: CHECKPOINT: ") and "--checkpoint" not in err
    assert "pickle" not in err.lower(), "random bytes are not 'pickled data'"


# ------------------------------------------------------------------ interrupted, then the same command again
def _kill_when(cmd: list[str], ready, timeout_s: float = 120) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    t0 = time.monotonic()
    try:
        while not ready() and proc.poll() is None and time.monotonic() - t0 < timeout_s:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_export_killed_then_run_again_matches_an_uninterrupted_export(fixture_run, tmp_path):
    """SIGKILL export once its first file exists; the same command again gives the same files as
    an export that was never interrupted (NIR graphs, quantisation report, Lava artefact)."""
    from htakl_deploy.cli import main
    from htakl_deploy.export.nir_io import read_nir
    from htakl_deploy.hw.plan import load_plan

    ref, run = tmp_path / "ref", tmp_path / "run"
    shutil.copytree(fixture_run, ref)
    shutil.copytree(fixture_run, run)
    args = ["export", "--target", "nir", "lava", "--lava-check", "0", "--samples", "8"]
    assert main([args[0], str(ref), *args[1:]]) == 0
    shutil.rmtree(run / "export")
    _kill_when([sys.executable, "-m", "htakl_deploy", args[0], str(run), *args[1:]],
               lambda: (run / "export" / "student_float.nir").exists())
    assert not (run / "export" / "export_report.json").exists(), "the kill came too late to test anything"
    assert main([args[0], str(run), *args[1:]]) == 0
    assert not list(run.rglob(".*.tmp")), "a killed writer's temporary file was left"  # swept at the claim
    for name in ("quant_report.json",):
        assert json.loads((ref / "export" / name).read_text()) == json.loads((run / "export" / name).read_text())
    for name in ("student_float.nir", "student_quant.nir"):
        a, b = read_nir(ref / "export" / name), read_nir(run / "export" / name)
        assert a.nodes.keys() == b.nodes.keys()
        for k in a.nodes:
            for field, v in vars(a.nodes[k]).items():
                if isinstance(v, np.ndarray):
                    assert np.array_equal(v, vars(b.nodes[k])[field]), (name, k, field)
    pa, pb = load_plan(ref / "export/student.lava.npz"), load_plan(run / "export/student.lava.npz")
    for la, lb in zip(pa.links, pb.links):
        ma, mb = la.int_matrix(pa.populations[la.src].shape if la.src in pa.populations else pa.input_shape), \
            lb.int_matrix(pb.populations[lb.src].shape if lb.src in pb.populations else pb.input_shape)
        assert (ma != mb).nnz == 0
    assert pa.same_network(pb) is None


def test_simulate_killed_then_run_again_matches_an_uninterrupted_run(fixture_run, tmp_path):
    from htakl_deploy.cli import main
    from htakl_deploy.energy.spikefile import read_spikes

    ref, run = tmp_path / "ref", tmp_path / "run"
    shutil.copytree(fixture_run, ref)
    shutil.copytree(fixture_run, run)
    for d in (ref, run):  # no earlier recording: both write simulate/emulator/
        shutil.rmtree(d / "simulate")
    args = ["simulate", "--backend", "emulator", "--samples", "8"]
    assert main([args[0], str(ref), *args[1:]]) == 0
    started = time.monotonic()
    _kill_when([sys.executable, "-m", "htakl_deploy", args[0], str(run), *args[1:]],
               lambda: time.monotonic() - started > 1.0)
    assert not (run / "simulate/emulator/simulate.json").exists(), "the kill came too late to test anything"
    killed_tmp = list(run.rglob(".spikes.h5.*.tmp"))
    assert main([args[0], str(run), *args[1:]]) == 0
    assert not list(run.rglob(".*.tmp")), f"the killed writer's {killed_tmp} was left"  # swept at the claim
    a = read_spikes(ref / "simulate/emulator/spikes.h5")
    b = read_spikes(run / "simulate/emulator/spikes.h5")
    assert a.layers.keys() == b.layers.keys() and all(np.array_equal(a.layers[k], b.layers[k]) for k in a.layers)
    ja, jb = (json.loads((d / "simulate/emulator/simulate.json").read_text()) for d in (ref, run))
    assert ja["accuracy"] == jb["accuracy"] and ja["firing_rate"] == jb["firing_rate"]


def test_artefact_checks_accept_every_kind_of_link(tmp_path):
    """The checks refuse tampered artefacts (the table) but accept a real residual plan with
    every kind of link: delayed identity skip, pooled skip, pooled conv, dense."""
    from test_lava_deploy import residual_graph

    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.export.quantize import quantize
    from htakl_deploy.hw.artefact_check import read_plan
    from htakl_deploy.hw.plan import plan_from_quantized

    plan = plan_from_quantized(quantize(residual_graph()))
    assert any(link.delay > 0 for link in plan.links) and {link.kind for link in plan.links} >= {"input", "sparse"}
    plan.metadata.update({"config": DistillConfig().to_dict(), "timesteps": 4})
    again = read_plan(plan.save(tmp_path / "p.lava.npz"))
    assert [(k.name, k.kind, k.delay) for k in again.links] == [(k.name, k.kind, k.delay) for k in plan.links]


# ------------------------------------------------------------------ a file that lies about its size
def write_lying_nir(path: Path) -> Path:
    """A 55 KB NIR graph (8×8 digits → dense → LIF → dense) whose first weight declares 32 × 31,250,000
    float32 (10⁹ elements, 4 GB) and holds none of them (gzip chunks never written: HDF5 would read
    zeros). Before issue 29, ``export`` reached 5.3 GB resident in 40 s (11.6 GB with the issue's
    file) and reported a MemoryError or a shape mismatch."""
    import h5py
    import nir

    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type=np.array([1, 8, 8])),
             "flat": nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0, end_dim=-1),
             "fc1": nir.Affine(weight=rng.normal(size=(32, 64)).astype(np.float32), bias=np.zeros(32, np.float32)),
             "lif1": nir.LIF(tau=np.full(32, 2e-4), r=np.ones(32), v_leak=np.zeros(32), v_threshold=np.ones(32)),
             "fc2": nir.Affine(weight=rng.normal(size=(10, 32)).astype(np.float32), bias=np.zeros(10, np.float32)),
             "output": nir.Output(output_type=np.array([10]))}
    edges = [("input", "flat"), ("flat", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "output")]
    nir.write(path, nir.NIRGraph(nodes, edges))
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc1/weight"]
        f["node/nodes/fc1"].create_dataset("weight", shape=(32, 31_250_000), dtype=np.float32,
                                           chunks=(1, 1_000_000), compression="gzip")
    return path


PEAK_SCRIPT = r"""
import atexit, sys
def peak():  # the process's own high-water mark (VmHWM starts anew at exec; ru_maxrss does not)
    with open("/proc/self/status") as fh:
        sys.stdout.write(next(line for line in fh if line.startswith("VmHWM:")))
atexit.register(peak)
from htakl_deploy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_export_refuses_a_lying_nir_file_in_little_memory(tmp_path):
    """The memory bomb: refused naming the dataset, with a peak (the whole process's VmHWM) under
    200 MB — the file is checked before torch is imported."""
    path = write_lying_nir(tmp_path / "lying.nir")
    assert path.stat().st_size < 64 * 1024
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "export", str(path), "--target", "nir", "--data",
                           "digits"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    peak_mb = int(proc.stdout.split("VmHWM:")[1].split()[0]) / 1024
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "'/node/nodes/fc1/weight' declares (32, 31250000) float32" in lines[0] and "lies about its size" in lines[0]
    assert not (tmp_path / "lying-export").exists()
    assert peak_mb < 200, f"export peaked at {peak_mb:.0f} MB on a file that lies about its size"


def test_the_safety_page_counts_every_case():
    """docs/SAFETY.md's counts are written by ``run_all.py --docs``: they must cover the whole table."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "SAFETY.md").read_text(encoding="utf-8")
    block = text.split("<!-- bad-inputs:begin -->")[1].split("<!-- bad-inputs:end -->")[0]
    got = re.search(r"\*\*(\d+) cases\*\*", block)
    assert got and int(got.group(1)) == len(CASES), (
        "docs/SAFETY.md is stale: run `python tests/bad_inputs/run_all.py --docs docs/SAFETY.md`")
