"""The NIR paper's own graphs through htakl-deploy: export → emulator = Lava ``fixed_pt`` on every
spike, decisions against the graph's float run (ours, and Norse 1.1.0's importer), on event inputs
generated here. Writes ``bench/results_archive/nir_paper.json`` and the table in docs/NIR.md.

The graphs are those of Pedersen et al., "Neuromorphic intermediate representation: A unified
instruction set for interoperable brain-inspired computing", Nature Communications 2024
(arXiv:2311.14641), in the repository neuromorphs/NIR, folder ``paper/``. They are not part of this
repository (a workplace rule: nothing fetched from another repository is committed); this script
reads them from ``--paper``: a checkout's ``paper/`` folder or a bare git snapshot (default: the one
under /work/.mirror, read with ``git show``). The N-MNIST and Braille data are not available offline:
the inputs are event streams generated here (``nmnist_like``, ``braille_like``), so accuracies on the
data sets cannot be measured; what is measured is whether the deployed network computes what the
graph means on event inputs of the same shape and rate.

    python bench/nir_paper.py                       # all four graphs: the JSON + docs/NIR.md
    python bench/nir_paper.py --graphs cnn --samples 16 --lava-samples 2 --no-docs
    python bench/nir_paper.py --memory --no-docs   # peak memory of the CNN's 64 × 300-step calibration, simulate

The functions here (``compare``, the input generators, ``norse_run``) are also what the default test
run uses on equivalent graphs written by Sinabs', snnTorch's and Rockpool's own exporters
(tests/test_wild.py); ``pytest -m nir_paper`` runs this on the real files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SNAPSHOT = Path("/work/.mirror/neuromorphs+NIR/repo")
ROOT = Path(__file__).resolve().parent.parent
# name → (file under paper/, dt (s) its exporter used, --reset, input generator, T, what the paper reports)
GRAPHS = {
    "cnn": ("02_cnn/cnn_sinabs.nir", 1.0, None, "nmnist_like", 300, "02_cnn"),
    "braille_zero": ("03_rnn/braille_noDelay_bias_zero.nir", 1e-4, None, "braille_like", 256, "03_rnn"),
    "braille_subtract": ("03_rnn/braille_noDelay_noBias_subtract.nir", 1e-4, ["subtract"], "braille_like", 256,
                         "03_rnn"),
    "lif": ("01_lif/lif_norse.nir", 1e-4, None, "current_steps", 100, None),
}


# -- inputs ---------------------------------------------------------------------------------


def nmnist_like(samples: int, steps: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N-MNIST-shaped event frames ``[T, B, 2, 34, 34]`` (0/1/2 events per 1 ms bin) and labels: a
    random stroke pattern per class, seen through three saccades (N-MNIST moves the sensor in three
    ~100 ms saccades), ON events at leading edges and OFF at trailing ones. Not digits."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(10):
        m = np.zeros((34, 34), bool)
        y, x = 17, 17
        for _ in range(60):
            y, x = np.clip(y + rng.integers(-1, 2), 6, 27), np.clip(x + rng.integers(-1, 2), 6, 27)
            m[y - 1:y + 2, x - 1:x + 2] = True
        shapes.append(m)
    labels = rng.integers(0, 10, samples)
    out = np.zeros((steps, samples, 2, 34, 34), np.uint8)
    for b, k in enumerate(labels):
        prev = shapes[k]
        for t in range(steps):
            phase = 3 * t // steps
            d = (t % max(1, steps // 3)) / max(1, steps // 3)
            dy, dx = [(round(3 * d), round(2 * d)), (round(3 - 3 * d), round(2 + d)), (0, round(3 - 3 * d))][phase]
            cur = np.roll(np.roll(shapes[k], dy, 0), dx, 1)
            keep = rng.random((2, 34, 34)) < 0.5
            out[t, b, 0] = (cur & ~prev) & keep[0]
            out[t, b, 1] = (prev & ~cur) & keep[1]
            out[t, b] += (rng.random((2, 34, 34)) < 0.002)  # sensor noise: a second event in a few bins
            prev = cur
    return out, labels


def braille_like(samples: int, steps: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Braille-shaped inputs ``[T, B, 12]`` (12 taxels, one 0/1 event per 5 ms step, as the paper's
    data after its OR of ON/OFF events) and labels of 7 classes: each class presses its own taxels
    in its own order while sliding, with jitter and noise."""
    rng = np.random.default_rng(seed)
    plans = [rng.choice(12, size=rng.integers(3, 7), replace=False) for _ in range(7)]
    labels = rng.integers(0, 7, samples)
    out = (rng.random((steps, samples, 12)) < 0.005).astype(np.uint8)
    for b, k in enumerate(labels):
        for j, taxel in enumerate(plans[k]):
            start = int(steps * (0.1 + 0.1 * j)) + rng.integers(-4, 5)
            for t in range(max(0, start), min(steps, start + 40)):
                if rng.random() < 0.5:
                    out[t, b, taxel] = 1
    return out, labels


