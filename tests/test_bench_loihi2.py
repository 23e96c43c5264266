"""The Loihi 2 benchmarks on a small budget: bench/loihi2_pilotnet.py's docs section is its committed
JSON (the run itself reads Intel's file from a lava-dl snapshot), bench/loihi2_students.py end to end
on a small digits student (a target with few input axons forces a rewrite onto graded relays)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import load_bench, tiny_digits_run

BENCH = Path(__file__).resolve().parent.parent / "bench"


_bench = load_bench


@pytest.mark.parametrize("name", ["loihi2_pilotnet", "loihi2_students"])
def test_docs_section_is_the_committed_bench_json(name):
    bench = _bench(name)
    r = json.loads((BENCH / "results_archive" / f"{name}.json").read_text())
    doc = (BENCH.parent / "docs" / "MAPPING.md").read_text(encoding="utf-8")
    a, b = doc.index(bench.MARK), doc.rindex(bench.MARK) + len(bench.MARK)
    assert doc[a:b] == bench.markdown(r["rows"] if name == "loihi2_students" else r)


def test_the_archived_resnet19_fits_and_lava_equals_the_emulator_on_it():
    """The flagship claim of docs/MAPPING.md, as the archived students run recorded it."""
    rows = {r["model"]: r for r in json.loads((BENCH / "results_archive" / "loihi2_students.json").read_text())["rows"]}
    r19 = rows["resnet19"]
    assert "error" in r19["untransformed"] and r19["decisions"]
    assert 0 < r19["after"]["compiler"]["chips"] and r19["decisions_equal"] and r19["spikes_equal"]
    assert r19["lava"]["every_spike_equal"] and r19["lava"]["readout_equal"] and r19["lava"]["spikes"] > 0


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
