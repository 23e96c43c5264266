"""PilotNet LIF on this CPU next to Loihi 2: frames per second of our emulator, our Lava builder and
lava-dl's own netx in Lava (``Loihi2SimCfg`` ``fixed_pt``), side by side in one run, 16 steps per
frame as Intel's benchmark runs it, next to the chip's measured 408.91 frames/s (Intel's notebook
for this network: lava-dl ``tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb``, outputs kept:
74 cores on one Loihi 2 chip, 408.91 frames/s, 0.679 W, 1.661 mJ per frame).

Run: ``python bench/netx_pilotnet_speed.py [LAVA_DL] [--frames 32] [--lava-frames 2] [--repeats 3]
[--json OUT]`` (the run docs/PERFORMANCE.md shows: bench/results_archive/netx_pilotnet_speed.json,
rendered by ``bench/perf_md.py --netx``); ``LAVA_DL`` as for ``bench/netx_groundtruth.py`` (the network and its image are read
from there, never copied here). Frames: the published image with a small deterministic jitter per
frame (±3 grey levels), so no two frames are the same. The variants run one after another in this
process, the emulator's repeats interleaved before and after the Lava runs; medians are reported
with the load average. Every frame's spikes are checked equal across the three on the Lava frames.
Where the emulator's time goes: one profiled run split into convolutions, the fused neuron loop and
the rest, and the float32 convolution roof (the network's convolutions alone on the same spikes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netx_groundtruth import DEFAULT_LAVA_DL, LIF_DIR, Source  # noqa: E402

from htakl_deploy.hw.loihi2_published import load_published  # noqa: E402

_PUB = load_published()["pilotnet_lif"]  # Intel's measured run of this network (published figures)
CHIP_FPS = _PUB["frames_per_s"]
CHIP = {"frames_per_s": CHIP_FPS, "cores": _PUB["total_cores"], "watts": _PUB["power_total_w"],
        "mj_per_frame": _PUB["energy_total_mj_per_frame"], "source": _PUB["source"] + " (Intel Labs, outputs kept)"}
STEPS_PER_FRAME = 16


def frames(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``[16, n, C, H, W]`` integer frames: the image (torch order) ± 3 grey levels per frame."""
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-3, 4, size=(n, *image.shape))
    x = np.clip(image[None] + jitter, 0, 255).astype(np.int64)
    return np.broadcast_to(x, (STEPS_PER_FRAME, *x.shape)).copy()


def netx_lava_fps(net_path, x: np.ndarray) -> tuple[float, np.ndarray]:
    """lava-dl's netx in Lava on ``x``'s frames back to back (its own reset every 16 steps; the input
    layer's bias written each step), only the readout's v recorded: (frames/s of the run, v)."""
    from htakl_deploy.hw.netx_reference import import_netx

    netx = import_netx()  # first: it makes lava-nc importable on Python 3.11 (hw.lava_compat)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from htakl_deploy.hw.lava_net import _from_lava_record, _to_lava_order
    from htakl_deploy.hw.lava_procs.bias import BiasWriter
    from htakl_deploy.hw.lava_procs.recorder import _SHARED, VarRecorder, create_recording, release
    t, n = x.shape[:2]
    t0 = time.perf_counter()
    net = netx.hdf5.Network(net_config=str(net_path), reset_interval=t)
    steps = n * t + len(net.layers)
    series = _to_lava_order(x)
    data = np.concatenate([series, np.zeros((*series.shape[:-1], steps - series.shape[-1]), np.int64)], -1)
    net.in_layer.neuron.bias_mant.init = data[..., 0].astype(np.int32)
    BiasWriter(var=net.in_layer.neuron.bias_mant, data=data.astype(np.int32))
    key, _ = create_recording(tuple(net.out_layer.neuron.v.shape), steps, np.int64)
    VarRecorder(var=net.out_layer.neuron.v, key=key)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = _SHARED[key].copy()
    finally:
        net.stop()
        release(key)
    wall = time.perf_counter() - t0
    return n / wall, _from_lava_record(v, len(net.layers) - 1, n, t)


def profile_split(plan, x) -> dict:
    """One profiled emulator run: the share of its time in convolutions, the fused neuron loop, the
    per-step neuron update (general path) and everything else."""
    from htakl_deploy.hw.emulator import emulate

    prof = cProfile.Profile()
    prof.enable()
    emulate(plan, x, x_is_int=True)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = max(v[3] for k, v in stats.items() if k[2] == "emulate")  # cumulative time of the call
    own = {k[2]: v[2] for k, v in stats.items()}  # tottime by function name
    conv = sum(v[2] for k, v in stats.items() if "conv2d" in k[2])
    loop = own.get("_lif_loop", 0.0) + own.get("_lif_elem", 0.0)
    return {"total_s": total, "convolution_s": conv, "neuron_loop_s": loop, "other_s": max(0.0, total - conv - loop)}


