"""Smoke runs of the performance benchmarks with tiny settings: they finish and report their ratios
(positive, finite); the timings themselves are not asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import load_bench

BENCH = Path(__file__).resolve().parent.parent / "bench"


load = load_bench


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_train_overhead_smoke(tmp_path, capsys):
    out = tmp_path / "t.json"
    r = load("train_overhead").main(["--reps", "1", "--limit-train", "256", "--no-memory",
                                     "--json", str(out)])
    assert positive(r["ratio_time_ours_over_plain"]) and positive(r["ratio_time_ours_aug_over_plain"])
    assert all(positive(v) for v in r["images_per_s"].values())
    assert json.loads(out.read_text())["ratio_time_ours_over_plain"] == r["ratio_time_ours_over_plain"]
    assert "ours / plain" in capsys.readouterr().out


def test_counter_overhead_smoke():
    r = load("counter_overhead").main(["--samples", "16", "--repeats", "1", "--no-memory"])
    for key in ("ratio_count_over_float", "ratio_count_over_emulator", "ratio_count_nb_off_over_float"):
        assert positive(r[key]), key
    assert r["acs_per_sample"] is not None


def test_counter_memory_child(capsys):
    load("counter_overhead").main(["--variant", "count", "--samples", "8", "--repeats", "1"])
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["peak_mb"] >= m["rss_before_mb"] > 0 and m["delta_mb"] >= 0


def check_scale_out(r: dict) -> None:
    for key in ("ratio_throughput_nproc_over_1", "ratio_throughput_nproc_over_1p_nthreads",
                "ratio_wall_1_over_nproc"):
        assert positive(r[key]), key
    assert [(v["processes"], v["threads_per_process"]) for v in r["variants"]] == [(1, 1), (2, 1), (1, 2)]
    assert all(0.0 <= v["student_test_acc"] <= 1.0 for v in r["variants"])


def test_scale_out_main_with_stub_runs(tmp_path, monkeypatch, capsys):
    """main → bench → ratios and table, with each `distill` command replaced by a stub run (three
    real commands, one through torchrun, take ~25 s: see the slow test below)."""
    mod = load("scale_out")
    seen = []

    def fake_run(cmd, capture_output, text, env):
        seen.append((cmd, env["OMP_NUM_THREADS"]))
        run = Path(cmd[cmd.index("--out-dir") + 1]) / cmd[cmd.index("--run-name") + 1]
        (run / "student").mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"student": {"test_acc": 0.5}, "teacher": {"test_acc": 0.6}}))
        epoch = {"kind": "epoch", "images_per_s": 100.0 * len(seen), "epoch_train_s": 1.0}
        (run / "student" / "metrics.jsonl").write_text(json.dumps(epoch) + "\n")
        return mod.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    r = mod.main(["--epochs", "1", "--teacher-epochs", "1", "--out-dir", str(tmp_path)])
    check_scale_out(r)
    assert r["ratio_throughput_nproc_over_1"] == 2.0
    assert "torch.distributed.run" in seen[1][0] and [e for _, e in seen] == ["1", "1", "2"]
    assert "processes / 1 process" in capsys.readouterr().out


@pytest.mark.slow
def test_scale_out_real_runs(tmp_path):
    """bench/scale_out.py for real: torchrun with 1 and 2 gloo processes on digits (1 epoch each)."""
    r = load("scale_out").main(["--epochs", "1", "--teacher-epochs", "1", "--limit-train", "256",
                                "--out-dir", str(tmp_path)])
    check_scale_out(r)


def test_loss_step_smoke_with_memory(tmp_path, capsys):
    """The digits case only, 2 timed steps, and its two memory subprocesses (1 step each)."""
    out = tmp_path / "l.json"
    cases = load("loss_step").main(["--steps", "2", "--cases", "digits", "--mem-steps", "1",
                                    "--json", str(out)])
    (c,) = cases
    assert c["case"] == "digits" and c["num_classes"] == 10 and c["steps"] == 2
    assert positive(c["step_ratio_hta_over_kd"]) and positive(c["loss_only_ratio"])
    assert len(c["loadavg_before"]) == 3 and len(c["loadavg_after"]) == 3
    for m in ("kd", "hta-kl"):
        mem = c["memory"][m]
        assert (mem["case"], mem["method"], mem["steps"]) == ("digits", m, 1)
        assert mem["peak_mb"] > mem["rss_before_mb"] > 0  # a training step allocates activations
        assert mem["delta_mb"] == pytest.approx(mem["peak_mb"] - mem["rss_before_mb"])
    written = json.loads(out.read_text())
    assert isinstance(written, list) and written[0]["memory"] == c["memory"]  # still a list of cases
    assert written[0]["step_s_median"] == c["step_s_median"]
    assert "hta-kl +MB" in capsys.readouterr().out


@pytest.fixture(scope="module")
def lava_run(tmp_path_factory) -> Path:
    """A tiny digits run (1 + 1 epochs on 128 images) with its Lava artefact."""
    from conftest import tiny_digits_run
    from htakl_deploy.export.pipeline import run_export

    run = tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=128, limit_test=8, epochs=1,
                          teacher_epochs=1)
    run_export(run, ["lava"], lava_check=0, evaluate=False)
    assert (run / "export" / "student.lava.npz").exists()
    return run


def test_emulator_vs_lava_smoke(lava_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    r = load("emulator_vs_lava").main([str(lava_run), "--samples", "3", "--repeats", "1", "--no-memory",
                                       "--json", str(out)])
    assert r["samples"] == 3 and r["timesteps"] == 4 and r["repeats"] == 1
    assert r["spike_agreement"] == 1.0 and r["readout_identical"]
    assert r["lava_old_spike_agreement"] == 1.0 and r["lava_old_readout_identical"]  # the old path, from git
    assert r["lava_phases"]["copies"] == 3 and r["lava_phases"]["processes"] >= 2
    for key in ("lava_samples_per_s", "emulator_samples_per_s", "ratio_emulator_over_lava", "lava_old_samples_per_s",
                "ratio_lava_new_over_old"):
        assert positive(r[key]), key
    assert len(r["loadavg_before"]) == 3 and "memory" not in r
    assert json.loads(out.read_text())["ratio_emulator_over_lava"] == r["ratio_emulator_over_lava"]
    printed = capsys.readouterr().out
    assert "emulator / Lava throughput" in printed and "new / old Lava path" in printed


def test_emulator_vs_lava_memory(lava_run):
    """Lava's process tree (in this process: its forked children must be found) and the emulator
    through the real subprocess."""
    mod = load("emulator_vs_lava")
    lava = mod.main([str(lava_run), "--variant", "lava", "--samples", "2"])
    assert lava["children"] >= 2 and lava["children_private_peak_mb"] > 0
    assert lava["peak_mb"] == pytest.approx(lava["parent"]["peak_mb"] + lava["children_private_peak_mb"])
    assert lava["delta_mb"] == pytest.approx(lava["peak_mb"] - lava["rss_before_mb"])
    assert lava["tree_pss_peak_mb"] > 0 and lava["children_hwm_sum_mb"] > lava["children_private_peak_mb"]
    emu = mod.measure_memory("emulator", str(lava_run), 2)
    assert emu["variant"] == "emulator" and emu["samples"] == 2 and emu["children"] == 0
    assert emu["peak_mb"] == emu["parent"]["peak_mb"] >= emu["rss_before_mb"] > 0


def _mem(delta, before, n=None):
    return {"delta_mb": delta, "rss_before_mb": before, "peak_mb": before + delta, **({"steps": n} if n else {})}


LOAD = [0.5, 0.4, 0.3]
TRAIN = {"train_images_per_epoch": 1408, "batch_size": 128, "timesteps": 4, "reps": 7, "torch_threads": 2,
         "loadavg_before": LOAD, "loadavg_after": LOAD,
         "epoch_s_median": {"ours": 0.4, "plain": 0.4, "ours+aug": 0.4},
         "images_per_s": {"ours": 3520.0, "plain": 3520.0, "ours+aug": 3520.0},
         "ratio_time_ours_over_plain": 1.0, "ratio_time_ours_aug_over_plain": 1.0,
         "ours_call_s_median": {"ours": 0.45}}
COUNTER = {"samples": 360, "timesteps": 4, "repeats": 7, "torch_threads": 2, "loadavg_before": LOAD,
           "loadavg_after": LOAD, "checkpoint": None,
           "s_median": dict.fromkeys(("float", "emulator", "count", "count-nb-off"), 0.1),
           "samples_per_s": dict.fromkeys(("float", "emulator", "count", "count-nb-off"), 3600.0),
           "ratio_count_over_float": 1.0, "ratio_count_over_emulator": 1.0, "ratio_count_nb_off_over_float": 0.1}
_VARIANT = {"processes": 1, "threads_per_process": 1, "student_images_per_s_median": 1000.0, "wall_s": 10.0,
            "student_test_acc": 0.9, "teacher_test_acc": 0.95}
SCALE = {"flags": ["--epochs", "5", "--teacher-epochs", "2"], "loadavg_before": LOAD, "variants": [_VARIANT] * 3,
         "ratio_throughput_nproc_over_1": 1.5, "ratio_wall_1_over_nproc": 1.2,
         "ratio_throughput_nproc_over_1p_nthreads": 1.1, "acc_diff_nproc_minus_1": 0.0}
LOSS = [
    {"case": "digits", "label": "digits convnet, 8×8", "in_shape": [1, 8, 8], "num_classes": 10, "batch": 128,
     "timesteps": 4, "steps": 40, "torch_threads": 2, "loadavg_before": [1.25, 1.0, 1.0], "loadavg_after": LOAD,
     "step_s_median": {"kd": 0.050, "hta-kl": 0.0515}, "step_ratio_hta_over_kd": 1.03,
     "loss_only_s": {"kd": 0.0002, "hta-kl": 0.0005}, "loss_only_ratio": 2.5,
     "memory": {"kd": _mem(78.2, 393.0, 5), "hta-kl": _mem(80.4, 393.0, 5)}, "memory_note": "LOSS-MEM-NOTE"},
    {"case": "1000-classes", "label": "8×8 convnet, 1000 classes", "in_shape": [1, 8, 8], "num_classes": 1000,
     "batch": 128, "timesteps": 4, "steps": 40, "torch_threads": 2, "loadavg_before": LOAD, "loadavg_after": LOAD,
     "step_s_median": {"kd": 0.060, "hta-kl": 0.066}, "step_ratio_hta_over_kd": 1.1,
     "loss_only_s": {"kd": 0.001, "hta-kl": 0.009}, "loss_only_ratio": 9.0},
]
LAVA = {"artefact": "runs/demo/export/student.lava.npz", "samples": 100, "timesteps": 4, "repeats": 5,
        "loadavg_before": [1.75, 1.0, 1.0], "loadavg_after": LOAD, "lava_s": 30.0, "lava_samples_per_s": 100 / 30,
        "emulator_s_median": 0.02, "emulator_samples_per_s": 5000.0, "ratio_emulator_over_lava": 1500.0,
        "spike_agreement": 1.0, "readout_identical": True, "memory_note": "LAVA-MEM-NOTE",
        "memory": {
            "lava": {**_mem(108.0, 312.0), "parent": _mem(28.0, 312.0), "children": 12,
                     "children_private_peak_mb": 80.0, "tree_pss_peak_mb": 344.0,
                     "children_hwm_sum_mb": 2550.0, "children_max_rss_mb": 231.0},
            "emulator": {**_mem(13.0, 312.0), "parent": _mem(13.0, 312.0), "children": 0,
                         "children_private_peak_mb": 0.0, "tree_pss_peak_mb": 330.0,
                         "children_hwm_sum_mb": 0.0, "children_max_rss_mb": 0.0}}}


def test_perf_md_renders_loss_and_lava_sections(tmp_path):
    files = {}
    for name, data in {"train": TRAIN, "counter": COUNTER, "scale": SCALE, "loss": LOSS, "lava": LAVA}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    base = ["--train", str(files["train"]), "--counter", str(files["counter"]), "--scale", str(files["scale"])]
    mod = load("perf_md")

    mod.main([*base, "--out", str(tmp_path / "without.md")])
    without = (tmp_path / "without.md").read_text()
    assert "HTA-KL vs KD" not in without and "Emulator vs Lava" not in without
    assert "`bench/train_overhead.py`, `bench/counter_overhead.py` and `bench/scale_out.py`" in without

    mod.main([*base, "--loss", str(files["loss"]), "--lava", str(files["lava"]), "--out", str(tmp_path / "with.md")])
    md = (tmp_path / "with.md").read_text()
    assert ("`bench/train_overhead.py`, `bench/loss_step.py`, `bench/emulator_vs_lava.py`, "
            "`bench/counter_overhead.py` and `bench/scale_out.py`") in md
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## Training loop vs a plain SpikingJelly loop", "## HTA-KL vs KD training step",
                     "## Emulator vs Lava", "## Energy counter vs inference", "## Scale-out: torchrun, 2 processes vs 1"]
    assert "load average at the start of each benchmark: 0.50, 1.25, 1.75, 0.50, 0.50" in md
    # loss section: command, per-loss rows (ms, images/s, loss alone, memory), ratios in bold, target
    assert "`python bench/loss_step.py --steps 40 --mem-steps 5 --json …`" in md
    assert "| digits convnet, 8×8 | KD | 50.00 | 2560 | 0.200 | 78.2 (RSS 393 → peak 471) |" in md
    assert "|  | HTA-KL | 51.50 | 2485 | 0.500 | 80.4 (RSS 393 → peak 473) |" in md
    assert "|  | HTA-KL | 66.00 | 1939 | 9.000 | — |" in md
    assert "**HTA-KL / KD step time: digits convnet ×1.030; 1000 classes ×1.100** (target ≤ 1.05)" in md
    assert "×2.50, ×9.00" in md and "Memory: LOSS-MEM-NOTE." in md
    # Lava section: command, both backends with time, samples/s and the process tree's memory
    assert "`python bench/emulator_vs_lava.py RUN_DIR --samples 100 --repeats 5 --json …`" in md
    assert ("| Lava `fixed_pt` (Loihi2SimCfg) | 30.00 | 3.33 | 420 (process 340 + 12 child processes "
            "80.0 private; tree Pss peak 344) | 108.0 (RSS 312 → peak 420) |") in md
    assert "| bit-exact emulator | 0.0200 | 5000 | 325 (one process) | 13.0 (RSS 312 → peak 325) |" in md
    assert "**emulator / Lava throughput: ×1500** (target ≥ 1000); spikes identical: yes; readout identical: yes." in md
    assert "Memory: LAVA-MEM-NOTE." in md and "2550 MB" in md and "231 MB" in md


METHODS = {"in_shape": [1, 8, 8], "batch": 128, "timesteps": 4, "steps": 20, "torch_threads": 1,
           "loadavg_before": [2.0, 2.0, 2.0], "loadavg_after": [2.5, 2.0, 2.0],
           "step_s_median": {"kd": 0.050, "lasnn": 0.055, "bkdsnn": 0.0525},
           "ratio_to_kd": {"kd": 1.0, "lasnn": 1.1, "bkdsnn": 1.05},
           "teacher_backwards_per_step": {m: {"first_stage": 0, "classifier": 0} for m in ("kd", "lasnn", "bkdsnn")}}


def test_perf_md_methods_section_and_kept_sections(tmp_path):
    files = {}
    for name, data in {"train": TRAIN, "counter": COUNTER, "scale": SCALE, "loss": LOSS, "methods": METHODS}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    mod = load("perf_md")
    page = tmp_path / "PERF.md"
    mod.main(["--train", str(files["train"]), "--counter", str(files["counter"]), "--scale", str(files["scale"]),
              "--loss", str(files["loss"]), "--out", str(page)])
    first = page.read_text()
    _, before = mod.page_sections(first)
    # only the method-step benchmark re-run: its section is added, every other one kept as it was
    mod.main(["--methods", str(files["methods"]), "--out", str(page)])
    md = page.read_text()
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## Training loop vs a plain SpikingJelly loop", "## HTA-KL vs KD training step",
                     "## Every method's training step vs KD", "## Energy counter vs inference",
                     "## Scale-out: torchrun, 2 processes vs 1"]
    _, after = mod.page_sections(md)
    for title, lines in before.items():
        assert after[title] == lines, title
    assert "Generated by `bench/perf_md.py` from the JSON of `bench/method_step.py`" in md
    kept = [line for line in md.splitlines() if line.startswith("- kept unchanged")]
    assert len(kept) == 1 and "HTA-KL vs KD training step; Energy counter vs inference" in kept[0]
    # a second partial run keeps the first page's origin for the sections it had kept (not this page's date)
    page.write_text("\n".join("- date: LATER" if line.startswith("- date:") else line
                              for line in page.read_text().splitlines()))
    mod.main(["--methods", str(files["methods"]), "--out", str(page)])
    assert [line for line in page.read_text().splitlines() if line.startswith("- kept unchanged")] == kept
    assert "| lasnn | 55.00 | ×1.100 | 0, 0 |" in md and "**Step time / KD: lasnn ×1.100, bkdsnn ×1.050**" in md
    assert "load average at the start of each benchmark: 2.00" in md


def test_perf_md_stream_full_split_stopped_run_and_torch_float(tmp_path, monkeypatch):
    """The streaming section shows a whole 10,000-image run and a run stopped early (from its
    progress log, via stream_memory.py --stopped); the torch-float section its agreement."""
    monkeypatch.syspath_prepend(str(BENCH))  # stream_memory imports its sibling paper_runs
    sm = load("stream_memory")
    log = tmp_path / "p.jsonl"
    log.write_text("".join(json.dumps({"done": 32 * (i + 1), "s": 10.0 * (i + 1), "load": 3.0, "vmrss_mb": 1100 + i,
                                       "vmhwm_mb": 1500.0}) + "\n" for i in range(10)))
    stopped = sm.stopped_run(str(log), "resnet19", 10000, 32, "spikes", True)
    full = {"model": "resnet20", "batch_size": 64, "record": "spikes", "neurobench": True, "threads": 2,
            "load_before": [1.0], "load_after": [2.0],
            "rows": [{"stage": "simulate", "samples": 10000, "peak_mb": 1338.0, "wall_s": 716.0, "emulator_s": 600.0,
                      "file_mb": 180.0},
                     {"stage": "energy", "samples": 10000, "peak_mb": 562.0, "wall_s": 30.0}]}
    tf = {"runs": [{"run": "demo", "samples": 360, "rows": {"float32": {"s": 0.05}, "float64": {"s": 0.15}},
                    "float64_over_float32_time": 3.0, "spike_agreement": 1.0, "spikes_differing": 0,
                    "spikes_compared": 1000, "decision_agreement": 1.0, "max_abs_logit_diff": 2e-6,
                    "accuracy": {"float32": 0.98, "float64": 0.98}, "load_before": [1.5]}]}
    files = []
    for i, data in enumerate((full, stopped, tf)):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(data))
    page = tmp_path / "PERF.md"
    load("perf_md").main(["--stream", str(files[0]), "--stream", str(files[1]), "--torch-float", str(files[2]),
                          "--out", str(page)])
    md = page.read_text()
    assert "| 10000 | 1338 | 716 | 600 | 14.0 | 180.0 | 562 | 30 |" in md
    assert "The whole 10,000-image split: simulate 11.9 min at this load, peak 1.31 GB; energy 0.55 GB." in md
    assert "**stopped** after 320 of 10000 images" in md
    assert "Resident memory between batches 1100–1109 MB, peak 1500 MB" in md
    assert "Rate over the second half: 3.20 images/s" in md  # (320 - 160) / (100 - 50)
    assert "| demo | 360 | 0.050 | 0.150 | ×3.00 | 100.0000 % (0 of 1000 differ) | 100.00 % | 2.0e-06 |" in md


def test_perf_md_energy_variants_give_energy_over_simulate(tmp_path):
    """stream_memory.py --neurobench-samples all,256,0: one energy row per variant on the same spike
    file; the page shows each one's time and energy / simulate."""
    sim = {"stage": "simulate", "samples": 10000, "peak_mb": 1000.0, "wall_s": 150.0, "emulator_s": 100.0,
           "file_mb": 900.0}
    energy = [{"stage": "energy", "samples": 10000, "peak_mb": 800.0, "wall_s": w, "neurobench_samples": n}
              for w, n in ((180.0, 10000), (15.0, 256), (12.0, 0))]
    run = {"model": "resnet20", "batch_size": 64, "record": "spikes", "neurobench_variants": ["all", "256", "0"],
           "neurobench": True, "threads": 2, "load_before": [1.0], "load_after": [1.5], "rows": [sim, *energy]}
    (tmp_path / "s.json").write_text(json.dumps(run))
    page = tmp_path / "PERF.md"
    load("perf_md").main(["--stream", str(tmp_path / "s.json"), "--out", str(page)])
    md = page.read_text()
    assert "energy's NeuroBench samples all, 256, 0" in md
    assert "| 10000 | 1000 | 150 | 100 | 66.7 | 900.0 | 800 | 180 |" in md  # the first variant in the main table
    assert "| 10000 | 256 samples | 800 | 15 | ×0.100 |" in md and "| 10000 | off | 800 | 12 | ×0.080 |" in md
    assert "**energy / simulate on 10000 images: NeuroBench on 10000 ×1.20; NeuroBench on 256 ×0.10; " \
           "NeuroBench on none ×0.08**" in md
    # --stream-append: another run goes below the section's earlier runs instead of replacing them
    (tmp_path / "s2.json").write_text(json.dumps({**run, "model": "resnet19"}))
    load("perf_md").main(["--stream", str(tmp_path / "s2.json"), "--stream-append", "--out", str(page)])
    md2 = page.read_text()
    assert md2.count("## Streaming") == 1 and md2.index("**resnet20**") < md2.index("**resnet19**")
    assert md2.count("| 10000 | 256 samples | 800 | 15 | ×0.100 |") == 2


