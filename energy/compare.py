"""Several runs side by side: ``htakl-deploy compare RUN...``.

Each run directory is read with ``rundata`` (the same numbers as its report); one row per run:
accuracy of the float student (training), of the Loihi fixed-point student (export) and on every
simulator, firing rate, ACs and energy per sample (µJ, the primary backend's energy model) and
training time. Rendered as a plain-text table and as one self-contained HTML page with two plots:
accuracy vs energy per sample, and the firing rate of every LIF layer across runs (grouped bars
for a few runs, a heat map — one row per run, any number of runs — beyond ``BARS_UP_TO``).

``compare_warnings``: a run given twice (the same folder, by any path) is shown once, and a run
whose files could not be read (a corrupt ``summary.json``: its training numbers are missing) is
named — on stderr and in the page — instead of being passed over in silence.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from htakl_deploy.errors import UserError

COLUMNS = ("run", "method", "T", "float acc", "fixed-pt acc", "emulator acc", "Lava acc", "firing rate",
           "ACs/sample", "energy/sample", "train time", "warnings")


def run_row(run_dir: str | Path) -> dict:
    """One run's numbers (``UserError`` if ``run_dir`` is not a run directory)."""
    from htakl_deploy.energy.rundata import build_report, load_run

    run = load_run(run_dir)
    report = build_report(run)
    acc = {(a["stage"], a["backend"], a["model"]): a for a in report["accuracy"]}

    def pick(*keys):
        for k in keys:
            if k in acc:
                return acc[k]["accuracy"], acc[k].get("samples")
        return None, None

    b = report["primary_backend"]
    en = report["energy"].get(b) if b else None
    act = report["activity"].get(b) if b else None
    summary = run.summary or {}
    train_s = summary.get("wall_s") if isinstance(summary.get("wall_s"), (int, float)) else None
    lava = next((k for k in (("simulate", "lava-fixed_pt", "student"), ("simulate", "lava-floating_pt", "student"))
                 if k in acc), None)
    return {
        "run": report["run"]["name"], "run_dir": str(run.root), "method": report["run"]["method"],
        "data": report["run"]["data"], "model": report["run"]["model"], "timesteps": report["run"]["timesteps"],
        "float_acc": pick(("training", "torch-train", "student"))[0],
        "fixed_pt_acc": pick(("export", "integer", "student"))[0],
        "emulator_acc": pick(("simulate", "emulator", "student")),
        "lava_acc": pick(lava) if lava else (None, None),
        "firing_rate": act["firing_rate"] if act else None,
        "layer_rates": {x["name"]: x["firing_rate"] for x in act["layers"]} if act else {},
        "acs_per_sample": en["per_sample"]["acs"] if en else None,
        "energy_uj": en["per_sample"]["measured_pj"] * 1e-6 if en else None,
        "ann_energy_uj": None if not en or en["per_sample"]["ann_teacher_pj"] is None
        else en["per_sample"]["ann_teacher_pj"] * 1e-6,
        "energy_model": en["energy_model"]["name"] if en else None, "backend": b,
        "train_s": train_s, "warnings": [w["message"] for w in report.get("warnings", [])],
        "problems": list(run.problems),
    }


def compare_runs(run_dirs: list[str]) -> list[dict]:
    """One row per distinct run directory (a folder given twice, by any path, is read once)."""
    if len(run_dirs) < 1:
        raise UserError("compare: give at least one run directory")
    rows, seen = [], {}
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            seen[key]["duplicates"].append(str(d))
            continue
        row = run_row(d)
        row["duplicates"] = []
        seen[key] = row
        rows.append(row)
    return rows


def compare_warnings(rows: list[dict]) -> list[str]:
    """Runs given more than once, and files of a run that could not be read."""
    out = [f"{r['run_dir']} given {1 + len(r['duplicates'])} times (also as {', '.join(r['duplicates'])}); "
           "shown once" for r in rows if r["duplicates"]]
    out += [f"{r['run_dir']}: {p}" for r in rows for p in r["problems"]]
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _acc(pair) -> str:
    acc, n = pair if isinstance(pair, tuple) else (pair, None)
    return "–" if acc is None else _pct(acc) + (f" ({n})" if n else "")


