"""Grids and sample shards on a real local Ray cluster (issue 28): no mocks.

- a grid (``run --config`` with ``[grid]``) on a 2-CPU local cluster: a shared teacher trained
  once first, one cell's worker SIGKILLed while it trains (the cell runs again at once and
  continues from its checkpoint: its student equals, bit for bit, its twin's that was not
  killed), cells that raise reported by name with their logs while the others finish (exit 1),
  then the same command again skips what is done without starting Ray;
- Ctrl-C (SIGINT to the process group) and SIGKILL of a running grid command: exit 130 / killed,
  and 5 s later no process of either command's tree, and no cluster folder, is left;
- ``simulate --shards 2`` writes the spike file one process writes, byte for byte (full spikes
  and counts only), with the same numbers in ``simulate.json``; ``energy --shards 2`` counts
  exactly what one process counts;
- without a grid or shards, ``run``/``simulate``/``energy`` never import Ray.

Each local cluster here is private (its own temporary folder, ports chosen by Ray, no dashboard),
so several test runs on one machine do not collide.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import tiny_digits_run
from test_lava_orphans import alive, descendants

CLI = [sys.executable, "-m", "htakl_deploy"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: 4 cells: two that train alike (only their energy preset differs) and two that diverge at once
GRID = """data = "digits"
limit_train = 768
limit_test = 32
batch_size = 64
timesteps = 2
epochs = 6
teacher_epochs = 1
lr = 0.05
lava = false
backends = ["emulator"]
export_targets = ["nir", "lava"]
map_target = "none"
[grid]
preset = ["paper-45nm", "loihi1"]
momentum = [0.9, 1e30]
"""
KILLED, TWIN = "g-presetpaper-45nm-momentum0.9", "g-presetloihi1-momentum0.9"


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended while waiting for {what}: {proc.communicate()}")
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def worker_pid(log: Path) -> int | None:
    """The pid the cell's current attempt runs in (its log's header line)."""
    if not log.is_file():
        return None
    heads = [line for line in log.read_text().splitlines() if line.startswith("--- ")]
    return int(heads[-1].split(" pid ")[1].split()[0]) if heads else None


def student_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "student" / "last.pt", map_location="cpu", weights_only=True)["model"]


def datasets(path: Path) -> dict:
    """Every dataset of an HDF5 file: name → (dtype, shape, chunks, filters, raw chunks)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                chunks = [obj.id.read_direct_chunk(obj.id.get_chunk_info(i).chunk_offset)[1]
                          for i in range(obj.id.get_num_chunks())] if obj.chunks else [obj[()].tobytes()]
                out[name] = (obj.dtype, obj.shape, obj.chunks, obj.compression, chunks)
        f.visititems(visit)
    return out


