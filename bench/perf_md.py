"""Write docs/PERFORMANCE.md from the JSON of bench/train_overhead.py, loss_step.py, method_step.py,
emulator_vs_lava.py, counter_overhead.py, scale_out.py, emulator_roof.py, stream_memory.py,
train_memory.py, torch_float.py, artefact_size.py, cli_help.py, netx_pilotnet_speed.py and ray_scale.py.

Run: ``python bench/perf_md.py [--train T.json] [--loss L.json] [--methods M.json] [--lava E.json]
[--counter C.json] [--scale S.json ...] [--roof R.json ...] [--stream S.json ...] [--train-memory M.json]
[--torch-float F.json] [--artefact A.json] [--help-times H.json] [--netx N.json] [--ray R.json] [--note TEXT ...]
[--out docs/PERFORMANCE.md]``. A section whose
JSON is not given is kept as it stands in the current ``--out`` page (the header says which, and the
date of the page they come from), so one benchmark can be re-run and its section replaced alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return sha + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(loads: list) -> str:
    return ", ".join(f"{x:.2f}" for x in loads)


def train_section(t: dict) -> list[str]:
    out = [
        "## Training loop vs a plain SpikingJelly loop",
        "",
        f"`python bench/train_overhead.py --json …` — digits, {t['train_images_per_epoch']} training "
        f"images/epoch, batch {t['batch_size']}, T={t['timesteps']}, KD loss, {t['reps']} interleaved "
        f"epochs per variant (medians), {t['torch_threads']} torch threads; load average "
        f"{load(t['loadavg_before'])} → {load(t['loadavg_after'])}.",
        "",
        "| variant | epoch (s, median) | images/s | peak memory added (MB) |",
        "|---|---|---|---|",
    ]
    names = {"ours": "ours (`fit`, augmentation off)", "plain": "plain SpikingJelly loop",
             "ours+aug": "ours with digits' crop augmentation"}
    for v, label in names.items():
        m = t.get("memory", {}).get(v, {})
        out.append(f"| {label} | {t['epoch_s_median'][v]:.3f} | {t['images_per_s'][v]:.0f} | "
                   f"{m.get('delta_mb', float('nan')):.1f} (RSS {m.get('rss_before_mb', float('nan')):.0f} → "
                   f"peak {m.get('peak_mb', float('nan')):.0f}) |")
    out += [
        "",
        f"**ours / plain epoch time: ×{t['ratio_time_ours_over_plain']:.3f}** (target ≤ 1.10); with "
        f"augmentation ×{t['ratio_time_ours_aug_over_plain']:.3f}. The whole `fit` call of one epoch "
        f"(+ evaluation on 128 test images and the checkpoint) takes "
        f"{t['ours_call_s_median']['ours']:.3f} s.",
        f"Memory: {t.get('memory_note', 'not measured')}.",
        "",
    ]
    return out


def _mem(m: dict | None) -> str:
    """``added (RSS before → peak)`` of a memory record, or a dash."""
    if not m:
        return "—"
    return f"{m['delta_mb']:.1f} (RSS {m['rss_before_mb']:.0f} → peak {m['peak_mb']:.0f})"


def loss_section(cases: list[dict]) -> list[str]:
    first = cases[0]
    mem_steps = next((m["steps"] for c in cases for m in c.get("memory", {}).values()), None)
    steps = ", ".join(f"{c['steps']}" for c in cases)
    out = [
        "## HTA-KL vs KD training step",
        "",
        f"`python bench/loss_step.py --steps {first['steps']}"
        + (f" --mem-steps {mem_steps}" if mem_steps else "") + " --json …` — one training step "
        f"(student forward over T={first['timesteps']} time steps, the loss against the frozen ANN "
        f"teacher's logits, backward, SGD with momentum) on the same student and batch of "
        f"{first['batch']} images with each loss, the two interleaved step by step after 3 warm-up "
        f"steps each ({steps} steps per loss in the cases below; medians), "
        f"{first.get('torch_threads', '?')} torch threads; load average {load(first['loadavg_before'])} "
        f"→ {load(cases[-1]['loadavg_after'])}. \"loss alone\": the loss function on fixed outputs "
        "(mean of 200 calls).",
        "",
        "| case | loss | step (ms, median) | images/s | loss alone (ms) | peak memory added (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        label = c.get("label") or f"{tuple(c['in_shape'])}, {c.get('num_classes', '?')} classes"
        for m, name in (("kd", "KD"), ("hta-kl", "HTA-KL")):
            t = c["step_s_median"][m]
            out.append(f"| {label if m == 'kd' else ''} | {name} | {1e3 * t:.2f} | {c['batch'] / t:.0f} | "
                       f"{1e3 * c['loss_only_s'][m]:.3f} | {_mem(c.get('memory', {}).get(m))} |")
    short = {"digits": "digits convnet", "28x28": "28×28 convnet", "1000-classes": "1000 classes"}
    ratios = "; ".join(f"{short.get(c.get('case'), c.get('case') or tuple(c['in_shape']))} "
                       f"×{c['step_ratio_hta_over_kd']:.3f}" for c in cases)
    out += [
        "",
        f"**HTA-KL / KD step time: {ratios}** (target ≤ 1.05). The loss alone: HTA-KL / KD "
        + ", ".join(f"×{c['loss_only_ratio']:.2f}" for c in cases) + " (same order).",
        f"Memory: {first.get('memory_note', 'not measured')}.",
        "",
    ]
    return out


def methods_section(r: dict) -> list[str]:
    """Every method's training step relative to KD (``bench/method_step.py``)."""
    methods = sorted(r["step_s_median"], key=lambda m: (m != "kd", m))
    out = [
        "## Every method's training step vs KD",
        "",
        f"`python bench/method_step.py --steps {r['steps']} --batch {r['batch']} --timesteps {r['timesteps']} "
        f"--json …` — the training loop's own step (`methods.inputs.loss_inputs`: student forward over "
        f"T={r['timesteps']} with the method's taps, the teacher's logits / tapped features / Grad-CAM as the "
        f"method declares, the loss, backward, SGD over the student and the method's own module if it has "
        f"one) on the digits convnet and one batch of {r['batch']} digits images {tuple(r['in_shape'])}; all "
        f"methods interleaved step by step in rotating order after one warm-up step each, {r['steps']} steps "
        f"per method (medians), {r.get('torch_threads', '?')} torch thread(s); load average "
        f"{load(r['loadavg_before']) if 'loadavg_before' in r else '?'} → "
        f"{load(r['loadavg_after']) if 'loadavg_after' in r else '?'}.",
        "",
        "| method | step (ms, median) | / KD | teacher backward passes per step (first stage, classifier) |",
        "|---|---|---|---|",
    ]
    for m in methods:
        b = r["teacher_backwards_per_step"][m]
        out.append(f"| {m} | {1e3 * r['step_s_median'][m]:.2f} | ×{r['ratio_to_kd'][m]:.3f} | "
                   f"{b['first_stage']}, {b['classifier']} |")
    new = [m for m in ("lasnn", "bkdsnn") if m in r["ratio_to_kd"]]
    if new:
        out += ["", "**Step time / KD: " + ", ".join(f"{m} ×{r['ratio_to_kd'][m]:.3f}" for m in new) + "** "
                "(lasnn: attention maps at every stage, no parameters; bkdsnn: pooled last stage, its "
                "generator's forward/backward and SGD update)."]
    same = [r["ratio_to_kd"][m] for m in ("ce", "kd", "rkl", "fixed") if m in r["ratio_to_kd"]]
    if len(same) > 1:
        out += [f"ce, kd, rkl and fixed do the same student forward and backward and differ only in a few "
                f"operations on [B, K] logits; their spread, ×{min(same):.3f} … ×{max(same):.3f}, is this "
                "run's measurement noise."]
    return out + [""]