def cells(row: dict) -> list[str]:
    from htakl_deploy.energy.report import si

    return [row["run"], row["method"] or "?", str(row["timesteps"]), _pct(row["float_acc"]), _pct(row["fixed_pt_acc"]),
            _acc(row["emulator_acc"]), _acc(row["lava_acc"]), _pct(row["firing_rate"]),
            si(row["acs_per_sample"], " ", "–"), "–" if row["energy_uj"] is None else f"{row['energy_uj']:.4f} µJ",
            "–" if row["train_s"] is None else f"{row['train_s']:.0f} s", str(len(row["warnings"]))]


def format_table(rows: list[dict]) -> str:
    table = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    models = sorted({r["energy_model"] for r in rows if r["energy_model"]})
    lines.append("")
    lines.append("accuracy (samples); energy per sample on each run's primary backend"
                 + (f" ({', '.join(models)})" if models else "") + "; warnings: the report's sanity checks")
    return "\n".join(lines)


def plot_accuracy_vs_energy(rows: list[dict]) -> bytes:
    from htakl_deploy.energy.figures import _new_figure, _png

    fig, (ax,) = _new_figure(6, 4)
    for r in rows:
        acc = r["emulator_acc"][0] if r["emulator_acc"][0] is not None else r["float_acc"]
        if acc is None or r["energy_uj"] is None:
            continue
        ax.scatter([r["energy_uj"]], [100 * acc], s=40)
        ax.annotate(f"{r['method']} T={r['timesteps']}", (r["energy_uj"], 100 * acc), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("energy per sample (µJ)")
    ax.set_ylabel("accuracy (%), emulator (float if none)")
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy vs energy per sample", fontsize=10)
    return _png(fig)


BARS_UP_TO = 8  # runs shown as grouped bars with a legend; more: a heat map with one row per run


def plot_layer_rates(rows: list[dict]) -> bytes:
    import numpy as np

    from htakl_deploy.energy.figures import _grouped_bars, _new_figure, _png

    names = list(dict.fromkeys(n for r in rows for n in r["layer_rates"]))
    labels = [f"{r['run']} ({r['method']})" for r in rows]
    rates = [[100 * r["layer_rates"].get(n, 0.0) for n in names] for r in rows]
    if len(rows) <= BARS_UP_TO:
        fig, (ax,) = _new_figure(max(6, 1.2 * len(names) + 2), 4)
        _grouped_bars(ax, names, dict(zip(labels, rates)))
        ax.set_ylabel("firing rate (%)")
    else:  # any number of runs: the figure grows with them, the labels sit on the axis
        width = max(len(s) for s in labels) * 0.07 + 0.9 * max(len(names), 1) + 2
        fig, (ax,) = _new_figure(min(width, 30), 1.5 + 0.22 * len(rows))
        im = ax.imshow(np.array(rates).reshape(len(rows), len(names)), aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        fig.colorbar(im, ax=ax, label="firing rate (%)")
    ax.set_title("Firing rate per LIF layer across runs", fontsize=10)
    return _png(fig)


def render_html(rows: list[dict]) -> str:
    from htakl_deploy.energy.document import CSS, Table, _html_table

    table = Table(list(COLUMNS), [cells(r) for r in rows], "Runs side by side (accuracy with its sample count).",
                  "ll")
    figs = [("Accuracy vs energy per sample", plot_accuracy_vs_energy(rows)),
            ("Firing rate per LIF layer across runs", plot_layer_rates(rows))]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>htakl-deploy compare</title>',
           f"<style>{CSS}</style></head><body>", f"<h1>htakl-deploy compare: {len(rows)} runs</h1>", _html_table(table)]
    for i, (title, png) in enumerate(figs, 1):
        data = base64.b64encode(png).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>Figure {i}: {html.escape(title)}.</figcaption></figure>")
    warn = [(r["run"], w) for r in rows for w in r["warnings"]] + [("compare", w) for w in compare_warnings(rows)]
    if warn:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(w)}</li>"
                                                     for n, w in warn) + "</ul>")
    out.append("<h2>Runs</h2><ul>" + "".join(f"<li><code>{html.escape(r['run'])}</code>: {html.escape(r['run_dir'])} "
                                             f"({html.escape(str(r['data']))}, {html.escape(str(r['model']))})</li>"
                                             for r in rows) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