def test_grid_survives_a_killed_worker_reports_failed_cells_and_skips_done_ones(tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    out = tmp_path / "runs"
    cmd = [*CLI, "run", "--config", "g.toml", "--out-dir", str(out), "--ray-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = out / KILLED
        wait_for(lambda: (victim / "student" / "last.pt").is_file(), 300, "the first student checkpoint", proc)
        pid = worker_pid(victim / "grid.log")
        assert not (victim / "student" / "done.json").exists()  # killed while it trains
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    # the teacher first, once; a line per finished cell; the killed worker's cell run again
    assert stdout.count("[grid] teacher g-teacher: trained") == 1
    assert sum(line.startswith("[grid ") for line in stdout.splitlines()) == 4, stdout
    assert f"[ray] {KILLED[2:]}: its worker died" in stdout
    failed = [line for line in stderr.splitlines() if line.startswith("htakl-deploy: grid cell")]
    assert len(failed) == 2 and all("momentum1e+30" in line and "TrainingDiverged" in line for line in failed), stderr
    for line in failed:  # each names its log, which holds the traceback
        log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
        assert log.is_file() and "Traceback" in log.read_text()
    twin = out / TWIN
    for run in (victim, twin):
        assert json.loads((run / "pipeline.json").read_text())["stages"]["report"]["done"]
        assert json.loads((run / "config.json").read_text())["teacher"] == str(out / "g-teacher" / "teacher" / "last.pt")
    assert not (victim / "teacher").exists() and (out / "g-teacher" / "teacher" / "done.json").is_file()
    # the killed cell continued from its checkpoint: two attempts, every epoch trained once
    log = (victim / "grid.log").read_text()
    assert log.count("--- ") == 2 and "(continuing)" in log
    epochs = [r["epoch"] for r in map(json.loads, (victim / "student" / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4, 5, 6]
    # ... and ends exactly where its twin (never killed, same seed and settings) ends
    a, b = student_weights(victim), student_weights(twin)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (datasets(r / "simulate" / "emulator" / "spikes.h5") for r in (victim, twin))
    assert sa == sb and sum(np.frombuffer(b"".join(c), np.uint8).any() for *_, c in sa.values()) > 0
    # the same command without the diverging cells: everything is done, Ray is not started
    (tmp_path / "g.toml").write_text(GRID.replace("momentum = [0.9, 1e30]", "momentum = [0.9]"))
    again = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already done, skipped") == 2 and "cells to run" not in again.stdout


def _cluster_folders(tree: dict[int, int]) -> set[str]:
    found = set()
    for pid in tree:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for a in args:
            if a.startswith(b"--temp-dir=") or a.startswith(b"--temp_dir="):
                found.add(a.split(b"=", 1)[1].decode())
    return found


def test_stopping_a_grid_leaves_no_process_and_no_cluster_folder(tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) and SIGKILL, each
    to its own grid command while its cells run."""
    (tmp_path / "g.toml").write_text(GRID.replace("momentum = [0.9, 1e30]", "momentum = [0.9]"))
    procs = {}
    for sig in (signal.SIGINT, signal.SIGKILL):
        procs[sig] = subprocess.Popen([*CLI, "run", "--config", "g.toml", "--out-dir", str(tmp_path / sig.name),
                                       "--ray-cpus", "2"], cwd=tmp_path, env=ENV, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        trees = {}
        for sig, p in procs.items():
            wait_for(lambda: (tmp_path / sig.name / "g-teacher" / "grid.log").is_file(), 300, "a task", p)
            trees[sig] = descendants(p.pid)
        folders = {sig: _cluster_folders(tree) for sig, tree in trees.items()}
        os.killpg(procs[signal.SIGINT].pid, signal.SIGINT)
        os.kill(procs[signal.SIGKILL].pid, signal.SIGKILL)
        _, err = procs[signal.SIGINT].communicate(timeout=120)
        procs[signal.SIGKILL].wait(timeout=30)
        time.sleep(5.0)
        assert procs[signal.SIGINT].returncode == 130 and "run the same command again" in err, err
        assert all(len(tree) >= 5 for tree in trees.values()), trees  # Ray's processes were up
        assert {sig.name: alive(tree) for sig, tree in trees.items()} == {"SIGINT": [], "SIGKILL": []}
        assert all(len(f) == 1 for f in folders.values()), folders
        assert [f for fs in folders.values() for f in fs if Path(f).exists()] == []
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


# ----------------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from htakl_deploy.export.pipeline import run_export

    run = tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=256, limit_test=23, epochs=2,
                          teacher_epochs=1)
    run_export(run, ["nir", "lava"], lava_check=0, evaluate=False)
    return run


@pytest.fixture(scope="module")
def session():
    """One local 2-CPU cluster for the shard tests (``ray_session`` uses a session it finds)."""
    from htakl_deploy.cluster import ray_session

    with ray_session(cpus=2) as s:
        yield s


TIMINGS = ("wall_s", "total_wall_s", "samples_per_s", "shards", "shard_wall_s", "ray_start_s", "out_dir")


@pytest.mark.parametrize("record", ["spikes", "counts"])
def test_sharded_simulate_writes_the_one_process_file(run_dir, session, tmp_path, record):
    from htakl_deploy.hw.simulate import simulate

    one = simulate(run_dir, backend="emulator", batch_size=5, record=record, out_dir=tmp_path / "one")
    two = simulate(run_dir, backend="emulator", batch_size=5, record=record, out_dir=tmp_path / "two", shards=2)
    a, b = ((tmp_path / d / "spikes.h5").read_bytes() for d in ("one", "two"))
    assert a == b  # the whole file, byte for byte
    assert two["shards"] == 2 and len(two["shard_wall_s"]) == 2 and "shards" not in one
    assert {k: v for k, v in one.items() if k not in TIMINGS} == {k: v for k, v in two.items() if k not in TIMINGS}
    assert one["float_student"]["spike_agreement"]["all"] > 0.5 and sum(one["firing_rate"].values()) > 0
    assert not (tmp_path / "two" / ".shards").exists()


def test_sharded_simulate_cli_and_sharded_energy_count_alike(run_dir, session, tmp_path):
    from htakl_deploy.cli import main

    assert main(["simulate", str(run_dir), "--backend", "emulator", "--batch-size", "4", "--out", str(tmp_path / "a"),
                 "--shards", "3", "--json"]) == 0
    assert main(["simulate", str(run_dir), "--backend", "emulator", "--batch-size", "4", "--out",
                 str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "spikes.h5").read_bytes() == (tmp_path / "b" / "spikes.h5").read_bytes()
    graph = str(run_dir / "export" / "student_quant.nir")
    reports = {}
    for shards, nb in ((None, "all"), ("2", "all"), (None, "7"), ("3", "7")):  # all samples; 7 spread ones
        out = tmp_path / f"e-{shards}-{nb}.json"
        assert main(["energy", str(tmp_path / "a" / "spikes.h5"), "--graph", graph, "--json-out", str(out),
                     "--neurobench-samples", nb, *(["--shards", shards] if shards else [])]) == 0
        reports[shards, nb] = json.loads(out.read_text())
    for nb in ("all", "7"):
        one, split = reports[None, nb], reports["2" if nb == "all" else "3", nb]
        assert one == split and one["totals"]["neurobench_eff_acs"] > 0 and one["totals"]["acs"] > 0
    assert reports[None, "7"]["neurobench_samples"] == 7 < reports[None, "all"]["neurobench_samples"]


def test_without_grid_or_shards_ray_is_never_imported(run_dir, tmp_path):
    runs = [["simulate", str(run_dir), "--backend", "emulator", "--out", str(tmp_path / "s")],
            ["energy", str(tmp_path / "s" / "spikes.h5"), "--graph", str(run_dir / "export" / "student_quant.nir")],
            ["run", "--help"], ["simulate", "--help"], ["energy", "--help"]]
    code = (f"import sys; from htakl_deploy.cli import main; rcs = [main(a) for a in {runs!r}]; "
            "assert 'ray' not in sys.modules, 'ray imported'; print(rcs)")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("[0, 0, 0, 0, 0]"), proc.stderr
    assert proc.stdout.count("--ray-address") >= 3  # the flags are there, Ray is not


def test_the_emulator_leaves_torch_threads_as_they_were():
    """A 1-CPU cell or shard sets torch to 1 thread; numba's first parallel call starts its OpenMP
    layer, which reset the process's OpenMP count (torch's) to every core — the next cell trained
    on 2 threads and its weights differed from a fresh process's in the last bits."""
    code = ("import torch; torch.set_num_threads(1)\n"
            "from htakl_deploy.hw.lif_ref import numba_threads\n"
            "with numba_threads():\n    inside = torch.get_num_threads()\n"
            "print(inside, torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")})
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "1"], (proc.stdout, proc.stderr)
