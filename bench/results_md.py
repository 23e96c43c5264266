"""docs/RESULTS.md from the method grid's results (``bench/method_grid.py``), and the aggregation.

Pure functions on cell records (one dict per (method, T, seed[, loss override]) cell, as
``method_grid.py`` writes them to ``OUT/cells/*.json``):

- ``aggregate(cells)``: mean ± sample std over seeds per (method, T) of the main grid, per δ of
  the HTA-KL ablation and per head weight of the ``fixed`` ablation, and the paired (same seed)
  differences HTA-KL − KD per T;
- ``render(sources)``: the Markdown page for every data set (a section saying how to run the
  ones that have no results yet).

Regenerate the page without training: ``python bench/results_md.py`` (reads
``bench/results/<data>/results.json``; ``--source DATA=PATH`` for other locations).

A grid whose cells' JSON are gone (``bench/results/`` is git-ignored) is kept as
``bench/results_archive/<data>.json`` (``--archive PAGE``: its rows at the page's precision, its
commands and its text); the data set's section then shows those rows next to the cells run since
(``render_with_archive``), and checks any row run in both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MD = REPO / "docs" / "RESULTS.md"
DATASETS = ("digits", "fashion-mnist")
METHOD_ORDER = ("ce", "kd", "rkl", "fixed", "hta-kl", "ckdsnn", "seal", "kdsnn", "lasnn", "bkdsnn")
#: loss settings an ablation varies; a cell that leaves them at their default is a main-grid cell
ABLATED = {"hta-kl": "delta", "fixed": "head_weight"}
METRICS = ("float_acc", "emulator_acc", "firing_rate", "acs_per_sample", "energy_uj_per_sample")


def default_results(data: str) -> Path:
    return REPO / "bench" / "results" / data / "results.json"


def estimate_path(data: str) -> Path:
    """Written by ``method_grid.py --measure-images N``: the grid's estimated wall time."""
    return REPO / "bench" / "results" / f"{data}-estimate.json"


def grid_command(data: str) -> str:
    return f"OMP_NUM_THREADS=1 .venv/bin/python bench/method_grid.py --data {data} --ablations"


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None]
    return {"n": len(v), "mean": statistics.fmean(v) if v else None,
            "std": statistics.stdev(v) if len(v) > 1 else None}


