"""Several runs side by side: ``htakl-deploy compare RUN...``.

Each run directory is read with ``rundata`` (the same numbers as its report); one row per run:
accuracy of the float student (training), of the Loihi fixed-point student (export) and on every
simulator, firing rate, ACs and energy per sample (µJ, the primary backend's energy model) and
training time. Rendered as a plain-text table and as one self-contained HTML page with two plots:
accuracy vs energy per sample, and the firing rate of every LIF layer across runs.
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
    }


def compare_runs(run_dirs: list[str]) -> list[dict]:
    if len(run_dirs) < 1:
        raise UserError("compare: give at least one run directory")
    return [run_row(d) for d in run_dirs]


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


def plot_layer_rates(rows: list[dict]) -> bytes:
    from htakl_deploy.energy.figures import _grouped_bars, _new_figure, _png

    names = list(dict.fromkeys(n for r in rows for n in r["layer_rates"]))
    fig, (ax,) = _new_figure(max(6, 1.2 * len(names) + 2), 4)
    _grouped_bars(ax, names, {f"{r['run']} ({r['method']})": [100 * r["layer_rates"].get(n, 0.0) for n in names]
                              for r in rows})
    ax.set_ylabel("firing rate (%)")
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
    warn = [(r["run"], w) for r in rows for w in r["warnings"]]
    if warn:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(w)}</li>"
                                                     for n, w in warn) + "</ul>")
    out.append("<h2>Runs</h2><ul>" + "".join(f"<li><code>{html.escape(r['run'])}</code>: {html.escape(r['run_dir'])} "
                                             f"({html.escape(str(r['data']))}, {html.escape(str(r['model']))})</li>"
                                             for r in rows) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
