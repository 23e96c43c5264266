"""The Loihi 2 benchmarks on a small budget: bench/loihi2_pilotnet.py's docs section is its committed
JSON (the run itself reads Intel's file from a lava-dl snapshot), bench/loihi2_students.py end to end
on a small digits student (a target with few input axons forces a rewrite onto graded relays)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import tiny_digits_run

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pilotnet_section_of_the_docs_is_the_committed_bench_json():
    pn = _bench("loihi2_pilotnet")
    r = json.loads((BENCH / "results_archive" / "loihi2_pilotnet.json").read_text())
    doc = (BENCH.parent / "docs" / "MAPPING.md").read_text(encoding="utf-8")
    a, b = doc.index(pn.MARK), doc.rindex(pn.MARK) + len(pn.MARK)
    assert doc[a:b] == pn.markdown(r)


def test_students_bench_on_a_small_student(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the bench imports its sibling paper_runs
    st = _bench("loihi2_students")
    from htakl_deploy.export.pipeline import run_export

    run = tiny_digits_run(tmp_path / "runs", limit_train=128, limit_test=8, epochs=1, teacher_epochs=1)
    run_export(run, ["nir", "lava"], lava_check=0, evaluate=False)
    monkeypatch.setattr(st, "make_run", lambda *a, **k: run)
    monkeypatch.setattr(st, "data_root", lambda r: None)
    real = st.load_target
    monkeypatch.setattr(st, "load_target", lambda name: replace(real(name), input_axons_per_core=40)
                        if name == "loihi2" else real(name))
    row = st.one("digits", str(tmp_path), None, 2, 1)
    assert row["decisions"] and row["decisions"][0]["chosen"] in ("pool-layer", "fan-in-split")
    assert row["decisions_equal"] and row["spikes_equal"]
    assert row["lava"]["every_spike_equal"] and row["lava"]["readout_equal"]
    assert row["after"]["compiler"]["cores"] >= row["after"]["packed"]["cores"] > 0
    assert row["estimate"]["ranges"]["total_pj"][0] <= row["estimate"]["energy_uj"] * 1e6 <= \
        row["estimate"]["ranges"]["total_pj"][1]
    text = st.markdown([row])
    assert text.startswith(st.MARK) and "every spike" in text
