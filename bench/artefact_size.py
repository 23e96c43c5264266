"""Benchmark: the Lava artefact's size, its load, and ``simulate``'s peak memory — this tree's
artefact format against the code of a baseline commit, side by side in one run.

On a paper-scale student (default ResNet-19 at 10 % firing, ``paper_runs.make_run``), for each
variant — this tree, and the package as it was at ``--baseline REF`` (``git archive`` of REF into
a temporary folder, imported through a package tree of symlinks, so both run in this venv) — each
step in a fresh process (``memory.in_fresh_process``):

1. ``export``: the artefact written from the run's checkpoint (``run_export(targets=["nir", "lava"])``
   into the variant's own folder); its size in bytes per kind of member (integer weights, float
   weights, sparse indices, biases, header: each ``.npy`` member is stored uncompressed);
2. ``load``: ``read_artefact`` alone (imports done) — its wall time, the resident memory it leaves
   (the plan) and its peak (the kernel's VmHWM, reset after imports): peak − resident = transient
   copies while reading;
3. ``simulate``: ``simulate(backend="emulator", samples=N, batch_size=B, compare=False)`` on the
   variant's artefact — its peak and wall time (imports done).

Steps 2 and 3 repeat ``--repeats`` times, the variants interleaved (A, B, A, B, …); medians, and
the 1-minute load average beside every figure. "8-bit synapses": the weights the chip holds, one
byte each on Loihi — every kernel tap plus every non-zero of a stored matrix (``synapse_count``);
the goal (issue 30) is an artefact within ×1.5 of that many bytes.

Run (heavy: under ``flock /work/coord/heavy.lock``): ``python bench/artefact_size.py [--model
resnet19] [--samples 256] [--batch-size 64] [--repeats 3] [--baseline REF] [--json out.json]``
(baseline default: ``FORMAT_1_COMMIT``, the last commit writing the previous format);
``bench/perf_md.py --artefact out.json`` writes the section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMAT_1_COMMIT = "8498ed4"  # the last main commit writing htakl-lava-plan/1 (int64 + float64 weights)
PACKAGE_DIRS = {"distill": "distill", "export": "export", "hw": "hw", "energy": "energy"}
KINDS = (("header", r"^header$"), ("biases", r"^pop\d+\.(bias_mant|f_bias)$"),
         ("float weights", r"^link\d+\.(f_weight|f|f\.data)$"), ("indices", r"\.(indices|indptr)$"),
         ("integer weights", r"^link\d+\.(weight|m|m\.data)$"))


def member_bytes(path: str | Path) -> dict[str, int]:
    """Bytes of the artefact's members by kind (``KINDS``; anything else under "other")."""
    out = {k: 0 for k, _ in KINDS} | {"other": 0}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename.removesuffix(".npy")
            kind = next((k for k, pattern in KINDS if re.search(pattern, name)), "other")
            out[kind] += info.file_size
    return out


def synapse_count(plan) -> int:
    """Weights the chip holds: kernel taps of every kernel link, non-zeros of every matrix link."""
    import numpy as np

    return sum(int(np.asarray(link.conv["weight"]).size) if link.conv is not None else int(link.matrix.nnz)
               for link in plan.links)