def t_critical(n: int) -> float | None:
    """Two-sided 95 % critical value of Student's t with n − 1 degrees of freedom."""
    if n < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def _group(cells: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for c in cells:
        out.setdefault(tuple(c[k] for k in keys), []).append(c)
    return out


def _summarise(key: dict, members: list[dict]) -> dict[str, Any]:
    row = {**key, "seeds": sorted(c["seed"] for c in members)}
    for m in METRICS:
        row[m] = mean_std(c[m] for c in members)
    return row


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def paired_difference(a: list[dict], b: list[dict], metric: str) -> dict[str, Any]:
    """``a − b`` over the seeds both have (same seed: same student init and data order)."""
    by_seed_b = {c["seed"]: c[metric] for c in b}
    diffs = [c[metric] - by_seed_b[c["seed"]] for c in a if c["seed"] in by_seed_b]
    s = mean_std(diffs)
    crit = t_critical(s["n"])
    if s["n"] >= 2 and s["std"] == 0:
        t_stat = math.inf if s["mean"] else 0.0
    else:
        t_stat = s["mean"] / (s["std"] / math.sqrt(s["n"])) if s["n"] >= 2 else None
    significant = None if t_stat is None else abs(t_stat) > crit
    return {**s, "diffs": diffs, "t": t_stat, "t_crit_95": crit, "significant_95": significant}


def aggregate(cells: list[dict], *, ablation_timesteps: int = 2) -> dict[str, Any]:
    """Main table rows, ablation rows and HTA-KL − KD comparisons (see the module docstring)."""
    main = [c for c in cells if not c.get("overrides")]
    rows = [_summarise({"method": m, "timesteps": t}, g) for (m, t), g in _group(main, ("method", "timesteps")).items()]
    rows.sort(key=lambda r: (r["timesteps"], _method_rank(r["method"])))

    ablations = {}
    for method, field in ABLATED.items():
        members = [c for c in cells if c["method"] == method and c["timesteps"] == ablation_timesteps
                   and set(c.get("overrides", {})) <= {field}]
        groups = _group(members, (field,))
        if len(groups) > 1:  # only the default value present: no ablation was run
            ablations[field] = sorted((_summarise({field: v}, g) for (v,), g in groups.items()),
                                      key=lambda r: r[field])

    comparisons = []
    by = _group(main, ("method", "timesteps"))
    for t in sorted({c["timesteps"] for c in main}):
        hta, kd = by.get(("hta-kl", t), []), by.get(("kd", t), [])
        if hta and kd:
            comparisons.append({"timesteps": t, **{m: paired_difference(hta, kd, m)
                                                   for m in ("float_acc", "emulator_acc")}})
    return {"main": rows, "ablations": ablations, "ablation_timesteps": ablation_timesteps,
            "hta_minus_kd": comparisons}


# ----------------------------------------------------------------------------- formatting
def _pm(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    if s["mean"] is None:
        return "–"
    text = f"{s['mean'] * scale:.{digits}f}"
    if s["std"] is not None:
        text += f" ± {s['std'] * scale:.{digits}f}"
    return text


def _row_cells(r: dict) -> list[str]:
    return [str(r["float_acc"]["n"]), _pm(r["float_acc"], 100), _pm(r["emulator_acc"], 100),
            _pm(r["firing_rate"], 100), _pm(r["acs_per_sample"], 1e-3, 1),
            _pm(r["energy_uj_per_sample"], 1.0, 4)]


METRIC_HEAD = ["seeds", "float acc (%)", "emulator acc (%)", "firing rate (%)", "ACs/sample (k)",
               "energy/sample (µJ)"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def machine_info() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": cpu or platform.processor() or None,
            "host": platform.node(), "platform": platform.platform()}


def software_info() -> dict[str, Any]:
    from htakl_deploy.distill.runlog import git_state, package_versions

    return {"versions": package_versions(), "git": git_state(REPO)}


def _fmt_versions(v: dict) -> str:
    names = ("python", "torch", "spikingjelly", "lava-nc", "numpy", "nir", "htakl-deploy")
    return ", ".join(f"{n} {v.get(n) or 'not installed'}" for n in names)


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _verdict(d: dict, n_test: int | None, what: str, names: tuple[str, str] = ("HTA-KL", "KD")) -> str:
    if d["n"] == 0:
        return f"{what}: no seed run for both methods."
    pts = d["mean"] * 100
    text = f"{what}: {pts:+.2f} pt"
    if n_test:
        text += f" ({d['mean'] * n_test:+.1f} of {n_test} test images)"
    if d["n"] < 2:
        return text + ", one seed only: no spread, no conclusion."
    text += (f", paired std over {d['n']} seeds {d['std'] * 100:.2f} pt "
             f"(per seed: {', '.join(f'{x * 100:+.2f}' for x in d['diffs'])}); ")
    if d["significant_95"]:
        who = names[0] if d["mean"] > 0 else names[1]
        text += f"|t| = {abs(d['t']):.2f} > {d['t_crit_95']:.2f}: {who} is better at the 95 % level (paired t-test)."
    else:
        tt = "∞" if d["t"] is None or math.isinf(d["t"]) else f"{abs(d['t']):.2f}"
        text += f"|t| = {tt} ≤ {d['t_crit_95']:.2f}: **within seed noise** (no significant difference)."
    return text


def _e_mac_pj() -> float:
    from htakl_deploy.energy.models import load_preset

    return load_preset("paper-45nm").e_mac_pj


QUANT_GAP_NOTE = 0.02  # a method whose float − emulator accuracy exceeds this on average is named


def _reading(agg: dict, cells: list[dict], n_test: int | None) -> list[str]:
    lines = []
    for comp in agg["hta_minus_kd"]:
        t = comp["timesteps"]
        lines.append(f"- **T = {t}, HTA-KL − KD**: " + _verdict(comp["float_acc"], n_test, "float student")
                     + " " + _verdict(comp["emulator_acc"], n_test, "Quantised on the emulator"))
    if not agg["hta_minus_kd"]:
        lines.append("- HTA-KL and KD have no common T yet: no comparison.")
    else:
        tests = [(c["timesteps"], name, c[m]) for c in agg["hta_minus_kd"]
                 for m, name in (("float_acc", "float"), ("emulator_acc", "emulator"))]
        better = [f"T={t} {n}" for t, n, d in tests if d["significant_95"] and d["mean"] > 0]
        worse = [f"T={t} {n}" for t, n, d in tests if d["significant_95"] and d["mean"] < 0]
        means = [d["mean"] * 100 for _, _, d in tests if d["mean"] is not None]
        text = (f"- **In short**: HTA-KL − KD ranges {min(means):+.2f} … {max(means):+.2f} pt over the "
                f"{len(tests)} comparisons (T × float/emulator). ")
        if better:
            text += f"HTA-KL is significantly better at {', '.join(better)}. "
        if worse:
            text += f"KD is significantly better at {', '.join(worse)}. "
        text += (f"{len(tests) - len(better) - len(worse)} of {len(tests)} are within seed noise"
                 + (f"; with {len(tests)} uncorrected tests at the 95 % level one nominal hit is not unlikely "
                    "by chance alone" if better or worse else "") + ".")
        if all(m <= 0 for m in means):
            text += " HTA-KL does not beat KD on this data set at any T."
        elif all(m >= 0 for m in means):
            text += " HTA-KL is never behind KD on average here."
        lines.append(text)
    # where HTA-KL ranks among the methods, per T (float accuracy means)
    for t in sorted({r["timesteps"] for r in agg["main"]}):
        rows = [r for r in agg["main"] if r["timesteps"] == t and r["float_acc"]["mean"] is not None]
        hta = [r for r in rows if r["method"] == "hta-kl"]
        if not hta or len(rows) < 2:
            continue
        ranked = sorted(rows, key=lambda r: -r["float_acc"]["mean"])
        best, worst = ranked[0], ranked[-1]
        spread = max((r["float_acc"]["std"] or 0) for r in rows)
        lines.append(
            f"- T = {t}: HTA-KL ranks {ranked.index(hta[0]) + 1} of {len(rows)} methods by mean float accuracy; "
            f"best {best['method']} {best['float_acc']['mean'] * 100:.2f} %, worst {worst['method']} "
            f"{worst['float_acc']['mean'] * 100:.2f} % — a range of "
            f"{(best['float_acc']['mean'] - worst['float_acc']['mean']) * 100:.2f} pt against a largest "
            f"seed std of {spread * 100:.2f} pt.")
    for field, rows in agg["ablations"].items():
        rows = [r for r in rows if r["float_acc"]["mean"] is not None]
        if len(rows) < 2:
            continue
        best = max(rows, key=lambda r: r["float_acc"]["mean"])
        worst = min(rows, key=lambda r: r["float_acc"]["mean"])
        spread = max((r["float_acc"]["std"] or 0) for r in rows)
        span = (best["float_acc"]["mean"] - worst["float_acc"]["mean"]) * 100
        name = {"delta": "δ", "head_weight": "`fixed` head weight"}[field]
        text = (f"- Ablation {name} (T = {agg['ablation_timesteps']}): best {best[field]:g} "
                f"{best['float_acc']['mean'] * 100:.2f} %, worst {worst[field]:g} {worst['float_acc']['mean'] * 100:.2f} %; "
                f"a span of {span:.2f} pt against seed std up to {spread * 100:.2f} pt")
        text += " — within noise." if span <= spread * 100 else " — larger than one seed std, but with 3 seeds per value read it as a trend at most."
        ref = next((r for r in agg["main"] if r["method"] == "hta-kl" and r["timesteps"] == agg["ablation_timesteps"]), None)
        if field == "head_weight" and ref:
            text += (f" Adaptive HTA-KL ({ref['float_acc']['mean'] * 100:.2f} %) vs the best fixed weight: "
                     f"{(ref['float_acc']['mean'] - best['float_acc']['mean']) * 100:+.2f} pt.")
        lines.append(text)
    lines += _cell_lines(cells)
    by = {(r["method"], r["timesteps"]): r for r in agg["main"]}
    energy = []
    for t in sorted({r["timesteps"] for r in agg["main"]}):
        h, k = by.get(("hta-kl", t)), by.get(("kd", t))
        if h and k and k["energy_uj_per_sample"]["mean"]:
            energy.append(f"T={t} ×{h['energy_uj_per_sample']['mean'] / k['energy_uj_per_sample']['mean']:.3f}")
    if energy:
        lines.append("- Energy per sample, HTA-KL / KD (paper-45nm, counted ACs and MACs): " + ", ".join(energy) + ".")
    return lines


def _cell_lines(cells: list[dict]) -> list[str]:
    """Quantisation gap over the cells, methods that lose to fixed point, the encoding layer's share."""
    lines = []
    gaps = [c["float_acc"] - c["emulator_acc"] for c in cells]
    if gaps:
        g = mean_std(gaps)
        lines.append(f"- Quantisation to Loihi fixed point (float − emulator accuracy) over all {g['n']} cells: "
                     f"{g['mean'] * 100:+.2f} ± {(g['std'] or 0) * 100:.2f} pt (range {min(gaps) * 100:+.2f} … "
                     f"{max(gaps) * 100:+.2f} pt, the largest in {max(cells, key=lambda c: c['float_acc'] - c['emulator_acc'])['cell']}; "
                     "positive = the quantised network is worse).")
        per_method: dict[str, list[float]] = {}
        for c in cells:
            per_method.setdefault(c["method"], []).append(c["float_acc"] - c["emulator_acc"])
        bad = {m: mean_std(v) for m, v in per_method.items() if statistics.fmean(v) > QUANT_GAP_NOTE}
        if bad:
            lines.append("- Methods whose quantised network loses more than "
                         f"{QUANT_GAP_NOTE * 100:g} pt on average: "
                         + "; ".join(f"{m} {g['mean'] * 100:+.2f} ± {(g['std'] or 0) * 100:.2f} pt over {g['n']} cells"
                                     for m, g in sorted(bad.items(), key=lambda kv: -kv[1]["mean"]))
                         + " (`htakl-deploy export RUN --target nir` on one of their runs says which "
                         "connections lose their weights to the 8-bit mantissa).")
    e_mac_pj = _e_mac_pj()
    shares = [c["macs_per_sample"] * e_mac_pj / c["energy_pj_per_sample"] for c in cells if c["energy_pj_per_sample"]]
    if shares:
        lines.append(f"- The off-chip encoding layer's MACs are {min(shares) * 100:.0f}–{max(shares) * 100:.0f} % of "
                     "the energy per sample (its MAC count is fixed by T, not by the method), so energy differences "
                     "between methods come from the ACs of the spiking layers only.")
    return lines


def _settings_lines(results: dict, cells: list[dict], n_test: int | None) -> list[str]:
    s, teacher = results["settings"], results.get("teacher", {})
    lines = []
    budget = f"- Budget, the same for every method: student {s['epochs']} epochs; one shared ANN teacher, {s['teacher_epochs']} epochs"
    if teacher.get("test_acc") is not None:
        budget += f" (test accuracy {teacher['test_acc'] * 100:.2f} %)"
    lines.append(budget)
    limits = "".join(f", {k} {s[k]}" for k in ("limit_train", "limit_test") if s.get(k))
    lines.append(f"- Student: lr {s['lr']}, batch {s['batch_size']}, model {s['model']}, direct encoding; "
                 f"{s.get('train_samples', '?')} training images, {n_test} test images{limits}")
    missing, failed = results.get("missing", []), results.get("failed", [])
    line = f"- Cells: {len(cells)} done, {len(missing)} missing, {len(failed)} failed"
    if missing:
        line += f" (missing: {', '.join(missing[:12])}{' …' if len(missing) > 12 else ''})"
    lines.append(line)
    shas = _invocation_shas(results, cells)
    if shas:
        lines.append(f"- Code (git HEAD when each invocation started; a grid process imports the package once, so "
                     f"later commits to the shared checkout do not reach a running grid): {', '.join(shas)}")
    if cells:
        total = sum(c["wall_s"]["total"] for c in cells)
        load = statistics.fmean(c.get("loadavg_1m", 0.0) for c in cells)
        commands = results.get("commands", [])
        workers = max((c.get("workers", 1) for c in commands), default=1)
        wall = sum(c.get("wall_s", 0.0) for c in commands)
        lines.append(
            f"- Compute: teacher {_fmt_duration(teacher.get('wall_s') or 0)}, cells {_fmt_duration(total)} in total "
            f"(mean {total / len(cells):.0f} s per cell), {workers} worker process(es) × {results.get('threads', '?')} "
            f"torch thread(s); wall time of the invocations {_fmt_duration(wall)}; mean 1-min "
            f"load average while the cells ran {load:.2f} on {machine_info()['cores']} cores (the machine is shared)")
        lines.append(f"- Cells finished {min(c['finished_utc'] for c in cells)} … "
                     f"{max(c['finished_utc'] for c in cells)} UTC")
    lines.append(
        "- *float acc*: the float student's last-epoch test accuracy (PyTorch); *emulator acc*: the quantised "
        "network (Loihi fixed point) run by the bit-exact emulator on the same test images; firing rate (all LIF "
        "layers), ACs and energy counted from the emulator's spikes against `student_quant.nir` (paper-45nm: "
        "0.9 pJ/AC, 4.6 pJ/MAC; the off-chip encoding layer's MACs included). Mean ± sample std over seeds.")
    return lines


def _invocation_shas(results: dict, cells: list[dict]) -> list[str]:
    """Each invocation's ``git`` (recorded since it was added), else the provenance of the earliest run."""
    out = []
    for c in results.get("commands", []):
        git = c.get("git")
        if git is None and c.get("ran"):
            runs = [Path(results.get("teacher", {}).get("run_dir") or ""),
                    *(Path(x["run_dir"]) for x in sorted(cells, key=lambda x: x["finished_utc"])[:1])]
            prov = next((r / "provenance.json" for r in runs if (r / "provenance.json").is_file()), None)
            git = json.loads(prov.read_text(encoding="utf-8")).get("git") if prov else None
        if git and git.get("sha"):
            tag = git["sha"][:12] + (" (tracked files modified)" if git.get("dirty") else "")
            if tag not in out:
                out.append(tag)
    return out


def render_dataset(data: str, results: dict | None, estimate: dict | None = None) -> list[str]:
    out = [f"## {data}", ""]
    if results is None or not results.get("cells"):
        out += ["Not run yet. Command:", "", "```bash", grid_command(data), "```", ""]
        if estimate:
            out += ["Estimated wall time, from a short measurement on this machine:", "", *estimate["lines"], ""]
        return out
    s, cells = results["settings"], results["cells"]
    agg = aggregate(cells, ablation_timesteps=s.get("ablation_timesteps", 2))
    n_test = cells[0]["test_samples"]
    out += ["Commands that produced these results (one line per invocation; finished cells are skipped):",
            "", "```bash", *(c["command"] for c in results.get("commands", [])), "```", ""]
    out += _settings_lines(results, cells, n_test)
    if s.get("note"):
        out += ["", f"> {s['note']}"]
    out += ["", f"### Methods × T ({data})", ""]
    out += _table(["method", "T", *METRIC_HEAD], [[r["method"], str(r["timesteps"]), *_row_cells(r)] for r in agg["main"]])
    ts = sorted({r["timesteps"] for r in agg["main"]})
    by = {(r["method"], r["timesteps"]): r for r in agg["main"]}
    methods = sorted({r["method"] for r in agg["main"]}, key=_method_rank)
    for metric, label in (("float_acc", "Float"), ("emulator_acc", "Emulator (quantised)")):
        out += ["", f"{label} accuracy (%), method × T:", ""]
        out += _table(["method", *(f"T={t}" for t in ts)],
                      [[m, *(_pm(by[(m, t)][metric], 100) if (m, t) in by else "–" for t in ts)] for m in methods])
    for field, rows in agg["ablations"].items():
        label = {"delta": "HTA-KL head threshold δ",
                 "head_weight": "`fixed` head weight w (loss w·FKL + (1 − w)·RKL)"}[field]
        out += ["", f"### Ablation: {label}, T = {agg['ablation_timesteps']} ({data})", ""]
        out += _table([field, *METRIC_HEAD], [[f"{r[field]:g}", *_row_cells(r)] for r in rows])
        ref = by.get(("hta-kl", agg["ablation_timesteps"]))
        if field == "head_weight" and ref:
            out += ["", f"For reference, HTA-KL (adaptive weight, δ 0.5) at T = {agg['ablation_timesteps']}: float "
                        f"{_pm(ref['float_acc'], 100)} %, emulator {_pm(ref['emulator_acc'], 100)} %."]
    out += ["", f"### Reading ({data})", "", *_reading(agg, cells, n_test), ""]
    return out


# ----------------------------------------------------------------------------- earlier grids
ARCHIVE_FORMAT = "htakl-bench-archive/1"
#: display scale of each metric in the tables (value × scale is printed)
_SCALES = {"float_acc": 100.0, "emulator_acc": 100.0, "firing_rate": 100.0, "acs_per_sample": 1e-3,
           "energy_uj_per_sample": 1.0}


def archive_path(data: str) -> Path:
    """A data set's earlier grid whose cells' JSON are gone: its rows and text, kept in the repo."""
    return REPO / "bench" / "results_archive" / f"{data}.json"


def _parse_pm(text: str, scale: float, n: int) -> dict[str, Any]:
    mean, _, std = text.partition("±")
    if mean.strip() == "–":
        return {"n": n, "mean": None, "std": None}
    return {"n": n, "mean": float(mean) / scale, "std": float(std) / scale if std.strip() else None}


def archive_from_markdown(page: str, data: str, source: str) -> dict[str, Any]:
    """One data set's section of a rendered RESULTS.md as data: commands, settings lines, note, the
    main table's rows (means and stds at the page's display precision, so they re-render to the
    same text), and the ablation sections and reading as the page worded them."""
    lines = page.splitlines()
    start = lines.index(f"## {data}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    sec = lines[start + 1:end]
    c0 = sec.index("```bash")
    c1 = sec.index("```", c0 + 1)
    table = next(i for i, line in enumerate(sec) if line.startswith("### Methods × T"))
    head = [line for line in sec[c1 + 1:table]]
    rows, k = [], next(i for i in range(table, len(sec)) if sec[i].startswith("| method")) + 2
    while k < len(sec) and sec[k].startswith("|"):
        method, t, n, *vals = (c.strip() for c in sec[k].strip().strip("|").split("|"))
        rows.append({"method": method, "timesteps": int(t),
                     **{m: _parse_pm(v, _SCALES[m], int(n)) for m, v in zip(METRICS, vals)}})
        k += 1
    reading = next(i for i, line in enumerate(sec) if line.startswith("### Reading"))
    ablation = next((i for i, line in enumerate(sec) if line.startswith("### Ablation")), reading)
    sections = sec[ablation:reading]
    while sections and not sections[-1].strip():
        sections.pop()
    return {"format": ARCHIVE_FORMAT, "data": data, "source": source, "commands": sec[c0 + 1:c1],
            "settings": [line for line in head if line.startswith("- ")],
            "note": next((line[2:] for line in head if line.startswith("> ")), None),
            "main": rows, "sections": sections,
            "reading": [line for line in sec[reading + 1:] if line.strip()]}


def _row_key(r: dict) -> tuple:
    return (r["timesteps"], _method_rank(r["method"]))


def _reading_new(live: dict, cells: list[dict], merged: list[dict], earlier: dict, n_test: int | None) -> list[str]:
    """The new cells next to the earlier grid: re-run rows checked, ranks and differences of the
    methods the earlier grid did not have (paired where the reference was re-run with them)."""
    lines = []
    by_live = {(r["method"], r["timesteps"]): r for r in live["main"]}
    rerun = sorted(set(by_live) & set(earlier), key=lambda k: (k[1], _method_rank(k[0])))
    if rerun:
        same = [k for k in rerun if _row_cells(by_live[k]) == _row_cells(earlier[k])]
        text = (f"- Re-run check: {len(same)} of {len(rerun)} rows re-run in the new grid "
                f"({', '.join(f'{m} T={t}' for m, t in rerun)}) are identical to the earlier grid's at the "
                "page's precision (every column; same seeds and budget)")
        diff = [k for k in rerun if k not in same]
        if diff:
            text += "; they differ at " + "; ".join(
                f"{m} T={t}: earlier {' / '.join(_row_cells(earlier[(m, t)])[1:3])}, new "
                f"{' / '.join(_row_cells(by_live[(m, t)])[1:3])} (float / emulator %)" for m, t in diff)
        lines.append(text + ".")
    new_methods = sorted({m for m, _ in by_live} - {m for m, _ in earlier}, key=_method_rank)
    cells_by = _group([c for c in cells if not c.get("overrides")], ("method", "timesteps"))
    for t in sorted({r["timesteps"] for r in merged}):
        rows = sorted((r for r in merged if r["timesteps"] == t and r["float_acc"]["mean"] is not None),
                      key=lambda r: -r["float_acc"]["mean"])
        names = [r["method"] for r in rows]
        ranks = [f"{m} {names.index(m) + 1}" for m in new_methods if m in names]
        if ranks and rows:
            lines.append(f"- T = {t}, rank by mean float accuracy among {len(rows)} methods: {', '.join(ranks)} "
                         f"(best {rows[0]['method']} {rows[0]['float_acc']['mean'] * 100:.2f} %, worst "
                         f"{rows[-1]['method']} {rows[-1]['float_acc']['mean'] * 100:.2f} %).")
        for m in new_methods:
            mine, r = cells_by.get((m, t), []), by_live.get((m, t))
            for ref in ("kdsnn", "hta-kl"):
                theirs = cells_by.get((ref, t), [])
                if mine and theirs:
                    lines.append(f"- **T = {t}, {m} − {ref}** (paired, both in the new grid): "
                                 + _verdict(paired_difference(mine, theirs, "float_acc"), n_test,
                                            "float student", (m, ref)) + " "
                                 + _verdict(paired_difference(mine, theirs, "emulator_acc"), n_test,
                                            "Quantised on the emulator", (m, ref)))
                    continue
                other = earlier.get((ref, t))
                if r and other and r["float_acc"]["mean"] is not None and other["float_acc"]["mean"] is not None:
                    lines.append(
                        f"- T = {t}, {m} − {ref}: float {(r['float_acc']['mean'] - other['float_acc']['mean']) * 100:+.2f} pt, "
                        f"emulator {(r['emulator_acc']['mean'] - other['emulator_acc']['mean']) * 100:+.2f} pt, energy "
                        f"×{r['energy_uj_per_sample']['mean'] / other['energy_uj_per_sample']['mean']:.3f} (difference of "
                        f"means, {ref} from the earlier grid: its per-seed values were not kept, so no paired test; "
                        f"mean ± seed std {_pm(r['float_acc'], 100)} vs {_pm(other['float_acc'], 100)} %).")
    return lines + _cell_lines(cells)


def render_with_archive(data: str, results: dict | None, archive: dict) -> list[str]:
    """A data set's section from its earlier grid (``archive``) and the cells run since (``results``)."""
    cells = results["cells"] if results and results.get("cells") else []
    settings = results["settings"] if results else {}
    live = aggregate(cells, ablation_timesteps=settings.get("ablation_timesteps", 2)) if cells else {"main": []}
    by_live = {(r["method"], r["timesteps"]): r for r in live["main"]}
    earlier = {(r["method"], r["timesteps"]): r for r in archive["main"]}
    merged = sorted([*({**r, "grid": "new"} for r in live["main"]),
                     *({**r, "grid": "earlier"} for k, r in earlier.items() if k not in by_live)], key=_row_key)
    out = [f"## {data}", "",
           f"Rows of two grids at the same budget: the **earlier** grid ({archive['source']}) and the **new** "
           f"cells run since (their JSON in `bench/results/{data}/`). A (method, T) run in both shows the new "
           "cells; the reading checks them against the earlier row.", "",
           "Commands that produced these results (earlier grid, then the new cells; one line per invocation; "
           "finished cells are skipped):", "", "```bash", *archive["commands"],
           *(c["command"] for c in (results or {}).get("commands", [])), "```", "",
           "Earlier grid:", "", *archive["settings"]]
    if archive.get("note"):
        out += ["", f"> {archive['note']}"]
    n_test = cells[0]["test_samples"] if cells else None
    if cells:
        out += ["", "New cells:", "", *_settings_lines(results, cells, n_test)]
        if settings.get("note") and settings["note"] != archive.get("note"):
            out += ["", f"> {settings['note']}"]
    out += ["", f"### Methods × T ({data})", ""]
    out += _table(["method", "T", "grid", *METRIC_HEAD],
                  [[r["method"], str(r["timesteps"]), r["grid"], *_row_cells(r)] for r in merged])
    ts = sorted({r["timesteps"] for r in merged})
    by = {(r["method"], r["timesteps"]): r for r in merged}
    methods = sorted({r["method"] for r in merged}, key=_method_rank)
    for metric, label in (("float_acc", "Float"), ("emulator_acc", "Emulator (quantised)")):
        out += ["", f"{label} accuracy (%), method × T:", ""]
        out += _table(["method", *(f"T={t}" for t in ts)],
                      [[m, *(_pm(by[(m, t)][metric], 100) if (m, t) in by else "–" for t in ts)] for m in methods])
    if archive["sections"]:
        out += ["", *archive["sections"]]
    out += ["", f"### Reading ({data})", "", "Earlier grid (as worded when it was rendered):", "", *archive["reading"]]
    if cells:
        out += ["", "New cells:", "", *_teacher_line(archive, results), *_reading_new(live, cells, merged, earlier, n_test)]
    return out + [""]


def _teacher_line(archive: dict, results: dict) -> list[str]:
    """Say so when the new cells' teacher is not the earlier grid's (e.g. retrained on another CPU)."""
    import re

    found = next((re.search(r"test accuracy ([0-9.]+) %", line) for line in archive["settings"]
                  if "test accuracy" in line), None)
    new = (results.get("teacher") or {}).get("test_acc")
    if not found or new is None or f"{new * 100:.2f}" == found.group(1):
        return []
    return [f"- The new cells' teacher, trained by the same command, reaches {new * 100:.2f} % against the earlier "
            f"grid's {found.group(1)} % (floating-point results differ between CPUs; the earlier grid ran on "
            "another machine): a difference to an earlier row mixes the method with the teacher; the paired "
            "lines compare methods re-run with the same teacher."]


def render(sources: dict[str, Path]) -> str:
    sw, mc = software_info(), machine_info()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    git = sw["git"]
    lines = [
        "# Results: method comparison and HTA-KL ablations",
        "",
        "Generated by `bench/results_md.py` from the method grid's JSON (`bench/method_grid.py`); do not edit by "
        "hand — rerun the commands below (they write bench/results/<data>/), then `.venv/bin/python "
        "bench/results_md.py` renders this page from their JSON.",
        "",
        f"- Generated: {now}",
        f"- Machine: {mc['cores']} cores, {mc['cpu_model']}, {mc['platform']}",
        f"- Software: {_fmt_versions(sw['versions'])}",
        f"- Git HEAD when this page was rendered: {git['sha'] or 'unknown'}" + (" (tracked files modified)" if git.get("dirty") else ""),
        "",
        "One cell = (method, T, seed): distil the SNN student from the data set's one shared ANN teacher → export "
        "(NIR + Lava artefact: BN folded, Loihi fixed point) → the bit-exact emulator on the test split → "
        "ACs/MACs and energy from its spikes. The cells' JSON, and `results.json` / `results.csv` aggregating "
        "them, are in `bench/results/<data>/` (git-ignored).",
        "",
    ]
    for data, path in sources.items():
        results = json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else None
        est = estimate_path(data)
        estimate = json.loads(est.read_text(encoding="utf-8")) if est.is_file() else None
        arch = archive_path(data)  # it belongs to the default grid of the data set, not to another --out
        if arch.is_file() and Path(path).resolve() == default_results(data).resolve():
            lines += render_with_archive(data, results, json.loads(arch.read_text(encoding="utf-8")))
        else:
            lines += render_dataset(data, results, estimate)
    return "\n".join(lines).rstrip() + "\n"


def sources_with_defaults(given: dict[str, Path] | None = None) -> dict[str, Path]:
    out = {d: default_results(d) for d in DATASETS}
    out.update(given or {})
    return out


def write(out_md: Path, sources: dict[str, Path]) -> Path:
    from htakl_deploy.atomic import write_text

    write_text(out_md, render(sources))
    return out_md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", action="append", default=[], metavar="DATA=PATH",
                   help="results.json of a data set (default bench/results/<data>/results.json)")
    p.add_argument("--out", type=Path, default=DEFAULT_MD)
    p.add_argument("--archive", type=Path, metavar="PAGE", default=None,
                   help="instead: keep each data set's section of this rendered page (rows, commands, text) "
                        "as bench/results_archive/<data>.json, for a grid whose cells' JSON are gone")
    p.add_argument("--archive-source", default=None, help="with --archive: where the page came from (one line)")
    args = p.parse_args(argv)
    if args.archive is not None:
        from htakl_deploy.atomic import write_json

        page = args.archive.read_text(encoding="utf-8")
        for data in DATASETS:
            if f"## {data}" in page.splitlines() and "```bash" in page:
                write_json(archive_path(data), archive_from_markdown(page, data, args.archive_source or str(args.archive)))
                print(archive_path(data))
        return 0
    given = {}
    for s in args.source:
        data, _, path = s.partition("=")
        if not path:
            p.error(f"--source: expected DATA=PATH, got {s!r}")
        given[data] = Path(path)
    print(write(args.out, sources_with_defaults(given)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
