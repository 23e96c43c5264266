"""Benchmark: our Loihi 2 model against Intel's PilotNet LIF compile and measurement.

Reads Intel's files from a lava-dl snapshot (a bare git repository; default the one fetched to
``/work/.mirror/lava-nc+lava-dl/repo``, or ``--lava-dl`` / ``HTAKL_LAVA_DL``) into a temporary
folder — never into this repository — and compares, on the real ``network.net``:

1. the weight precision lava-dl netx gives each layer (its own ``optimize_weight_bits``, and ours)
   with the ``weight_bits`` recorded in ``hw/targets/published/loihi2_compiles.toml``;
2. our partition (``--strategy compiler``: the read network → ``plan_from_quantized`` →
   ``map_strategies``) with the compiler's per-core table, row by row, and the other strategies'
   totals;
3. our synaptic ops per core with Intel's activity profile (read off the notebook's plot) for the
   run Intel measured: 16 steps per frame, the input layer silent (the notebook's
   ``net.in_layer.neuron.bias = image`` sets no Lava variable), so the conv layers run on their
   biases — our emulator on a zero frame;
4. the energy per frame and time per step of our model against the measured 1.661 mJ
   (1.094 mJ dynamic) and 2.445 ms per frame / 16 steps: with Loihi 1's per-operation costs (the
   ratio that calibrates them: ``k_energy``, ``k_time``) and with the shipped target (calibrated
   on this run, so its central values match by construction; the range is what the calibration
   leaves).

Writes ``--json`` (default bench/results_archive/loihi2_pilotnet.json) and the tables of docs/MAPPING.md
between its ``<!-- loihi2_pilotnet -->`` markers (``--md``). Run:
``python bench/loihi2_pilotnet.py [--lava-dl REPO] [--json OUT] [--md docs/MAPPING.md]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import write_json
from htakl_deploy.hw.loihi2_published import COLUMNS, compare, load_published
from htakl_deploy.hw.target import COST_KEYS, load_target

DEFAULT_REPO = "/work/.mirror/lava-nc+lava-dl/repo"
NETWORK = "tutorials/lava/lib/dl/netx/pilotnet_snn/network.net"
MARK = "<!-- loihi2_pilotnet -->"


def fetch(repo: str, path: str, into: Path) -> Path:
    """``git show HEAD:path`` of the bare snapshot into a temporary file."""
    out = into / Path(path).name
    with open(out, "wb") as f:
        subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], stdout=f, check=True)
    return out


def weight_bits(net_path: Path) -> list[dict]:
    import h5py

    from htakl_deploy.hw.map_geom import netx_weight_bits

    from htakl_deploy.hw.netx_reference import import_netx

    import_netx()
    from lava.lib.dl.netx.utils import optimize_weight_bits

    rows = []
    with h5py.File(net_path, "r") as f:
        for k in sorted(f["layer"], key=int):
            layer = f["layer"][k]
            if "weight" not in layer or layer["weight"].ndim == 0:
                continue
            w = layer["weight"][()]
            rows.append({"layer": int(k), "ours": netx_weight_bits(w.astype(np.int64)),
                         "lava_dl": int(optimize_weight_bits(w)[1])})
    return rows


def uncalibrated(t):
    """The target with Loihi 1's per-operation costs and no calibration (what the fit scales)."""
    l1 = load_target("loihi1")
    return replace(t, **{k: getattr(l1, k) for k in COST_KEYS if k != "p_static_w"}, calibration={})