def baseline_tree(ref: str, root: Path) -> tuple[str, Path]:
    """The package at git ``ref`` under ``root`` (``git archive``), and a folder to put first on
    PYTHONPATH that imports it as ``htakl_deploy`` (symlinks mirroring the package-dir mapping)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    src = root / f"src-{sha}"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "htakl_deploy", *PACKAGE_DIRS],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = root / f"pkg-{sha}" / "htakl_deploy"
    pkg.mkdir(parents=True)
    for f in (src / "htakl_deploy").iterdir():
        (pkg / f.name).symlink_to(f)
    for sub, folder in PACKAGE_DIRS.items():
        (pkg / sub).symlink_to(src / folder)
    return sha, pkg.parent


def one(step: str, run_dir: str, artefact: str, samples: int, batch: int, out: str, data_root: str | None) -> dict:
    """One step of one variant, in this (fresh) process; the variant is whichever ``htakl_deploy``
    this interpreter imports."""
    import htakl_deploy
    from htakl_deploy.memory import peak_memory

    res: dict = {"package": str(Path(htakl_deploy.__file__).resolve().parent.parent), "load_before": os.getloadavg()[0]}
    t0 = time.perf_counter()

    def timed(step_fn):  # the step alone, imports done: its seconds in res["step_s"]
        def run() -> None:
            t = time.perf_counter()
            step_fn()
            res["step_s"] = time.perf_counter() - t
        return run

    if step == "export":
        from htakl_deploy.export.pipeline import run_export

        import numpy as np

        run_export(run_dir, ["nir", "lava"], Path(artefact).parent, lava_check=0, evaluate=False)
        with np.load(artefact, allow_pickle=False) as z:
            res["format"] = json.loads(z["header"].tobytes())["format"]
        res |= {"file_bytes": os.path.getsize(artefact), "members": member_bytes(artefact)}
    elif step == "load":
        from htakl_deploy.hw.simulate import read_artefact

        plans = []
        mem = peak_memory(timed(lambda: plans.append(read_artefact(Path(artefact)))))
        res |= mem | {"rss_after_mb": _rss_mb(), "synapses": synapse_count(plans[0])}
    else:
        from htakl_deploy.hw.simulate import simulate

        got: dict = {}
        mem = peak_memory(timed(lambda: got.update(simulate(artefact, backend="emulator", samples=samples,
                                                            batch_size=batch, out_dir=out, compare=False,
                                                            data_root=data_root))))
        res |= mem | {"accuracy": got["accuracy"], "emulator_s": got["wall_s"],
                      "spikes_sha": _spikes_digest(Path(out) / "spikes.h5")}
    res["wall_s"] = time.perf_counter() - t0
    res["load_after"] = os.getloadavg()[0]
    return res


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def _spikes_digest(path: Path) -> str:
    """A digest of every recorded spike, the readout decisions and the input: equal digests =
    the two variants' simulations agree spike for spike."""
    import hashlib

    import h5py
    import numpy as np

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                h.update(name.encode())
                h.update(np.ascontiguousarray(obj[()]).tobytes())
        f.visititems(visit)
    return h.hexdigest()[:16]