def current_steps(samples: int, steps: int = 100, seed: int = 0) -> tuple[np.ndarray, None]:
    """``[T, B, 1]`` spike trains into the one-neuron LIF graph (its input is an affine of one value):
    regular spike trains at rates 5-50 %, one per sample; no classes."""
    rates = np.linspace(0.05, 0.5, samples)
    t = np.arange(steps)[:, None]
    return (np.floor((t + 1) * rates) > np.floor(t * rates)).astype(np.uint8)[:, :, None], None


INPUTS = {"nmnist_like": nmnist_like, "braille_like": braille_like, "current_steps": current_steps}


# -- the float run of another framework -------------------------------------------------------


def norse_run(nir_path: Path, x_tb: np.ndarray, dt: float, reset: list[str] | None) -> np.ndarray:
    """Norse 1.1.0's importer (``norse.torch.from_nir``, reset by subtraction where ours subtracts) run
    step by step on ``x`` → output ``[T, B, K]``. A ``Flatten`` with ``start_dim = 0`` (Sinabs writes
    it) is read as ``-3``: Norse would flatten the batch otherwise."""
    import nir
    import norse.torch as norse
    from norse.torch.functional import reset as norse_reset

    g = nir.read(nir_path, type_check=False)
    for node in g.nodes.values():
        if isinstance(node, nir.Flatten) and int(node.start_dim) == 0:
            node.start_dim = -len(np.asarray(node.input_type["input"]).reshape(-1))
    method = norse_reset.reset_subtract if reset and "subtract" in reset else norse_reset.reset_value
    net = norse.from_nir(g, dt=dt, reset_method=method, ignore_warnings=True)
    x = torch.from_numpy(np.asarray(x_tb, dtype=np.float32))
    outs, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = net(x[t]) if state is None else net(x[t], state)
            outs.append(out)
    return torch.stack(outs).double().numpy()


# -- one graph ---------------------------------------------------------------------------------


def decisions(out_tb: np.ndarray) -> np.ndarray:
    """The class of each sample: argmax of the output summed over time (spike counts for a spiking
    last layer; first index on ties)."""
    return np.asarray(out_tb).sum(0).argmax(-1)


def compare(nir_path: Path, x_tb: np.ndarray, labels: np.ndarray | None, *, dt: float, reset: list[str] | None,
            lava_samples: int, norse: bool = True) -> dict:
    """Export ``nir_path`` (``--dt dt --reset reset``) and run ``x_tb`` ``[T, B, ...]`` through the emulator,
    the graph's float run (ours; Norse's importer with ``norse``) and, on the first ``lava_samples``,
    Lava ``fixed_pt``. Returns one row: spikes compared and whether Lava = emulator on each, per-layer
    spike counts, decision agreements, accuracies if ``labels``."""
    from htakl_deploy.export.graph import run_float
    from htakl_deploy.export.nir_in import load_nir_graph
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.plan import plan_from_quantized

    t0 = time.perf_counter()
    graph, q = load_nir_graph(nir_path, dt, reset)
    plan = plan_from_quantized(q)
    row = {"file": nir_path.name, "dt_s": dt, "reset": reset or ["zero"], "timesteps": int(x_tb.shape[0]),
           "samples": int(x_tb.shape[1]), "populations": len(plan.populations),
           "recurrent": sorted({k.dst for k in plan.links if k.src == k.dst}),
           "warnings": list(graph.metadata.get("warnings", [])) + q.warnings()}
    emu = emulate(plan, x_tb, batch_size=16)
    row["spikes"] = {k: int(np.count_nonzero(v)) for k, v in emu.spikes.items()}
    with torch.no_grad():
        f_out, vals = run_float(graph, torch.from_numpy(np.asarray(x_tb, dtype=np.float64)), record=True)
    f_out = f_out.numpy()
    row["float_spikes"] = {k: int(vals[k].sum()) for k in row["spikes"]}
    row["float_spike_agreement"] = float(np.mean([np.mean(emu.spikes[k] == (vals[k].numpy() > 0.5))
                                                  for k in emu.spikes]))
    del vals
    pred = {"int": decisions(emu.logits), "float": decisions(f_out)}
    if norse:
        pred["norse"] = decisions(norse_run(nir_path, x_tb, dt, reset))
    row["decisions"] = {f"{a}_vs_{b}": float(np.mean(pred[a] == pred[b]))
                        for a, b in (("int", "float"), ("float", "norse"), ("int", "norse")) if b in pred}
    if labels is not None:
        row["accuracy"] = {k: float(np.mean(v == labels)) for k, v in pred.items()}
    if lava_samples:
        lava = run_lava(plan, x_tb[:, :lava_samples])
        same = all(np.array_equal(lava.spikes[k], emu.spikes[k][:, :lava_samples]) for k in emu.spikes)
        row["lava"] = {"samples": lava_samples, "equal": bool(same and np.array_equal(
            lava.readout_u, emu.readout_u[:, :lava_samples])),
            "spikes_compared": int(sum(np.count_nonzero(v) for v in lava.spikes.values()))}
    row["wall_s"] = time.perf_counter() - t0
    return row


