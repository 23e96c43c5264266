"""bench/results_md.py: an earlier grid kept as data (its cells' JSON gone) re-renders to the same
rows, and new cells are shown next to it with re-run rows checked against it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cell(method, t, seed, acc, emu=None):
    return {"cell": f"{method}-T{t}-s{seed}", "method": method, "timesteps": t, "seed": seed, "overrides": {},
            "delta": 0.5, "head_weight": 0.5, "float_acc": acc, "emulator_acc": acc if emu is None else emu,
            "firing_rate": 0.05 + 0.01 * seed, "acs_per_sample": 1000.0 * (seed + 1), "macs_per_sample": 100.0,
            "energy_pj_per_sample": 1000.0 + seed, "energy_uj_per_sample": (1000.0 + seed) * 1e-6,
            "test_samples": 100, "wall_s": {"total": 10.0}, "loadavg_1m": 1.0,
            "finished_utc": f"2026-11-2{seed} 10:00:00", "run_dir": "/nonexistent"}


def results(cells, command):
    return {"settings": {"epochs": 3, "teacher_epochs": 2, "lr": 0.01, "batch_size": 64, "model": "convnet",
                         "limit_train": None, "limit_test": None, "ablation_timesteps": 2, "train_samples": 500,
                         "note": "a note"},
            "teacher": {"test_acc": 0.95, "wall_s": 5.0}, "threads": 1,
            "commands": [{"command": command, "wall_s": 30.0, "workers": 1}], "cells": cells,
            "missing": [], "failed": []}


def table_rows(lines, drop_grid=False):
    start = next(i for i, line in enumerate(lines) if line.startswith("### Methods × T")) + 4
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        parts = line.split(" | ")
        rows.append(" | ".join(parts[:2] + parts[3:]) if drop_grid else line)
    return rows


EARLIER = ([cell("kd", t, s, a) for t in (1, 2) for s, a in enumerate((0.90, 0.91, 0.93))]
           + [cell("hta-kl", t, s, a) for t in (1, 2) for s, a in enumerate((0.89, 0.92, 0.92))]
           + [cell("kdsnn", t, s, a) for t in (1, 2) for s, a in enumerate((0.91, 0.92, 0.94))])


def test_archive_re_renders_the_same_rows_and_text():
    md = load("results_md")
    page = md.render_dataset("digits", results(EARLIER, "grid A"))
    arch = md.archive_from_markdown("\n".join(["# title", "", *page]), "digits", "page X")
    assert arch["commands"] == ["grid A"] and arch["note"] == "a note"
    assert len(arch["main"]) == 6 and arch["main"][0]["float_acc"]["n"] == 3
    again = md.render_with_archive("digits", None, arch)
    assert table_rows(again, drop_grid=True) == table_rows(page)
    assert all(" | earlier | " in row for row in table_rows(again))
    reading = page[page.index("### Reading (digits)") + 2:]
    assert [line for line in reading if line] == arch["reading"]
    assert "".join(arch["reading"]) in "".join(again)


def test_new_cells_next_to_the_archive_with_rerun_check():
    md = load("results_md")
    arch = md.archive_from_markdown("\n".join(md.render_dataset("digits", results(EARLIER, "grid A"))),
                                    "digits", "page X")
    rerun = [c for c in EARLIER if c["method"] == "kdsnn"]
    new = rerun + [cell("lasnn", t, s, a) for t in (1, 2) for s, a in enumerate((0.93, 0.94, 0.96))]
    out = md.render_with_archive("digits", results(new, "grid B"), arch)
    text = "\n".join(out)
    rows = table_rows(out)
    assert [r.split(" | ")[:3] for r in rows if "T=" not in r] == [
        ["| kd", "1", "earlier"], ["| hta-kl", "1", "earlier"], ["| kdsnn", "1", "new"], ["| lasnn", "1", "new"],
        ["| kd", "2", "earlier"], ["| hta-kl", "2", "earlier"], ["| kdsnn", "2", "new"], ["| lasnn", "2", "new"]]
    assert "grid A\ngrid B" in text
    assert "Re-run check: 2 of 2 rows" in text and "differ at" not in text
    assert "T = 1, rank by mean float accuracy among 4 methods: lasnn 1" in text
    assert "**T = 1, lasnn − kdsnn** (paired, both in the new grid): float student: +2.00 pt" in text
    assert "lasnn is better at the 95 % level" in text  # +2 pt on every seed
    assert "T = 2, lasnn − hta-kl: float +3.33 pt" in text and "no paired test" in text
    assert "T = 2, lasnn − kdsnn: float" not in text  # kdsnn was re-run: only the paired line

    moved = [dict(c, float_acc=c["float_acc"] + 0.01) if c["timesteps"] == 2 else c for c in rerun]
    out = "\n".join(md.render_with_archive("digits", results(moved, "grid B"), arch))
    assert "Re-run check: 1 of 2 rows" in out and "differ at kdsnn T=2: earlier 92.33 ± 1.53" in out
    assert "teacher, trained by the same command" not in out  # same teacher accuracy
    other_teacher = results(new, "grid B")
    other_teacher["teacher"]["test_acc"] = 0.96
    out = "\n".join(md.render_with_archive("digits", other_teacher, arch))
    assert "reaches 96.00 % against the earlier grid's 95.00 %" in out