def _child(pythonpath: Path | None, args: list[str]) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(pythonpath)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"{args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(model: str = "resnet19", samples: int = 256, batch: int = 64, repeats: int = 3,
          baseline: str = FORMAT_1_COMMIT, root: str | None = None, firing: float | None = 0.1,
          run_dir: str | None = None, data: str | None = None) -> dict:
    from paper_runs import data_root, make_run

    root = Path(root or os.path.join(tempfile.gettempdir(), "htakl_bench"))
    run = Path(run_dir) if run_dir else make_run(model, samples, root, firing)
    data = data or (None if run_dir else data_root(run))  # make_run's generated data; a run of yours: its own
    droot = ["--data-root", data] if data else []
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", *PACKAGE_DIRS, "htakl_deploy"],
                                capture_output=True, text=True).stdout.strip())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="artefact_") as tmp:
        sha, pkg = baseline_tree(baseline, Path(tmp))
        variants = [{"label": f"baseline {sha}", "git": sha, "pythonpath": pkg},
                    {"label": f"this tree {head}{' + changes' if dirty else ''}", "git": head, "pythonpath": None}]
        for v in variants:
            v["artefact"] = str(Path(tmp) / v["git"] / ("base" if v["pythonpath"] else "new") / "student.lava.npz")
            v["export"] = _child(v["pythonpath"], ["--one", "export", "--run", str(run), "--artefact", v["artefact"]])
            print(f"{v['label']}: artefact {v['export']['file_bytes'] / 1e6:.1f} MB", flush=True)
            v["load"], v["simulate"] = [], []
        for rep in range(repeats):
            for v in variants:
                args = ["--run", str(run), "--artefact", v["artefact"], "--n", str(samples), "--batch-size", str(batch),
                        "--out", str(Path(tmp) / f"sim-{rep}-{v['git']}-{'base' if v['pythonpath'] else 'new'}"), *droot]
                v["load"].append(_child(v["pythonpath"], ["--one", "load", *args]))
                v["simulate"].append(_child(v["pythonpath"], ["--one", "simulate", *args]))
                ld, sm = v["load"][-1], v["simulate"][-1]
                print(f"  {v['label']}: read {ld['step_s']:.2f} s, +{ld['rss_after_mb'] - ld['rss_before_mb']:.0f} MB "
                      f"resident, peak +{ld['peak_mb'] - ld['rss_before_mb']:.0f} MB; simulate {samples} images peak "
                      f"{sm['peak_mb']:.0f} MB, {sm['step_s']:.0f} s (load {sm['load_before']:.1f})", flush=True)
    for v in variants:
        v.pop("pythonpath")
        v.pop("artefact")
        v["synapses"] = v["load"][0]["synapses"]
        v["median"] = {
            "file_mb": v["export"]["file_bytes"] / 1e6,
            "load_s": statistics.median(x["step_s"] for x in v["load"]),
            "load_resident_mb": statistics.median(x["rss_after_mb"] - x["rss_before_mb"] for x in v["load"]),
            "load_peak_mb": statistics.median(x["peak_mb"] - x["rss_before_mb"] for x in v["load"]),
            "simulate_peak_mb": statistics.median(x["peak_mb"] for x in v["simulate"]),
            "simulate_s": statistics.median(x["step_s"] for x in v["simulate"]),
        }
    old, new = variants[0]["median"], variants[1]["median"]
    synapses = variants[1]["synapses"]
    same = len({x["spikes_sha"] for v in variants for x in v["simulate"]}) == 1
    return {"model": model, "samples": samples, "batch_size": batch, "repeats": repeats, "target_firing": firing,
            "synapses": synapses, "variants": variants, "spikes_identical": same,
            "ratios": {"file": new["file_mb"] / old["file_mb"], "load_s": new["load_s"] / old["load_s"],
                       "simulate_peak": new["simulate_peak_mb"] / old["simulate_peak_mb"],
                       "new_file_over_synapse_bytes": new["file_mb"] * 1e6 / synapses,
                       "old_file_over_synapse_bytes": old["file_mb"] * 1e6 / synapses},
            "load_before": load_before, "load_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet19")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default=FORMAT_1_COMMIT,
                    help=f"git commit whose code writes the baseline artefact (default {FORMAT_1_COMMIT})")
    ap.add_argument("--root", help="where paper_runs.make_run keeps its runs (default: $TMPDIR/htakl_bench)")
    ap.add_argument("--run-dir", help="an existing run directory (with student/) instead of make_run")
    ap.add_argument("--data", metavar="DATA_ROOT", help="its data folder (simulate's --data-root)")
    ap.add_argument("--firing", type=lambda v: None if float(v) < 0 else float(v), default=0.1,
                    help="the student's mean firing rate (paper_runs.set_firing; default 0.1)")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--artefact", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--data-root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.run, args.artefact, args.n or 0, args.batch_size, args.out or "",
                             args.data_root)))
        return None
    r = bench(args.model, args.samples, args.batch_size, args.repeats, args.baseline, args.root, args.firing,
              args.run_dir, args.data)
    q = r["ratios"]
    print(f"artefact new/old ×{q['file']:.3f} ({q['old_file_over_synapse_bytes']:.2f} → "
          f"{q['new_file_over_synapse_bytes']:.2f} bytes per 8-bit synapse, {r['synapses']:,} synapses); "
          f"load time ×{q['load_s']:.2f}; simulate peak ×{q['simulate_peak']:.3f}; spikes identical: "
          f"{r['spikes_identical']}; load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}")
    if args.json:
        from htakl_deploy.atomic import write_json

        write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