def netx_section(r: dict) -> list[str]:
    """PilotNet LIF: emulator, our Lava, lava-dl netx in Lava and Loihi 2 (``bench/netx_pilotnet_speed.py``)."""
    sp = r["emulator_split"]
    tot = sp["total_s"] or 1.0
    agree = r["agreement"]
    chip = r["chip"]
    out = [
        "## netx: PilotNet LIF, Loihi 2 vs emulator vs Lava",
        "",
        f"`python bench/netx_pilotnet_speed.py --frames {r['frames']} --lava-frames {r['lava_frames']} --repeats "
        f"{r['repeats']} --json …` — Intel's PilotNet LIF netx file (read from {r['source']}, not copied here), "
        f"{r['steps_per_frame']} steps per frame as Intel's benchmark runs it, frames back to back; the emulator "
        f"on {r['frames']} frames ({2 * r['repeats']} runs, before and after the Lava runs; median), our Lava builder "
        f"and lava-dl's netx in Lava `fixed_pt` on {r['lava_frames']} frame(s) each, in the same process, "
        f"{r['torch_threads']} torch threads; load average {load(r['load_before'])} → {load(r['load_after'])}.",
        "",
        "| system | frames/s | × emulator |",
        "|---|---|---|",
        f"| Loihi 2 (Intel's measurement: {chip['cores']} cores, {chip['watts']} W, {chip['mj_per_frame']} mJ/frame; "
        f"{chip['source']}) | {chip['frames_per_s']:.2f} | ×{chip['frames_per_s'] / r['emulator_fps_median']:.1f} |",
        f"| our emulator (CPU) | {r['emulator_fps_median']:.2f} | ×1 |",
        f"| the emulator's float32 convolution roof (its convolutions alone) | {r['conv_roof_fps']:.2f} | "
        f"×{r['conv_roof_fps'] / r['emulator_fps_median']:.2f} |",
        f"| our Lava builder, `fixed_pt` | {r['our_lava_fps']:.3f} | ×{r['our_lava_fps'] / r['emulator_fps_median']:.4f} |",
        f"| lava-dl netx in Lava, `fixed_pt` | {r['netx_lava_fps']:.3f} | "
        f"×{r['netx_lava_fps'] / r['emulator_fps_median']:.4f} |",
        "",
        f"Same integers: our Lava's spikes {'=' if agree['our_lava_spikes_equal'] else '≠'} the emulator's on every "
        f"layer, readouts {'equal' if agree['our_lava_readout_equal'] and agree['netx_readout_equal'] else 'DIFFER'} "
        "(ours and netx's). Where the emulator's time goes (one profiled run): convolutions "
        f"{100 * sp['convolution_s'] / tot:.0f} %, the fused neuron loop {100 * sp['neuron_loop_s'] / tot:.0f} %, the "
        f"rest {100 * sp['other_s'] / tot:.0f} % (float32 conversions, bounds, the input layer). " + (
            f"The emulator is ×{1 / r['chip_over_emulator']:.2f} the chip's rate here: the goal — the emulator "
            "faster than the chip on this CPU — is met." if r["chip_over_emulator"] < 1 else
            f"The chip stays ×{r['chip_over_emulator']:.1f} faster than the emulator here: the goal — the emulator "
            f"faster than the chip on this CPU — is not met (its float32 convolutions alone run at "
            f"{r['conv_roof_fps']:.0f} frames/s)."),
        "",
    ]
    return out