# -- the paper's files -------------------------------------------------------------------------


def paper_file(paper: Path, rel: str, tmp: Path) -> Path:
    """``paper/<rel>`` from a checkout's paper folder (or the repository root holding it), or from a
    bare git snapshot (``git show HEAD:paper/<rel>``, written into ``tmp``)."""
    for cand in (paper / rel, paper / "paper" / rel):
        if cand.is_file():
            return cand
    out = tmp / Path(rel).name
    data = subprocess.run(["git", "-C", str(paper), "show", f"HEAD:paper/{rel}"], capture_output=True, check=True)
    out.write_bytes(data.stdout)
    return out


def reported(paper: Path, folder: str | None, tmp: Path) -> dict[str, float]:
    """The per-platform accuracies the paper's repository stores (``paper/<folder>/*_accuracy*.npy``),
    as fractions; {} where unreadable."""
    if folder is None:
        return {}
    out = {}
    try:
        if (paper / folder).is_dir() or (paper / "paper" / folder).is_dir():
            root = paper / folder if (paper / folder).is_dir() else paper / "paper" / folder
            files = {f.name: f for f in root.glob("*accuracy*.npy")}
        else:
            names = subprocess.run(["git", "-C", str(paper), "ls-tree", "--name-only", f"HEAD:paper/{folder}"],
                                   capture_output=True, text=True, check=True).stdout.split()
            files = {n: paper_file(paper, f"{folder}/{n}", tmp) for n in names if "accuracy" in n and n.endswith(".npy")}
        for name, path in sorted(files.items()):
            value = float(np.load(path, allow_pickle=False))
            out[name[:-len(".npy")]] = value / 100 if value > 1 else value
    except (subprocess.CalledProcessError, OSError, ValueError):
        return out
    return out


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """(peak resident memory in MB, wall seconds) of one ``htakl-deploy`` command, run as a child process
    (its own peak: ``getrusage(RUSAGE_CHILDREN)`` of a fresh interpreter that runs only it)."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t, rc)")
    cli = str(Path(sys.executable).with_name("htakl-deploy"))
    out = subprocess.run([sys.executable, "-c", code, cli, *argv], capture_output=True, text=True, check=True)
    mb, wall, rc = out.stdout.split()[-3:]
    if rc != "0":
        raise RuntimeError(f"htakl-deploy {' '.join(argv)} failed: {out.stderr[-400:]}")
    return float(mb), float(wall)


def memory(paper: Path, tmp: Path, samples: int = 64, steps: int = 300) -> dict:
    """Peak memory of the NIR paper CNN on ``samples`` × ``steps`` event inputs: ``export --calibration``
    and ``simulate --backend emulator --input`` (each a child process, measured alone)."""
    path = paper_file(paper, GRAPHS["cnn"][0], tmp)
    x, labels = nmnist_like(samples, steps)
    np.savez(tmp / "events.npz", inputs=x, labels=labels)
    out = {"samples": samples, "timesteps": steps}
    out["calibration_mb"], out["calibration_s"] = peak_rss_mb(
        ["export", str(path), "--target", "lava", "--dt", "1", "--calibration", str(tmp / "events.npz"), "--no-eval",
         "--lava-check", "0", "--out", str(tmp / "cnn_sinabs-export")])
    out["simulate_mb"], out["simulate_s"] = peak_rss_mb(
        ["simulate", str(tmp / "cnn_sinabs-export"), "--backend", "emulator", "--input", str(tmp / "events.npz"), "--out",
         str(tmp / "sim")])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", type=Path, default=Path(os.environ.get("NIR_PAPER", SNAPSHOT)),
                   help="the neuromorphs/NIR paper folder, its repository, or a bare snapshot (env NIR_PAPER)")
    p.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--lava-samples", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_archive" / "nir_paper.json")
    p.add_argument("--no-docs", dest="docs", action="store_false", help="do not rewrite docs/NIR.md's table")
    p.add_argument("--memory", action="store_true",
                   help="measure only the peak memory of the CNN's 64 × 300-step calibration and simulate (kept in --out)")
    args = p.parse_args(argv)
    rows = {}
    if args.memory:
        old = json.loads(args.out.read_text()) if args.out.is_file() else {"graphs": {}}
        with tempfile.TemporaryDirectory() as tmp:
            old["memory"] = {**memory(args.paper, Path(tmp)), "load_avg": os.getloadavg()}
        print(json.dumps(old["memory"]), file=sys.stderr)
        args.out.write_text(json.dumps(old, indent=1) + "\n")
        if args.docs and old.get("graphs"):
            write_table(old, ROOT / "docs" / "NIR.md")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.graphs:
            rel, dt, reset, gen, steps, folder = GRAPHS[name]
            path = paper_file(args.paper, rel, Path(tmp))
            x, labels = INPUTS[gen](args.samples, steps)
            print(f"{name}: {rel}, {args.samples} samples × {steps} steps of {gen} inputs", file=sys.stderr)
            rows[name] = {**compare(path, x, labels, dt=dt, reset=reset, lava_samples=args.lava_samples),
                          "inputs": gen, "paper": reported(args.paper, folder, Path(tmp))}
            print(json.dumps(rows[name], indent=1), file=sys.stderr)
    load = os.getloadavg()
    result = {"source": str(args.paper), "load_avg": load, "graphs": rows}
    if args.out.is_file() and "memory" in json.loads(args.out.read_text()):
        result["memory"] = json.loads(args.out.read_text())["memory"]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.docs:
        write_table(result, ROOT / "docs" / "NIR.md")
    return 0


BEGIN, END = "<!-- nir_paper table: bench/nir_paper.py writes it -->", "<!-- end nir_paper table -->"


def table(result: dict) -> str:
    """The docs table of ``result`` (``bench/results_archive/nir_paper.json``)."""
    head = ("| graph | T × samples | populations (recurrent) | Lava fixed_pt = emulator | spikes (emulator) | "
            "decisions int = float | float = Norse | reported accuracy per platform (paper repository) |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in result["graphs"].items():
        lava = r.get("lava", {})
        lava_s = (f"{'yes' if lava.get('equal') else 'NO'} ({lava.get('samples')} samples, "
                  f"{lava.get('spikes_compared')} spikes)") if lava else "not run"
        paper = ", ".join(f"{k.split('_accuracy')[0]} {100 * v:.2f} %" for k, v in r.get("paper", {}).items()
                          if name.split("_")[-1] in k or name == "cnn") or "—"
        dec = r["decisions"]
        lines.append(f"| {name} ({r['file']}, dt {r['dt_s']:g} s, reset {'/'.join(r['reset'])}) | "
                     f"{r['timesteps']} × {r['samples']} | {r['populations']} ({', '.join(r['recurrent']) or '—'}) | "
                     f"{lava_s} | {sum(r['spikes'].values())} | {100 * dec['int_vs_float']:.1f} % | "
                     f"{100 * dec.get('float_vs_norse', float('nan')):.1f} % | {paper} |")
    lines.append(f"\nMeasured with `python bench/nir_paper.py` (load average {result['load_avg'][0]:.1f}).")
    m = result.get("memory")
    if m:
        lines.append(f"Memory on long inputs (`python bench/nir_paper.py --memory`, load average {m['load_avg'][0]:.1f}): "
                     f"the CNN's calibration on {m['samples']} samples × {m['timesteps']} steps peaks at "
                     f"{m['calibration_mb']:.0f} MB ({m['calibration_s']:.0f} s), `simulate --backend emulator` on them "
                     f"at {m['simulate_mb']:.0f} MB ({m['simulate_s']:.0f} s).")
    return "\n".join(lines)


def write_table(result: dict, doc: Path) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + table(result) + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
