"""The notebook API: docs/API.md is executed cell by cell, and its numbers are checked against the
command-line path (the same plan, spikes and op counts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def test_import_is_lazy():
    code = ("import sys, htakl_deploy as h; print('torch' in sys.modules); from htakl_deploy import api; "
            "print(all(getattr(h, n) is getattr(api, n) for n in h.API))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_docs_api_notebook_runs(tmp_path, monkeypatch):
    cells = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(cells) == 6
    monkeypatch.setenv("HTAKL_RUNS", str(tmp_path))
    ns: dict = {}
    for cell in cells:
        exec(compile(cell, str(DOC), "exec"), ns)  # noqa: S102 — our own documentation
    # the numbers of the notebook are the pipeline's: the emulator's spikes counted by the CLI's counter
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.export.quantize import quantize
    from htakl_deploy.hw.plan import plan_from_quantized

    plan = plan_from_quantized(quantize(ns["graph"]))
    again = emulate(plan, ns["x"])
    assert all(np.array_equal(again.spikes[k], ns["result"].spikes[k]) for k in again.spikes)
    e = ns["energy"]
    assert e["samples"] == 32 and e["per_sample"]["energy_pj"] == e["totals"]["energy_pj"] / 32
    spikes = sum(int(ns["result"].spikes[n].sum()) for n in ns["result"].spikes)
    assert e["totals"]["spikes"] == spikes
    assert (tmp_path / "notebook" / "report.html").exists() and ns["report"]["run"]["method"] == "hta-kl"
    # the example shows the tool working: the student learnt (chance 10 %) and every layer fires
    assert ns["summary"]["student"]["test_acc"] > 0.5 and (ns["pred"] == ns["labels"]).mean() > 0.5
    assert all(rate > 0.01 for rate in ns["rates"].values()), ns["rates"]
    assert e["per_sample"]["acs"] > 0