def run(repo: str) -> dict:
    from htakl_deploy.export.netx_in import read_netx
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.map_estimate import activity, estimate_from_activity
    from htakl_deploy.hw.mapping import map_strategies
    from htakl_deploy.hw.plan import plan_from_quantized

    pub = load_published()["pilotnet_lif"]
    t2 = load_target("loihi2")
    out: dict = {"snapshot": subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                                            text=True, check=True).stdout.strip(), "network": NETWORK}
    with tempfile.TemporaryDirectory() as tmp:
        net = fetch(repo, NETWORK, Path(tmp))
        out["weight_bits"] = weight_bits(net)
        t0 = time.perf_counter()
        plan = plan_from_quantized(read_netx(net))
        maps = map_strategies(plan, t2)
        out["map_s"] = time.perf_counter() - t0
    m = maps["compiler"]
    out["cores"] = {k: v.cores for k, v in maps.items()}
    out["rows"] = compare(m, "pilotnet_lif")
    out["matches"] = {c: sum(r["ours"][c] == r["intel"][c] for r in out["rows"]) for c in COLUMNS}
    # the measured run: 16-step frames, input layer silent
    steps = pub["steps_per_frame"]
    x = np.zeros((steps, 1, *plan.input_shape))
    res = emulate(plan, x, x_is_int=True)
    spikes = {n: s.reshape(steps, -1).astype(np.int64) for n, s in res.spikes.items()}
    for n, p in plan.populations.items():
        spikes.setdefault(n, np.zeros((steps, p.size), np.int64))
    act = activity(m, spikes)
    core_order = [c for lm in reversed(list(m.layers.values())) for c in lm.core_ids]  # Intel's: output first
    per_core = act["core_synops"].mean(0)[core_order] * pub["activity_steps"]
    out["activity"] = [{"core": int(c), "intel": v, "ours": float(per_core[int(c)])}
                       for c, v in pub["activity_synops_per_core"].items()]
    out["spikes_per_step"] = {n: float(s.sum() / steps) for n, s in spikes.items()}
    measured = {"step_ns": 1e9 / pub["frames_per_s"] / steps,
                "dynamic_pj_per_step": pub["energy_dynamic_mj_per_frame"] * 1e9 / steps,
                "total_pj_per_frame": pub["energy_total_mj_per_frame"] * 1e9}
    out["measured"] = measured
    for label, target in (("loihi1_costs", uncalibrated(t2)), ("calibrated", t2)):
        mt = replace(m, target=target)
        est = estimate_from_activity(mt, act, steps)
        pi = est["per_inference"]
        row = {"step_ns": pi["step_latency_ns_mean"], "dynamic_pj_per_step": pi["energy"]["dynamic_pj"] / steps,
               "total_pj_per_frame": pi["energy"]["total_pj"]}
        row["ratios"] = {k: row[k] / measured[k] for k in measured}
        if "ranges" in pi:
            row["ranges"] = pi["ranges"]
        out[label] = row
    base = out["loihi1_costs"]
    cm = act["core_synops"]
    busiest = cm.max(axis=1)
    out["fit"] = {"k_energy": measured["dynamic_pj_per_step"] / base["dynamic_pj_per_step"],
                  "k_time": measured["step_ns"] / base["step_ns"],
                  "calibration": {"steps_per_frame": steps, "step_ns": measured["step_ns"],
                                  "dynamic_pj_per_step": measured["dynamic_pj_per_step"],
                                  "static_w_low": pub["power_static_w"],
                                  "static_w_high": load_published()["pilotnet_sdnn"]["power_static_w"],
                                  "synops_per_step": float(cm.sum() / steps),
                                  "neuron_updates_per_step": float(m.core_stats("allocated_neurons").sum()),
                                  "busiest_core_synops": float(busiest.mean()),
                                  "busiest_core_neurons": float(m.core_stats("allocated_neurons").max())}}
    return out