def test_cli_help_bench_and_its_section(tmp_path, monkeypatch):
    """bench/cli_help.py times every subcommand's --help in fresh processes (here 1 round, two commands)
    and says whether torch was imported; perf_md renders the table and the slowest one."""
    monkeypatch.syspath_prepend(str(BENCH))
    ch = load("cli_help")
    monkeypatch.setattr(ch, "COMMANDS", {"export": None, "run": None})
    r = ch.bench(repeats=1)
    assert [x["command"] for x in r["rows"]] == ["(interpreter)", "(top level)", "export", "run"]
    assert all(x["median_s"] > 0 and x["imports_torch"] is False for x in r["rows"])
    (tmp_path / "h.json").write_text(json.dumps(r))
    page = tmp_path / "PERF.md"
    load("perf_md").main(["--help-times", str(tmp_path / "h.json"), "--out", str(page)])
    md = page.read_text()
    run = next(x for x in r["rows"] if x["command"] == "run")
    assert f"| run | {run['median_s']:.3f} | {run['min_s']:.3f} | no |" in md
    assert "**slowest subcommand --help: " in md


def test_set_firing_gives_an_untrained_student_the_asked_rate(monkeypatch):
    """``paper_runs.set_firing``: only the BatchNorm parameters and statistics change, and the
    eval-mode student's mean firing rate over its spiking layers comes out at the asked rate."""
    import torch

    from htakl_deploy.distill.data import encode
    from htakl_deploy.distill.models import build_model

    monkeypatch.syspath_prepend(str(BENCH))
    set_firing = load("paper_runs").set_firing
    torch.manual_seed(0)
    model = build_model(arch="convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = encode(torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 4, "direct")
    info = set_firing(model, x, 0.15, iters=8)
    assert abs(info["mean_rate"] - 0.15) < 0.02 and all(0 < r < 0.6 for r in info["rates"].values()), info
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(_is_bn(model, k) for k in changed), changed


def _is_bn(model, key: str) -> bool:
    import torch

    module = model.get_submodule(key.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def test_perf_md_roof_section_one_row_per_model():
    """``--roof`` is repeatable: one summary row per model (its firing rate, the emulator's share
    of the roof), then each model's variants."""
    def roof(model, share):
        rows = {k: {"s": s, "images_per_s": 64 / s, "gmac_per_s": 10 / s}
                for k, s in (("emulator", 1.0), ("emulator-general", 2.0), ("float32-forward", 1.5), ("roof", share))}
        return {"model": model, "images": 64, "timesteps": 4, "reps": 5, "dense_macs_per_step": 2.0e8, "rows": rows,
                "identical_integers": True, "firing_rate": 0.1, "emulator_share_of_roof": share,
                "emulator_vs_float32_forward": 1 / 1.5, "general_vs_emulator": 2.0, "threads": 2,
                "load_before": [0.5], "load_after": [0.6]}

    lines = load("perf_md").roof_section([roof("resnet20", 0.6), roof("vgg16", 0.77)])
    rows = [line for line in lines if line.startswith("| resnet20 |") or line.startswith("| vgg16 |")]
    assert len(rows) == 2 and "**60 %**" in rows[0] and "**77 %**" in rows[1] and "| 10 % |" in rows[0], rows
    assert sum(line.startswith("**") for line in lines) == 2  # a variants table per model


def _artefact_json() -> dict:
    def variant(label, fmt, mb, members, sim_mb):
        rep = {"wall_s": 1.0, "rss_before_mb": 500.0, "rss_after_mb": 500.0 + mb, "peak_mb": 500.0 + mb + 1}
        return {"label": label, "git": label.split()[1], "synapses": 1000, "export": {"format": fmt, "members": members},
                "load": [rep], "simulate": [{"peak_mb": sim_mb, "wall_s": 10.0}],
                "median": {"file_mb": mb, "load_s": 0.5, "load_resident_mb": mb, "load_peak_mb": mb + 1,
                           "simulate_peak_mb": sim_mb, "simulate_s": 10.0}}

    old = variant("baseline 8498ed4", "htakl-lava-plan/1", 16.0, {"integer weights": 8e6, "float weights": 8e6,
                                                                 "indices": 0, "biases": 10, "header": 10}, 1600.0)
    new = variant("this tree abc1234", "htakl-lava-plan/2", 0.00101, {"integer weights": 1000, "float weights": 0,
                                                                      "indices": 0, "biases": 5, "header": 5}, 1200.0)
    return {"model": "resnet19", "samples": 256, "batch_size": 64, "repeats": 1, "target_firing": 0.1, "synapses": 1000,
            "variants": [old, new], "spikes_identical": True, "load_before": [2.0], "load_after": [2.5],
            "ratios": {"file": 0.00101 / 16.0, "load_s": 1.0, "simulate_peak": 0.75,
                       "new_file_over_synapse_bytes": 1.01, "old_file_over_synapse_bytes": 16000.0}}


def test_perf_md_artefact_section(tmp_path):
    """bench/artefact_size.py's JSON → the artefact section: both formats side by side, the ratios."""
    src = tmp_path / "a.json"
    src.write_text(json.dumps(_artefact_json()))
    page = tmp_path / "PERF.md"
    load("perf_md").main(["--artefact", str(src), "--out", str(page)])
    md = page.read_text()
    assert "## Lava artefact: size, load and simulate's memory" in md and "--baseline 8498ed4" in md
    assert "| baseline 8498ed4 | `htakl-lava-plan/1` | 16.0 | 16000.00 | 8.0 | 8.0 | 0.0 | 0.50 | 16 | 17 | 1600 | 10 |" in md
    assert "| this tree abc1234 | `htakl-lava-plan/2` | 0.0 | 1.01 |" in md
    assert "(1.01 bytes per 8-bit synapse; goal ≤ 1.5)" in md and "simulate peak ×0.75 (400 MB less)" in md
    assert "identical: yes" in md and "`bench/artefact_size.py`" in md


def _netx_json(emu_fps: float) -> dict:
    return {"source": "git snapshot X", "steps_per_frame": 16, "frames": 32, "lava_frames": 2, "repeats": 3,
            "torch_threads": 2, "load_before": [3.0, 2.0, 1.0], "load_after": [3.5, 2.0, 1.0],
            "emulator_fps_median": emu_fps, "our_lava_fps": 0.25, "netx_lava_fps": 0.5, "conv_roof_fps": 900.0,
            "chip_over_emulator": 408.91 / emu_fps,
            "chip": {"frames_per_s": 408.91, "cores": 74, "watts": 0.679234, "mj_per_frame": 1.661103, "source": "nb"},
            "agreement": {"our_lava_spikes_equal": True, "our_lava_readout_equal": True, "netx_readout_equal": True},
            "emulator_split": {"total_s": 1.0, "convolution_s": 0.5, "neuron_loop_s": 0.25, "other_s": 0.25}}


@pytest.mark.parametrize("emu_fps, verdict", [(100.0, "×4.1 faster than the emulator here: the goal — the "
                                                       "emulator faster than the chip on this CPU — is not met"),
                                              (817.82, "×2.00 the chip's rate here: the goal — the emulator faster "
                                                       "than the chip on this CPU — is met")])
def test_perf_md_netx_section(tmp_path, emu_fps, verdict):
    """bench/netx_pilotnet_speed.py's JSON → the netx section: the chip, the emulator, its roof, our
    Lava and netx's, side by side; the verdict follows the numbers."""
    src = tmp_path / "n.json"
    src.write_text(json.dumps(_netx_json(emu_fps)))
    page = tmp_path / "PERF.md"
    load("perf_md").main(["--netx", str(src), "--out", str(page)])
    md = page.read_text()
    assert "## netx: PilotNet LIF, Loihi 2 vs emulator vs Lava" in md and verdict in md
    assert f"| our emulator (CPU) | {emu_fps:.2f} | ×1 |" in md and "| 408.91 |" in md
    assert "| lava-dl netx in Lava, `fixed_pt` | 0.500 |" in md and "readouts equal" in md


@pytest.mark.slow
def test_artefact_size_bench_runs_both_formats(lava_run, tmp_path, capsys, monkeypatch):
    """The whole benchmark on a small run: the baseline commit's code (git archive) writes and reads
    the previous format, this tree's the compact one; the two simulations agree spike for spike."""
    monkeypatch.syspath_prepend(str(BENCH))  # artefact_size imports its sibling paper_runs
    r = load("artefact_size").main(["--run-dir", str(lava_run), "--samples", "8", "--repeats", "1",
                                    "--json", str(tmp_path / "a.json")])
    old, new = r["variants"]
    assert (old["export"]["format"], new["export"]["format"]) == ("htakl-lava-plan/1", "htakl-lava-plan/2")
    assert old["load"][0]["package"] != new["load"][0]["package"]
    assert new["export"]["members"]["float weights"] == 0 < old["export"]["members"]["float weights"]
    assert r["ratios"]["file"] < 0.25 and r["spikes_identical"]
    assert "artefact new/old" in capsys.readouterr().out


def test_performance_page_netx_section_is_the_archived_bench_json():
    """docs/PERFORMANCE.md's PilotNet section is what perf_md renders from the committed JSON of
    bench/netx_pilotnet_speed.py (bench/results_archive/netx_pilotnet_speed.json)."""
    r = json.loads((BENCH / "results_archive" / "netx_pilotnet_speed.json").read_text())
    page = (BENCH.parent / "docs" / "PERFORMANCE.md").read_text()
    assert "\n".join(load("perf_md").netx_section(r)).strip() in page


def test_performance_page_ray_section_is_the_archived_bench_json():
    """docs/PERFORMANCE.md's Ray section is what perf_md renders from the committed JSON of
    bench/ray_scale.py (bench/results_archive/ray_scale.json), and that run found every Ray
    result equal to the one-process one."""
    r = json.loads((BENCH / "results_archive" / "ray_scale.json").read_text())
    page = (BENCH.parent / "docs" / "PERFORMANCE.md").read_text()
    assert "\n".join(load("perf_md").ray_section(r)).strip() in page
    assert r["grid"]["all_identical"] and r["grid"]["killed"]["student_epochs_done"] >= 1
    assert all(r["shards"][k] for k in ("spikes_file_identical", "simulate_json_identical", "energy_identical")) \
        if "shards" in r else True
