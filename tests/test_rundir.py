"""One writer per run directory (issue 29, item 3): ``htakl_deploy.rundir``.

Races are run with real processes and the real kernel lock: 20 pairs of processes claim one new
run name each at the same instant (0 pairs where both win); two real ``distill --run-name same``
started together (one exit 0, the other exit 2 naming the winner's pid, one seed's metrics in
``metrics.jsonl``); a folder under a live claim refused until its owner dies, even by SIGKILL.
The slow marker runs the 20 pairs as real ``distill`` commands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "htakl_deploy"]
QUICK = ["--no-progress", "--epochs", "1", "--teacher-epochs", "1", "--limit-train", "64", "--limit-test", "8",
         "--batch-size", "32", "--method", "ce"]

# a process that claims RUN as a new run at time START, writes its config, keeps it 0.3 s
CLAIMER = r"""
import json, os, sys, time
from htakl_deploy.rundir import claim
from htakl_deploy.errors import UserError
run, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
try:
    held = claim(run, "--out-dir", new_run=True).acquire()
except UserError as e:
    print("refused", e)
    sys.exit(2)
with open(os.path.join(run, "config.json"), "w") as f:
    json.dump({"pid": os.getpid()}, f)
time.sleep(0.3)
held.release()
print("won")
"""


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_twenty_pairs_claiming_one_name_have_one_winner_each(tmp_path):
    start = time.time() + 1.5  # every process spins until this instant, then claims
    procs = []
    for i in range(20):
        for _ in range(2):
            procs.append((i, subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path / f"r{i}"), str(start)],
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())))
    results: dict[int, list[tuple[int, str]]] = {}
    for i, p in procs:
        out, err = p.communicate(timeout=120)
        results.setdefault(i, []).append((p.returncode, out + err))
    doubles = [i for i, r in results.items() if sorted(rc for rc, _ in r) != [0, 2]]
    assert doubles == [], {i: results[i] for i in doubles}
    for i, r in results.items():
        loser = next(text for rc, text in r if rc == 2)
        assert "is being written by pid" in loser or "already holds a run" in loser, loser
        winner_pid = json.loads((tmp_path / f"r{i}" / "config.json").read_text())["pid"]
        if "being written" in loser:
            assert f"pid {winner_pid} " in loser
        assert not list(tmp_path.glob(".*.htakl-lock")), "a lock file outlived its claim"


def test_two_distills_on_one_name_one_runs(tmp_path):
    """Before: in 2 of 4 pairs both exited 0 and metrics.jsonl interleaved both seeds."""
    procs = [subprocess.Popen([*CLI, "distill", *QUICK, "--seed", str(seed), "--out-dir", str(tmp_path),
                               "--run-name", "same"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for seed in (1, 2)]
    outs = [(p.pid, *p.communicate(timeout=600), p.returncode) for p in procs]
    assert sorted(rc for *_, rc in outs) == [0, 2], outs
    winner = next(o for o in outs if o[3] == 0)
    loser = next(o for o in outs if o[3] == 2)
    lines = loser[2].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in loser[2], loser[2]
    assert f"pid {winner[0]} " in lines[0] or "already holds a run" in lines[0], lines[0]
    cfg = json.loads((tmp_path / "same" / "config.json").read_text())
    seed = cfg["seed"]
    assert procs[[1, 2].index(seed)].pid == winner[0], "config.json names the loser's seed"
    assert json.loads((tmp_path / "same" / "summary.json").read_text())["run_dir"] == str(tmp_path / "same")
    epochs = [json.loads(line) for line in (tmp_path / "same" / "student" / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert len([e for e in epochs if e.get("kind") == "epoch"]) == 1, epochs  # one training wrote here


def test_a_folder_below_a_live_claim_is_refused_until_its_owner_dies(tmp_path, capsys):
    from htakl_deploy.errors import UserError
    from htakl_deploy.rundir import claim

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom htakl_deploy.rundir import claim\n"
                               f"claim({str(run)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        for folder in (run, run / "export", run / "simulate" / "emulator"):
            with pytest.raises(UserError, match=f"{run} is being written by pid {holder.pid} "):
                with claim(folder, "--out"):
                    pass
        assert sorted(p.name for p in run.iterdir()) == [], "a refused claim created a folder"
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait()
        with claim(run / "export", "--out") as c:  # the dead owner's lock file does not block
            assert c.created == run / "export"
        with claim(run) as c:  # its stale lock file is reused, then removed
            assert c.folder == run
        assert not (tmp_path / ".run.htakl-lock").exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_claims_are_reentrant_and_a_failed_command_leaves_no_folder(tmp_path):
    from htakl_deploy.rundir import claim

    run = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError):
        with claim(run, new_run=True):
            with claim(run) as inner:  # the same process again: the same claim
                assert inner.count == 2
            (run / "x.json").write_text("{}")
            raise RuntimeError("a stage failed")
    assert not (tmp_path / "a").exists(), "the folders the claim created were left behind"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C keeps what is there (the command can be re-run)
        with claim(run):
            raise KeyboardInterrupt
    assert run.is_dir()
    keep = claim(run / "sub", keep=lambda d: (d / "last.pt").exists()).acquire()
    (run / "sub" / "last.pt").write_bytes(b"x")
    keep.release(failed=True)
    assert (run / "sub" / "last.pt").exists(), "a checkpoint to resume from was removed"


@pytest.mark.slow
def test_twenty_pairs_of_real_distills(tmp_path):
    """20 pairs of real ``distill --run-name same`` commands, four pairs at a time: 0 double wins."""
    doubles, results = [], []
    for group in range(5):
        procs = []
        for i in range(group * 4, group * 4 + 4):
            procs += [(i, subprocess.Popen([*CLI, "distill", *QUICK, "--epochs", "1", "--out-dir", str(tmp_path),
                                            "--run-name", f"r{i}"], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True, env=_env())) for _ in range(2)]
        by_pair: dict[int, list[int]] = {}
        for i, p in procs:
            p.communicate(timeout=900)
            by_pair.setdefault(i, []).append(p.returncode)
        results += list(by_pair.values())
        doubles += [i for i, rcs in by_pair.items() if sorted(rcs) != [0, 2]]
    assert len(results) == 20 and doubles == [], results