def markdown(r: dict) -> str:
    pub = load_published()["pilotnet_lif"]
    lines = [MARK, "",
             f"This section is written by `bench/loihi2_pilotnet.py` from lava-dl's `{r['network']}` (snapshot "
             f"`{r['snapshot'][:7]}`, read into a temporary folder).", "",
             "Weight precision per layer (netx's rule: lava-dl's `optimize_weight_bits` / ours / recorded): "
             + ", ".join(f"layer {w['layer']}: {w['lava_dl']}/{w['ours']}" for w in r["weight_bits"]) + ".", "",
             "| layer | shape | cores Intel / ours | tile | neurons | synapse words | axons in | axon map |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        i, o = row["intel"], row["ours"]
        pair = lambda k: f"{i[k]} / {o[k]}"  # noqa: E731
        tile = f"{'×'.join(map(str, i['tile']))} / {'×'.join(map(str, o['tile']))}" if "tile" in i else "—"
        lines.append(f"| {row['layer']} | {'×'.join(map(str, row['shape']))} | {pair('cores')} | {tile} | "
                     f"{pair('neurons')} | {pair('synapses')} | {pair('axon_in')} | {pair('axon_map')} |")
    total = sum(x["ours"]["cores"] for x in r["rows"])
    lines += ["", f"Total: Intel {pub['total_cores']}, ours {total} (`compiler`); `fewest` {r['cores']['fewest']}, "
              f"`packed` {r['cores']['packed']}. Figures equal: "
              + ", ".join(f"{k} {r['matches'][k]}/{len(r['rows'])}" for k in COLUMNS) + ".", "",
              "Synaptic ops per core over Intel's 10,000-step run (its activity plot, read off the figure) and ours "
              "(the read network, our emulator on the run's input: none):", "",
              "| core | Intel | ours | ours / Intel |", "|---|---|---|---|"]
    for a in r["activity"]:
        lines.append(f"| {a['core']} | {a['intel'] / 1e9:.3f} G | {a['ours'] / 1e9:.3f} G | {a['ours'] / a['intel']:.3f} |")
    meas, base, cal = r["measured"], r["loihi1_costs"], r["calibrated"]
    lines += ["", "| per frame (16 steps) | measured on Loihi 2 | ours, Loihi 1's costs | ratio | ours, calibrated | "
              "ratio | range the calibration leaves |", "|---|---|---|---|---|---|---|",
              f"| time per step | {meas['step_ns'] / 1e3:.2f} µs | {base['step_ns'] / 1e3:.2f} µs | "
              f"{base['ratios']['step_ns']:.3f} | {cal['step_ns'] / 1e3:.2f} µs | {cal['ratios']['step_ns']:.3f} | "
              + (f"{cal['ranges']['step_latency_ns'][0] / 1e3:.1f} – {cal['ranges']['step_latency_ns'][1] / 1e3:.1f} µs |"
                 if "ranges" in cal else "— |"),
              f"| dynamic energy | {meas['dynamic_pj_per_step'] * 16 / 1e9:.3f} mJ | "
              f"{base['dynamic_pj_per_step'] * 16 / 1e9:.3f} mJ | {base['ratios']['dynamic_pj_per_step']:.3f} | "
              f"{cal['dynamic_pj_per_step'] * 16 / 1e9:.3f} mJ | {cal['ratios']['dynamic_pj_per_step']:.3f} | "
              + (f"{cal['ranges']['dynamic_pj'][0] / 1e9:.3f} – {cal['ranges']['dynamic_pj'][1] / 1e9:.3f} mJ |"
                 if "ranges" in cal else "— |"),
              f"| total energy | {meas['total_pj_per_frame'] / 1e9:.3f} mJ | {base['total_pj_per_frame'] / 1e9:.3f} mJ | "
              f"{base['ratios']['total_pj_per_frame']:.3f} | {cal['total_pj_per_frame'] / 1e9:.3f} mJ | "
              f"{cal['ratios']['total_pj_per_frame']:.3f} | "
              + (f"{cal['ranges']['total_pj'][0] / 1e9:.3f} – {cal['ranges']['total_pj'][1] / 1e9:.3f} mJ |"
                 if "ranges" in cal else "— |"),
              "", f"Fit: energy costs = Loihi 1's × {r['fit']['k_energy']:.4f}, time costs = Loihi 1's × "
              f"{r['fit']['k_time']:.4f} (`hw/targets/loihi2.toml`).", "", MARK]
    return "\n".join(lines)


def write_md(path: Path, text: str, mark: str = MARK) -> None:
    """Replace the section of ``path`` between its two ``mark`` lines (``text`` starts and ends with them)."""
    doc = path.read_text(encoding="utf-8")
    if doc.count(mark) != 2:
        raise SystemExit(f"{path}: needs two {mark} markers")
    a, b = doc.index(mark), doc.rindex(mark) + len(mark)
    path.write_text(doc[:a] + text + doc[b:], encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-dl", default=os.environ.get("HTAKL_LAVA_DL", DEFAULT_REPO),
                    help="lava-dl snapshot (bare git repository)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results_archive" / "loihi2_pilotnet.json"))
    ap.add_argument("--md", default=None, help="rewrite the marked section of this markdown file")
    args = ap.parse_args(argv)
    r = run(args.lava_dl)
    write_json(args.json, r)
    text = markdown(r)
    print(text)
    if args.md:
        write_md(Path(args.md), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