SECTION_TITLES = {"train": "Training loop vs a plain SpikingJelly loop", "loss": "HTA-KL vs KD training step",
                  "methods": "Every method's training step vs KD", "lava": "Emulator vs Lava",
                  "counter": "Energy counter vs inference", "scale": "Scale-out: torchrun, 2 processes vs 1",
                  "roof": "Emulator vs float32 forward and roof", "stream": "Streaming: peak memory vs samples",
                  "train_memory": "Training memory: activation checkpointing",
                  "torch_float": "torch-float backend: float32 vs float64",
                  "artefact": "Lava artefact: size, load and simulate's memory",
                  "help": "Command line: --help time per subcommand",
                  "netx": "netx: PilotNet LIF, Loihi 2 vs emulator vs Lava",
                  "ray": "Grids and shards on Ray"}


KEPT_PREFIX = "- kept unchanged from an earlier page ("
KEPT_SEP = " — sections: "


def page_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A page's header lines and its sections (title → lines, the ``## title`` line included)."""
    header, sections, current = [], {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        (sections[current] if current else header).append(line)
    return header, sections


def lava_section(e: dict) -> list[str]:
    mem = e.get("memory", {})
    lava_m, emu_m, old_m = mem.get("lava"), mem.get("emulator"), mem.get("lava-old")

    def tree(m: dict | None) -> str:
        if not m:
            return "—"
        if not m.get("children"):
            return f"{m['peak_mb']:.0f} (one process)"
        return (f"{m['peak_mb']:.0f} (process {m['parent']['peak_mb']:.0f} + {m['children']} child "
                f"processes {m['children_private_peak_mb']:.1f} private; tree Pss peak "
                f"{m['tree_pss_peak_mb']:.0f})")

    agree = e["spike_agreement"]
    same = "yes" if agree == 1.0 else f"no ({100 * agree:.4f} % of spikes agree)"
    out = [
        "## Emulator vs Lava",
        "",
        f"`python bench/emulator_vs_lava.py RUN_DIR --samples {e['samples']} --repeats "
        f"{e.get('repeats', '?')} --json …` — the exported student `{e['artefact']}`, its first "
        f"{e['samples']} test images, T={e['timesteps']}, in one process: Lava `fixed_pt` "
        "(`Loihi2SimCfg`) once per path — its wall time includes building and compiling the process "
        f"graph, what a user waits for — then the bit-exact emulator {e.get('repeats', '?')} times "
        f"after a warm-up (median); load average {load(e['loadavg_before'])} → {load(e['loadavg_after'])}.",
        "",
        "| backend | time (s) | samples/s | peak memory, process tree (MB) | peak memory added (MB) |",
        "|---|---|---|---|---|",
        *([f"| Lava `fixed_pt`, old path (`hw/lava_net.py` at {e['lava_old_commit']}) | {e['lava_old_s']:.2f} | "
           f"{e['lava_old_samples_per_s']:.2f} | {tree(old_m)} | {_mem(old_m)} |"] if e.get("lava_old_s") else []),
        f"| Lava `fixed_pt` (Loihi2SimCfg) | {e['lava_s']:.2f} | {e['lava_samples_per_s']:.2f} | "
        f"{tree(lava_m)} | {_mem(lava_m)} |",
        f"| bit-exact emulator | {e['emulator_s_median']:.4f} | {e['emulator_samples_per_s']:.0f} | "
        f"{tree(emu_m)} | {_mem(emu_m)} |",
        "",
        *([f"**Lava, new / old path: ×{e['ratio_lava_new_over_old']:.1f}** (target ≥ 10); the old path's "
           f"spikes identical to the emulator's: {'yes' if e['lava_old_spike_agreement'] == 1.0 else 'no'}, "
           f"readout: {'yes' if e['lava_old_readout_identical'] else 'no'}."] if e.get("lava_old_s") else []),
        *([f"New path's phases: {ph['copies']} samples per Lava step; build {ph['build_s']:.2f} s, start "
           f"(compile, fork, first step) {ph['start_s']:.2f} s, {ph['steps']} steps × {1000 * ph['step_s']:.1f} ms, "
           f"read-back {ph['readback_s']:.3f} s; {ph['processes']} OS processes."]
          if (ph := e.get("lava_phases")) else []),
        f"**emulator / Lava throughput: ×{e['ratio_emulator_over_lava']:.0f}**"
        + (f" (×{e['lava_old_s'] / e['emulator_s_median']:.0f} against the old Lava path, which the emulator's "
           "target of ≥ 1000 was set against); " if e.get("lava_old_s") else " (target ≥ 1000); ") +
        f"spikes identical: {same}; "
        f"readout identical: {'yes' if e['readout_identical'] else 'no'}.",
        f"Memory: {e.get('memory_note', 'not measured')}.",
    ]
    if lava_m and lava_m.get("children"):
        out.append(f"Not used for the peak: Lava's children's VmHWM summed, {lava_m['children_hwm_sum_mb']:.0f} MB "
                   "(counts the pages each child shares with the parent once per child), and the largest "
                   f"child's peak RSS from the kernel (ru_maxrss), {lava_m['children_max_rss_mb']:.0f} MB.")
    out.append("")
    return out


def counter_section(c: dict) -> list[str]:
    out = [
        "## Energy counter vs inference",
        "",
        f"`python bench/counter_overhead.py --checkpoint RUN/student/last.pt --json …` — digits, "
        f"{c['samples']} test images, T={c['timesteps']}, {c['repeats']} interleaved repeats (medians), "
        f"{c['torch_threads']} torch threads; load average {load(c['loadavg_before'])} → "
        f"{load(c['loadavg_after'])}. Student: {c['checkpoint'] or 'freshly initialised'}.",
        "",
        "| variant | time (s, median) | samples/s | peak memory added (MB) | tracemalloc peak (MB) |",
        "|---|---|---|---|---|",
    ]
    names = {"float": "float student forward (torch, float32)", "emulator": "bit-exact emulator",
             "count": "`count_ops` (with NeuroBench cross-check, the default)",
             "count-nb-off": "`count_ops(neurobench=False)`"}
    for v, label in names.items():
        m = c.get("memory", {}).get(v, {})
        out.append(f"| {label} | {c['s_median'][v]:.4f} | {c['samples_per_s'][v]:.0f} | "
                   f"{m.get('delta_mb', float('nan')):.1f} | {m.get('tracemalloc_peak_mb', float('nan')):.1f} |")
    out += [
        "",
        f"**count / float forward: ×{c['ratio_count_over_float']:.2f}; count / emulator: "
        f"×{c['ratio_count_over_emulator']:.2f}**; without the NeuroBench cross-check the counter "
        f"takes ×{c['ratio_count_nb_off_over_float']:.2f} of the float forward.",
        f"Memory: {c.get('memory_note', 'not measured')}.",
        "",
    ]
    return out


def scale_section(runs: list[dict]) -> list[str]:
    out = [
        "## Scale-out: torchrun, 2 processes vs 1",
        "",
        "`python bench/scale_out.py [--epochs E --teacher-epochs E_t] --json …` runs "
        "`htakl-deploy distill` three times, one after the other, on the same digits cell (same "
        "global batch, epochs, seed): 1 process × 1 thread; `python -m torch.distributed.run "
        "--nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port <free>` (what "
        "`torchrun --standalone` does), 2 processes × 1 thread (`OMP_NUM_THREADS=1`), global batch "
        "split 64 + 64; and 1 process × 2 threads. images/s = median "
        "of the student's epochs (`metrics.jsonl`, training steps only); wall = the whole command.",
        "",
        "| epochs (student / teacher) | variant | student images/s | wall (s) | student acc | teacher acc | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        f = r["flags"]
        e, et = f[f.index("--epochs") + 1], f[f.index("--teacher-epochs") + 1]
        for v in r["variants"]:
            out.append(f"| {e} / {et} | {v['processes']} proc × {v['threads_per_process']} thread | "
                       f"{v['student_images_per_s_median']:.0f} | {v['wall_s']:.1f} | "
                       f"{100 * v['student_test_acc']:.2f} % | {100 * v['teacher_test_acc']:.2f} % | "
                       f"{load(r['loadavg_before'])} |")
    out.append("")
    for r in runs:
        f = r["flags"]
        e = f[f.index("--epochs") + 1]
        out.append(f"- {e} student epochs: **2 processes / 1 process: throughput "
                   f"×{r['ratio_throughput_nproc_over_1']:.2f}**, wall-time ratio 1 proc / 2 proc ×{r['ratio_wall_1_over_nproc']:.2f} "
                   f"(> 1: two processes finish sooner; start-up of torchrun and gloo included); 2 processes vs 1 process with 2 threads: "
                   f"×{r['ratio_throughput_nproc_over_1p_nthreads']:.2f}; student accuracy "
                   f"{100 * r['acc_diff_nproc_minus_1']:+.2f} pt (360 test images: 1 image = 0.28 pt).")
    out += ["", "With 5 / 2 epochs the teacher is far from trained and every student is near chance, "
            "so only the 20 / 10 row says anything about accuracy. Single-run numbers: no repeats.", ""]
    return out


def roof_section(runs: list[dict]) -> list[str]:
    """One summary row per model, then each model's variants."""
    names = {"emulator": "emulator (hw/kernels fast path)", "emulator-general": "emulator, general int64/float64 path",
             "float32-forward": "float student, float32 forward (SpikingJelly)",
             "roof": "roof: the network's float32 convs/matmuls alone"}
    out = [
        "## Emulator vs float32 forward and roof",
        "",
        "`python bench/emulator_roof.py --model M --images N --json …` — the bit-exact emulator, the float "
        "student's float32 forward and the roof (the network's float32 convolutions and matrix products alone, "
        "on inputs of the emulator's shapes) on the same direct-encoded images, 3×32×32, interleaved reps "
        "(medians), one process. GMAC/s are dense-equivalent: the ANN twin's MACs per image per step × T × "
        "images / time. The students are `paper_runs.make_run(…, firing=…)`'s (their BN set so that the mean "
        "firing rate is a trained network's; the rate measured by the emulator is in the table).",
        "",
        "| model | images | firing rate | emulator (s) | roof (s) | **emulator / roof (GMAC/s)** | emulator / float32 forward (time) | general path / fast path (time) | integers identical | threads | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rows = r["rows"]
        out.append(f"| {r['model']} | {r['images']} | {100 * r['firing_rate']:.3g} % | {rows['emulator']['s']:.2f} | "
                   f"{rows['roof']['s']:.2f} | **{100 * r['emulator_share_of_roof']:.0f} %** | "
                   f"×{r['emulator_vs_float32_forward']:.2f} | ×{r['general_vs_emulator']:.2f} | "
                   f"{r['identical_integers']} | {r['threads']} | {load(r['load_before'])} → {load(r['load_after'])} |")
    for r in runs:
        out += ["", f"**{r['model']}**, T={r['timesteps']}, {r['images']} images, {r['reps']} reps, "
                f"{r['dense_macs_per_step'] / 1e6:.1f} M dense MACs per image per step:", "",
                "| variant | s (median) | images/s | dense-equivalent GMAC/s |", "|---|---|---|---|"]
        for k, row in r["rows"].items():
            out.append(f"| {names.get(k, k)} | {row['s']:.2f} | {row['images_per_s']:.2f} | {row['gmac_per_s']:.2f} |")
        if "machine_roof_gmac_per_s" in r:
            out += ["", f"One large float32 conv (128→128, 3×3, 32×32, batch 64) runs at "
                    f"{r['machine_roof_gmac_per_s']:.1f} GMAC/s here at this load: the network's own convs "
                    "(small maps, many shapes) reach less, and that is the roof an exact emulator can reach."]
    return out + [""]


STREAM_INTRO_LINES = 4  # the title, the description and their blank lines


def stream_section(runs: list[dict]) -> list[str]:
    out = ["## Streaming: peak memory vs samples", "",
           "`python bench/stream_memory.py --json …` — `simulate --backend emulator` (no comparisons) and "
           "`energy` (no NeuroBench counts unless said) on the same spike file, each in a fresh process; peak = "
           "the kernel's VmHWM (reset after imports), so it includes the data set in memory. `simulate` is one "
           "process (numba's and torch's threads inside it), so its peak is the whole process tree's.", ""]
    for r in runs:
        if r.get("stopped"):
            out += stopped_lines(r)
            continue
        rates = [x["firing_rate"] for x in r["rows"] if "firing_rate" in x]
        fires = f", firing rate {100 * rates[-1]:.3g} %" if rates else ""
        nb = (f"energy's NeuroBench samples {', '.join(r['neurobench_variants'])}" if "neurobench_variants" in r
              else f"NeuroBench {'on' if r['neurobench'] else 'off'}")
        out += [f"**{r['model']}**, batch {r['batch_size']}, record {r['record']}, {nb}"
                f"{fires}, {r['threads']} threads, load {load(r['load_before'])} → "
                f"{load(r['load_after'])}:", "",
                "| samples | simulate peak (MB) | simulate wall (s) | emulator (s) | images/s | spikes.h5 (MB) | energy peak (MB) | energy wall (s) |",
                "|---|---|---|---|---|---|---|---|"]
        sims = {x["samples"]: x for x in r["rows"] if x["stage"] == "simulate"}
        ens: dict = {}
        for x in r["rows"]:  # the first energy variant in the main table, every variant below it
            if x["stage"] == "energy":
                ens.setdefault(x["samples"], x)
        for n in sorted(sims):
            a, e = sims[n], ens.get(n, {})
            out.append(f"| {n} | {a['peak_mb']:.0f} | {a['wall_s']:.0f} | {a['emulator_s']:.0f} | "
                       f"{n / a['wall_s']:.1f} | {a['file_mb']:.1f} | "
                       f"{e.get('peak_mb', float('nan')):.0f} | {e.get('wall_s', float('nan')):.0f} |")
        big = sims[max(sims)]
        per = big["wall_s"] / big["samples"]
        if big["samples"] < 10000:
            out += ["", f"Extrapolated to 10,000 images at this load: simulate ≈ {per * 10000 / 3600:.1f} h "
                    f"({per:.2f} s per image), spike file ≈ {big['file_mb'] / big['samples'] * 10000 / 1e3:.2f} GB; "
                    "peak memory stays that of one batch."]
        else:
            out += ["", f"The whole 10,000-image split: simulate {big['wall_s'] / 60:.1f} min at this load, peak "
                    f"{big['peak_mb'] / 1024:.2f} GB; energy {ens.get(big['samples'], {}).get('peak_mb', float('nan')) / 1024:.2f} GB."]
        out += energy_variants(r, sims)
        if "note" in r:
            out.append(r["note"])
        out.append("")
    return out


def energy_variants(r: dict, sims: dict) -> list[str]:
    """The energy runs on one spike file with the NeuroBench cross-check on all, some or none of
    its samples (``stream_memory.py --neurobench-samples``): time each, and energy / simulate."""
    rows = [x for x in r["rows"] if x["stage"] == "energy" and "neurobench_samples" in x]
    if len({x["neurobench_samples"] for x in rows}) < 2:
        return []
    out = ["", "| samples | NeuroBench on | energy peak (MB) | energy wall (s) | energy / simulate |", "|---|---|---|---|---|"]
    for x in rows:
        on = "off" if not x["neurobench_samples"] else f"{x['neurobench_samples']} samples"
        out.append(f"| {x['samples']} | {on} | {x['peak_mb']:.0f} | {x['wall_s']:.0f} | "
                   f"×{x['wall_s'] / sims[x['samples']]['wall_s']:.3f} |")
    n = max(sims)
    ratios = [f"NeuroBench on {'none' if not x['neurobench_samples'] else x['neurobench_samples']} ×"
              f"{x['wall_s'] / sims[n]['wall_s']:.2f}" for x in rows if x["samples"] == n]
    return out + ["", f"**energy / simulate on {n} images: {'; '.join(ratios)}**"]


def stopped_lines(r: dict) -> list[str]:
    """A run stopped before its end (``stream_memory.py --stopped``): rate and memory per batch."""
    rows = r["progress"]
    last = rows[-1]
    rss = [x["vmrss_mb"] for x in rows]
    tail = rows[len(rows) // 2:]
    rate = (tail[-1]["done"] - tail[0]["done"]) / max(tail[-1]["s"] - tail[0]["s"], 1e-9) if len(tail) > 1 else \
        last["done"] / last["s"]
    left_h = (r["target_samples"] - last["done"]) / rate / 3600
    out = [f"**{r['model']}**, batch {r['batch_size']}, record {r['record']}, NeuroBench "
           f"{'on' if r['neurobench'] else 'off'}, {r['threads']} threads — **stopped** after "
           f"{last['done']} of {r['target_samples']} images ({last['s'] / 60:.1f} min; load "
           f"{min(x['load'] for x in rows):.1f}–{max(x['load'] for x in rows):.1f}), from its progress log:", "",
           "| images done | s | load | VmRSS (MB) | VmHWM so far (MB) |", "|---|---|---|---|---|"]
    step = max(1, len(rows) // 8)
    for x in rows[::step] + ([last] if (len(rows) - 1) % step else []):
        out.append(f"| {x['done']} | {x['s']:.0f} | {x['load']:.1f} | {x['vmrss_mb']:.0f} | {x['vmhwm_mb']:.0f} |")
    out += ["", f"Resident memory between batches {min(rss):.0f}–{max(rss):.0f} MB, peak {last['vmhwm_mb']:.0f} MB "
            f"(flat: bounded by the batch). Rate over the second half: {rate:.2f} images/s at this load: the "
            f"remaining {r['target_samples'] - last['done']} images would take ≈ {left_h:.1f} h more.", ""]
    return out


def torch_float_section(r: dict) -> list[str]:
    out = ["## torch-float backend: float32 vs float64", "",
           "`python bench/torch_float.py RUN_DIR … --json …` — the float student (`student_float.nir`), "
           "`hw.simulate.float_student_spikes` in float32 (the backend's dtype, the student's training dtype) and "
           "in float64 on the same test images, interleaved (medians), one process.", "",
           "| run | images | float32 (s) | float64 (s) | float64 / float32 | spikes equal | decisions equal | "
           "max \\|logit diff\\| | accuracy f32 / f64 | load |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        rows = x["rows"]
        out.append(f"| {x['run']} | {x['samples']} | {rows['float32']['s']:.3f} | {rows['float64']['s']:.3f} | "
                   f"×{x['float64_over_float32_time']:.2f} | {100 * x['spike_agreement']:.4f} % "
                   f"({x['spikes_differing']} of {x['spikes_compared']} differ) | {100 * x['decision_agreement']:.2f} % | "
                   f"{x['max_abs_logit_diff']:.1e} | {x['accuracy']['float32']:.4f} / {x['accuracy']['float64']:.4f} | "
                   f"{load(x['load_before'])} |")
    return out + [""]


def ray_section(r: dict) -> list[str]:
    """bench/ray_scale.py: the grid on Ray vs sequential (with a killed worker), and sample shards."""
    out = ["## Grids and shards on Ray", "",
           "`python bench/ray_scale.py --json …` (docs/SCALING.md; variants one after the other, never "
           f"concurrently; git {r.get('git', '?')}).", ""]
    g = r.get("grid")
    if g:
        k = g["killed"]
        out += [
            f"**A {len(g['cells'])}-cell digits grid** (kd, hta-kl × T = 1, 2; {g['epochs']} student / "
            f"{g['teacher_epochs']} teacher epochs, one shared teacher), load average "
            f"{load(g['load_before'])} → {load(g['load_after'])}:", "",
            "| variant | wall (s) |", "|---|---|",
            f"| sequential: one cell after the other in one process, 1 thread, no Ray | {g['sequential_wall_s']:.1f} |",
            f"| `{g['ray_command']}` | {g['ray_wall_s']:.1f} |",
            f"| the same, the worker of `{k['cell']}` SIGKILLed after {k['student_epochs_done']} of its "
            f"{g['epochs']} epochs ({k['seconds_after_start']:.0f} s in) | {g['ray_kill_wall_s']:.1f} |", "",
            f"- **sequential / Ray (2 CPUs, 1 thread per cell): ×{g['ratio_sequential_over_ray']:.2f}** "
            "(Ray's start-up, the teacher that runs alone and the last cell alone included).",
            "- The killed cell ran again at once and continued from its checkpoint; every cell of both Ray "
            "runs equals the sequential run's (teacher and student weights bit for bit, float and emulator "
            "accuracy, every dataset of the emulator's spike file, energy per sample): "
            f"**{'yes' if g['all_identical'] else 'NO'}**.", ""]
    s = r.get("shards")
    if s:
        med = s["simulate_wall_s_median"]
        out += [
            f"**`simulate --backend emulator` on {s['images']} CIFAR-shaped images**, ResNet-20 student at "
            f"{100 * s['firing']:.0f} % firing (`paper_runs.make_run`; measured mean rate "
            f"{100 * s['firing_rate_mean']:.1f} %), spike file {s['spikes_file_bytes'] / 2**20:.0f} MiB; whole "
            f"commands, median of {s['repeats']} interleaved repeats, load average {load(s['load_before'])} → "
            f"{load(s['load_after'])}:", "",
            "| variant | `simulate` wall (s) | `energy --neurobench-samples all` wall (s) |", "|---|---|---|",
            *(f"| {name} | {w:.1f} | {s['energy_wall_s_median'][name]:.1f} |" if name in s["energy_wall_s_median"]
              else f"| {name} | {w:.1f} | |" for name, w in med.items()), "",
            f"- **one process × 1 thread / 2 shards: ×{s['ratio_1thread_over_shards']:.2f}**; one process × 2 "
            f"threads / 2 shards: ×{s['ratio_2threads_over_shards']:.2f} (the shards' time includes starting "
            f"Ray, {s['ray_start_s']:.1f} s, and merging the files; the shards' own: "
            + ", ".join(f"{w:.1f} s" for w in s["shard_wall_s"]) + ").",
            f"- The sharded `spikes.h5` is byte for byte one process's: **{s['spikes_file_identical']}**; "
            f"`simulate.json` the same numbers: **{s['simulate_json_identical']}**; `energy --shards 2` the same "
            f"report ({s['energy_uj_per_sample']:.3f} µJ/sample, "
            f"{s['neurobench_eff_acs_per_sample']:.4g} NeuroBench ACs/sample): **{s['energy_identical']}**.", ""]
    return out


def train_memory_section(t: dict) -> list[str]:
    out = ["## Training memory: activation checkpointing", "",
           "`python bench/train_memory.py --json …` — one HTA-KL step (teacher forward, student forward over T, "
           "loss, backward, SGD) on random 3×32×32 images, each variant in a fresh process; peak = VmHWM reset "
           f"after building the models; step = median after the first; {t['threads']} threads.", "",
           "| model | batch | T | checkpointing | peak (GB) | added over setup (GB) | step (s) | steps | load when done |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        lb = r.get("load_when_done", r.get("load_before", [float("nan")]))[0]
        out.append(f"| {r['model']} | {r['batch']} | {r['timesteps']} | {'on' if r['checkpoint_activations'] else 'off'} | "
                   f"{r['peak_mb'] / 1024:.2f} | {r['delta_mb'] / 1024:.2f} | {r['step_s']:.1f} | {r['steps']} | {lb:.1f} |")
    for q in t["ratios"]:
        out.append(f"\n{q['model']}, batch {q['batch']}: checkpointing uses ×{q['memory_ratio']:.2f} the memory "
                   f"added by the step, at ×{q['step_time_ratio']:.2f} the step time.")
    return out + [""]


def artefact_section(r: dict) -> list[str]:
    old, new = r["variants"]
    out = [f"## {SECTION_TITLES['artefact']}", "",
           f"`python bench/artefact_size.py --model {r['model']} --samples {r['samples']} --batch-size {r['batch_size']} "
           f"--repeats {r['repeats']} --baseline {old['git']} --json …` — the Lava artefact written by `export` from the "
           "same student by the baseline commit's code (imported from `git archive` of that commit) and by this "
           "tree's, then read alone (`read_artefact`) and simulated (`simulate --backend emulator`, no comparisons) "
           "by the code that wrote it; each step in a fresh process, the variants interleaved, medians of "
           f"{r['repeats']}; memory = the kernel's VmHWM reset after imports (simulate's peak includes the data set). "
           f"**{r['model']}** at {100 * r['target_firing']:.3g} % firing, {r['synapses']:,} 8-bit synapses (every "
           f"kernel tap and matrix non-zero), {r['samples']} images, batch {r['batch_size']}, load "
           f"{load(r['load_before'])} → {load(r['load_after'])}:", "",
           "| variant | format | artefact (MB) | bytes / synapse | integer weights (MB) | float weights (MB) | "
           "indices (MB) | read (s) | read: kept (MB) | read: peak (MB) | simulate peak (MB) | simulate (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in (old, new):
        m, b = v["median"], v["export"]["members"]
        out.append(f"| {v['label']} | `{v['export']['format']}` | {m['file_mb']:.1f} | "
                   f"{m['file_mb'] * 1e6 / r['synapses']:.2f} | {b['integer weights'] / 1e6:.1f} | "
                   f"{b['float weights'] / 1e6:.1f} | {b['indices'] / 1e6:.1f} | {m['load_s']:.2f} | "
                   f"{m['load_resident_mb']:.0f} | {m['load_peak_mb']:.0f} | {m['simulate_peak_mb']:.0f} | "
                   f"{m['simulate_s']:.0f} |")
    q = r["ratios"]
    out += ["", f"**New / old: artefact ×{q['file']:.3f} ({q['new_file_over_synapse_bytes']:.2f} bytes per 8-bit "
            f"synapse; goal ≤ 1.5), read time ×{q['load_s']:.2f}, simulate peak ×{q['simulate_peak']:.2f}"
            f" ({old['median']['simulate_peak_mb'] - new['median']['simulate_peak_mb']:.0f} MB less).** "
            f"Every recorded spike of the two simulations identical: {'yes' if r['spikes_identical'] else '**no**'}. "
            "\"read: kept\" is the plan in memory after reading, \"read: peak\" the most the read took on top of "
            "what was there before it (peak − kept = transient copies while reading).", ""]
    return out


def help_section(r: dict) -> list[str]:
    out = ["## Command line: --help time per subcommand", "",
           f"`python bench/cli_help.py --json …` — `python -m htakl_deploy COMMAND --help` in a fresh process per "
           f"call, the commands interleaved, {r['repeats']} rounds (median and minimum wall time); whether the "
           f"process imported torch (`-X importtime`); the interpreter alone and the top-level help for scale. "
           f"Python {r['python']}, load {load(r['load_before'])} → {load(r['load_after'])}.", "",
           "| command | median (s) | min (s) | imports torch |", "|---|---|---|---|"]
    for x in r["rows"]:
        out.append(f"| {x['command']} | {x['median_s']:.3f} | {x['min_s']:.3f} | {'yes' if x['imports_torch'] else 'no'} |")
    cmds = [x for x in r["rows"] if not x["command"].startswith("(")]
    slowest = max(cmds, key=lambda x: x["median_s"])
    return out + ["", f"**slowest subcommand --help: {slowest['command']} {slowest['median_s']:.3f} s (median)**", ""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", help="JSON of bench/train_overhead.py")
    p.add_argument("--loss", help="JSON of bench/loss_step.py (section: HTA-KL vs KD training step)")
    p.add_argument("--methods", help="JSON of bench/method_step.py (section: every method's step vs KD)")
    p.add_argument("--lava", help="JSON of bench/emulator_vs_lava.py (section: emulator vs Lava)")
    p.add_argument("--counter", help="JSON of bench/counter_overhead.py")
    p.add_argument("--scale", action="append", default=[], help="JSON of bench/scale_out.py (repeatable)")
    p.add_argument("--roof", action="append", default=[], help="JSON of bench/emulator_roof.py (repeatable: one per model)")
    p.add_argument("--stream", action="append", default=[], help="JSON of bench/stream_memory.py (repeatable)")
    p.add_argument("--stream-append", action="store_true",
                   help="add the --stream runs below the page's streaming section instead of replacing it")
    p.add_argument("--train-memory", help="JSON of bench/train_memory.py")
    p.add_argument("--torch-float", help="JSON of bench/torch_float.py")
    p.add_argument("--artefact", help="JSON of bench/artefact_size.py")
    p.add_argument("--help-times", help="JSON of bench/cli_help.py")
    p.add_argument("--netx", help="JSON of bench/netx_pilotnet_speed.py (PilotNet LIF: Loihi 2 vs emulator vs Lava)")
    p.add_argument("--ray", help="JSON of bench/ray_scale.py (section: grids and shards on Ray)")
    p.add_argument("--note", action="append", default=[], help="an extra line for the header")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"))
    args = p.parse_args(argv)

    def read(x):
        return json.loads(Path(x).read_text()) if x else None

    t, c, loss, meth, lava = (read(x) for x in (args.train, args.counter, args.loss, args.methods, args.lava))
    scales = [read(x) for x in args.scale]
    roofs = [read(x) for x in args.roof]
    tmem, tfl, art, helps = read(args.train_memory), read(args.torch_float), read(args.artefact), read(args.help_times)
    nx = read(args.netx)
    ray = read(args.ray)
    streams = [read(x) for x in args.stream]
    given = {"train": train_section(t) if t else None, "loss": loss_section(loss) if loss else None,
             "methods": methods_section(meth) if meth else None, "lava": lava_section(lava) if lava else None,
             "counter": counter_section(c) if c else None, "scale": scale_section(scales) if scales else None,
             "roof": roof_section(roofs) if roofs else None, "stream": stream_section(streams) if streams else None,
             "train_memory": train_memory_section(tmem) if tmem else None,
             "torch_float": torch_float_section(tfl) if tfl else None,
             "artefact": artefact_section(art) if art else None,
             "help": help_section(helps) if helps else None,
             "netx": netx_section(nx) if nx else None, "ray": ray_section(ray) if ray else None}
    # a section whose JSON is not given is kept from the page as it was (its numbers, its date)
    old_header, old_sections = page_sections(Path(args.out).read_text(encoding="utf-8")) if Path(args.out).is_file() else ([], {})
    if args.stream_append and streams and SECTION_TITLES["stream"] in old_sections:
        before = old_sections[SECTION_TITLES["stream"]]
        while before and not before[-1].strip():
            before = before[:-1]
        given["stream"] = [*before, "", *given["stream"][STREAM_INTRO_LINES:]]
    kept = [k for k, v in given.items() if v is None and SECTION_TITLES[k] in old_sections]
    body = []
    for key, lines in given.items():
        if lines is not None:
            body += lines
        elif key in kept:
            body += old_sections[SECTION_TITLES[key]]
            if body[-1].strip():  # the page's last section loses its closing blank line
                body.append("")
    old_date = next((line[len("- date: "):] for line in old_header if line.startswith("- date:")), "?")
    old_machine = next((line[len("- machine: "):] for line in old_header if line.startswith("- machine:")), "?")
    # where each kept section was measured: a section the old page had kept keeps its origin
    origin = {}
    for line in old_header:
        if line.startswith(KEPT_PREFIX) and KEPT_SEP in line:
            where, titles = line[len(KEPT_PREFIX):].rsplit(KEPT_SEP, 1)
            origin.update({title: where.removesuffix(")") for title in titles.split("; ")})
    groups: dict[str, list[str]] = {}
    for k in kept:
        title = SECTION_TITLES[k]
        groups.setdefault(origin.get(title, f"date {old_date}, machine {old_machine}"), []).append(title)
    loads = [*([t["loadavg_before"][0]] if t else []), *([loss[0]["loadavg_before"][0]] if loss else []),
             *([meth["loadavg_before"][0]] if meth and "loadavg_before" in meth else []),
             *([lava["loadavg_before"][0]] if lava else []), *([c["loadavg_before"][0]] if c else []),
             *(s["loadavg_before"][0] for s in scales), *(x["load_before"][0] for x in roofs),
             *(x["load_before"][0] for x in streams), *([tmem["load_before"][0]] if tmem else []),
             *(x["load_before"][0] for x in (tfl["runs"] if tfl else [])), *([art["load_before"][0]] if art else []),
             *([helps["load_before"][0]] if helps else []),
             *([nx["load_before"][0]] if nx else []),
             *(ray[k]["load_before"][0] for k in ("grid", "shards") if ray and k in ray)]
    scripts = [*(["train_overhead.py"] if t else []), *(["loss_step.py"] if loss else []),
               *(["method_step.py"] if meth else []), *(["emulator_vs_lava.py"] if lava else []),
               *(["counter_overhead.py"] if c else []), *(["scale_out.py"] if scales else []),
               *(["emulator_roof.py"] if roofs else []), *(["stream_memory.py"] if streams else []),
               *(["train_memory.py"] if tmem else []), *(["torch_float.py"] if tfl else []),
               *(["artefact_size.py"] if art else []), *(["cli_help.py"] if helps else []),
               *(["netx_pilotnet_speed.py"] if nx else []), *(["ray_scale.py"] if ray else [])]
    if not scripts:
        p.error("give the JSON of at least one benchmark")
    listed = (", ".join(f"`bench/{x}`" for x in scripts[:-1]) + " and " if len(scripts) > 1 else "") + f"`bench/{scripts[-1]}`"
    lines = [
        "# Performance",
        "",
        f"Generated by `bench/perf_md.py` from the JSON of {listed} (each measures its variants side "
        "by side in one process or one after the other, never concurrently).",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; git {git_sha()}",
        f"- machine: {os.cpu_count()} CPUs ({cpu_name()}), {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}",
        f"- 1-minute load average at the start of each benchmark: {', '.join(f'{x:.2f}' for x in loads)}"
        + (" — **the machine was shared** (another engineer's jobs ran at times), so absolute "
           "figures are noisy; the ratios are measured interleaved to share the noise"
           if max(loads) > 1.0 else ""),
        *[f"- {n}" for n in args.note],
        *(f"{KEPT_PREFIX}{where}){KEPT_SEP}{'; '.join(titles)}" for where, titles in groups.items()),
        "",
        *body,
    ]
    Path(args.out).write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