def conv_roof(plan, x) -> float:
    """Seconds of the network's float32 convolutions alone on its recorded spikes (the same batch):
    what a dense emulator cannot go below on this CPU."""
    import torch

    from htakl_deploy.hw.emulator import emulate

    emu = emulate(plan, x, x_is_int=True)
    inputs = {link.name: (torch.from_numpy(x.astype(np.float32)) if link.src == "input" else
                          torch.from_numpy(emu.spikes[link.src].astype(np.float32)), link)
              for link in plan.links if link.conv is not None}
    t0 = time.perf_counter()
    with torch.no_grad():
        for s, link in inputs.values():
            c = link.conv
            w = torch.from_numpy(np.asarray(c["weight"]).astype(np.float32))
            torch.nn.functional.conv2d(s.reshape(-1, *s.shape[2:]), w, None, c["stride"], c["padding"],
                                       c["dilation"], c["groups"])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lava_dl", nargs="?", default=DEFAULT_LAVA_DL)
    ap.add_argument("--frames", type=int, default=32, help="frames the emulator runs per repeat")
    ap.add_argument("--lava-frames", type=int, default=2, help="frames each Lava run takes (slow)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the results as JSON (bench/perf_md.py --netx)")
    args = ap.parse_args(argv)
    for flag, v in (("--frames", args.frames), ("--lava-frames", args.lava_frames), ("--repeats", args.repeats)):
        if v < 1:
            print(f"netx_pilotnet_speed: {flag} must be >= 1", file=sys.stderr)
            return 2
    src = Source(args.lava_dl)
    net, image = src.file(f"{LIF_DIR}/network.net"), src.file(f"{LIF_DIR}/image.npy")
    if net is None or image is None:
        print(f"netx_pilotnet_speed: {args.lava_dl} lacks {LIF_DIR}/network.net or image.npy", file=sys.stderr)
        return 2
    import torch

    from htakl_deploy.export.netx_in import read_netx
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.plan import plan_from_quantized

    plan = plan_from_quantized(read_netx(net))
    img = np.load(image).astype(np.int64).transpose(2, 1, 0)
    x = frames(img, args.frames)
    xl = x[:, :args.lava_frames]
    load_before = list(os.getloadavg())
    emulate(plan, x[:, :2], x_is_int=True)  # warm-up: numba's cache, torch's kernels

    def emu_once() -> float:
        t0 = time.perf_counter()
        emulate(plan, x, x_is_int=True)
        return args.frames / (time.perf_counter() - t0)

    emu_fps = [emu_once() for _ in range(args.repeats)]
    timings: dict = {}
    t0 = time.perf_counter()
    ours = run_lava(plan, xl, x_is_int=True, timings=timings, copies=1)
    ours_fps = args.lava_frames / (time.perf_counter() - t0)
    netx_fps, netx_v = netx_lava_fps(net, xl)
    emu_fps += [emu_once() for _ in range(args.repeats)]
    check = emulate(plan, xl, x_is_int=True)
    agree = {"our_lava_spikes_equal": all(np.array_equal(ours.spikes[k], v) for k, v in check.spikes.items()),
             "our_lava_readout_equal": bool(np.array_equal(ours.readout_u, check.readout_u)),
             "netx_readout_equal": bool(np.array_equal(netx_v, check.readout_u))}
    split = profile_split(plan, x)
    roof_s = conv_roof(plan, x)
    r = {"network": "PilotNet LIF (lava-dl tests/lava/lib/dl/netx/gts/pilotnet_lif/network.net)",
         "source": src.describe(), "steps_per_frame": STEPS_PER_FRAME, "frames": args.frames,
         "lava_frames": args.lava_frames, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
         "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": list(os.getloadavg()),
         "emulator_fps": emu_fps, "emulator_fps_median": statistics.median(emu_fps),
         "our_lava_fps": ours_fps, "our_lava_timings": timings, "netx_lava_fps": netx_fps,
         "chip": CHIP, "agreement": agree, "emulator_split": split, "conv_roof_s": roof_s,
         "conv_roof_fps": args.frames / roof_s,
         "chip_over_emulator": CHIP_FPS / statistics.median(emu_fps)}
    print(json.dumps({k: r[k] for k in ("emulator_fps_median", "our_lava_fps", "netx_lava_fps", "conv_roof_fps",
                                        "chip_over_emulator", "agreement", "emulator_split")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
