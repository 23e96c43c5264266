"""What writing HDF5 through ``atomic.AtomicH5``'s Python file object costs (issue 29).

libhdf5 crashes (SIGSEGV) when a file whose write failed is closed, so every HDF5 writer (spike
files, NIR, netx) now writes into a file object that records a refused write instead of failing
inside the library. This bench writes the same spike recording both ways, interleaved and
repeated: ``direct`` (h5py opens the temporary file itself: the code before) and ``sink`` (the
file object). Recording: a ResNet-20-sized set of LIF layers (about 130k neurons in all) at 10 %
random firing, T=4, ``--samples`` samples in batches of 64 (``SpikeWriter``, gzip-1 packed bits).

    python bench/h5_sink.py [--samples 512] [--repeats 5] [--json out.json]

Prints the median wall time per variant, the ratio, and the load (``os.getloadavg``) before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import AtomicH5
from htakl_deploy.energy.spikefile import SpikeWriter, read_spikes

LAYERS = {f"stage{s}.block{b}.act{a}": (16 * 2**s, 32 // 2**s, 32 // 2**s)
          for s in range(3) for b in range(3) for a in range(2)}


def _direct(self):
    """The old way: h5py opens the temporary file by name (its own POSIX driver)."""
    import h5py

    if self._h5 is None:
        self._h5 = h5py.File(self._target.tmp, "w")
    return self._h5


def write_once(path: Path, samples: int, batch: int, rng: np.random.Generator) -> float:
    t0 = time.perf_counter()
    with SpikeWriter(path, layer_shapes=LAYERS, timesteps=4, attrs={"backend": "bench"}) as w:
        for s0 in range(0, samples, batch):
            b = min(batch, samples - s0)
            w.append(layers={n: rng.random((4, b, *shape)) < 0.1 for n, shape in LAYERS.items()},
                     input=np.zeros((4, b, 3, 32, 32), np.uint8))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    load = [os.getloadavg()[0]]
    times: dict[str, list[float]] = {"direct": [], "sink": []}
    sink_h5 = AtomicH5.h5
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for variant in (("direct", "sink") if r % 2 == 0 else ("sink", "direct")):
                AtomicH5.h5 = property(_direct) if variant == "direct" else sink_h5
                rng = np.random.default_rng(r)  # the same spikes for both variants of a repeat
                times[variant].append(write_once(Path(tmp) / f"{variant}.h5", args.samples, 64, rng))
        AtomicH5.h5 = sink_h5
        size = (Path(tmp) / "sink.h5").stat().st_size
        a, b = (read_spikes(Path(tmp) / f"{v}.h5") for v in ("direct", "sink"))  # the last repeat: same spikes
        identical = a.layers.keys() == b.layers.keys() and all(np.array_equal(a.layers[k], b.layers[k]) for k in a.layers)
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"samples": args.samples, "neurons": sum(int(np.prod(s)) for s in LAYERS.values()), "timesteps": 4,
              "file_mb": size / 1e6, "times_s": times, "median_s": med, "sink_over_direct": med["sink"] / med["direct"],
              "identical": identical, "load": load, "cores": os.cpu_count()}
    print(f"{args.samples} samples, {result['neurons']} neurons, T=4, file {result['file_mb']:.1f} MB; "
          f"load {load[0]:.1f} -> {load[1]:.1f} on {result['cores']} cores")
    for k in times:
        print(f"  {k:6s} median {med[k]:.3f} s  ({', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"  sink / direct = {result['sink_over_direct']:.3f}; the two files hold the same spikes: {identical}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
