"""Cutting one population into per-core tiles, and putting small layers together on shared cores.

Two ways to tile a population of shape (C, H, W) (a flat one is (N, 1, 1)):

- ``compiler``: as Lava's Loihi 2 compiler partitioned the networks Intel published (lava-dl's
  benchmark notebooks; hw/targets/loihi2.toml): a convolutional layer keeps all its channels and
  rows and is cut into columns, the tile width a power of two halved until the core's limits hold
  (PilotNet: 16 × 66 × 3, 4 × 32 × 24, 4 × 15 × 36, 8 × 7 × 48, 8 × 4 × 64, 16 × 2 × 64, exactly the
  published tiles; the neurons are counted over the tile's power-of-two width even where the layer
  is narrower, as the compiler does: 64 × 2 × 20 goes on two cores of 64 × 2 × 16); where the synapse memory or the input axons overflow, the channels are halved
  first, and rows only once a single column overflows (Intel's YOLO-KP compile has such tiles). A
  flat layer is cut into equal blocks, their number multiplied by the worst overrun
  (⌈use / limit⌉) until everything fits: PilotNet's 2,560 → 100 dense layer: 61,440 synapse words
  on one core → 6 blocks of 17 neurons (12,800 words) → 12 blocks of 9, the published 12 cores.
- ``fewest``: the fewest cores. For every tile height/width that gives a distinct number of
  row/column tiles, the largest channel block that satisfies every limit on every tile is found by
  bisection (usage grows with the block), then evened out (as many blocks, equal sizes); the
  tiling with the fewest cores wins, ties broken by the fewest input axons summed over its cores
  (each is a route that every spike of that source neuron travels: inter-core traffic). Where use
  does not grow with the block (partial-sum relays: a block straddling two groups takes both
  groups' axons) the bisection can miss a larger block; the compiler's tiling is then taken where
  it has fewer cores, so ``fewest`` is never worse than ``compiler``.

``pack`` then puts the tiles of layers that fit on one core together, up to the target's
``neuron_groups_per_core`` layers per core, first-fit decreasing, every limit summed over the
layers sharing a core (Loihi 2 holds several neuron groups per core: 8 in Intel's tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from htakl_deploy.errors import UserError
from htakl_deploy.hw.map_geom import Tiling, shape3
from htakl_deploy.hw.target import Target

STRATEGIES = ("compiler", "fewest")
LIMIT_TEXT = {"neurons": "neurons per core", "bits": "synapse memory bits per core",
              "input_axons": "input axons per core (fan-in)", "output_axons": "output axons per core (fan-out)"}


@dataclass
class LayerMap:
    name: str
    shape: tuple[int, ...]
    tiling: Tiling
    links: list  # geometries of the incoming (on-chip) links
    stats: dict  # per tile: neurons, synapses, bits, input_axons, output_axons
    core_ids: np.ndarray | None = None  # global core of every tile (set by the mapper)
    fan_in_max: int = 0
    fan_out_max: int = 0
    synapses: int = 0
    min_bits: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def cores(self) -> int:
        return self.tiling.n_tiles

    @property
    def first_core(self) -> int:
        return int(self.core_ids.min())

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))


def limits(t: Target) -> dict[str, int]:
    return {"neurons": t.neurons_per_core, "bits": t.synapse_memory_bits_per_core,
            "input_axons": t.input_axons_per_core, "output_axons": t.output_axons_per_core}


def usage(st: dict, key: str) -> np.ndarray:
    """Per-tile use of the limit ``key`` (neurons: as allocated)."""
    return st["allocated_neurons"] if key == "neurons" else st[key]


def tile_stats(tiling: Tiling, geoms: list, out_axons: Callable) -> dict[str, np.ndarray]:
    n = tiling.n_tiles
    st = {"neurons": tiling.sizes().reshape(-1).astype(np.float64), "synapses": np.zeros(n), "bits": np.zeros(n),
          "input_axons": np.zeros(n), "allocated_neurons": tiling.allocated().astype(np.float64)}
    for g in geoms:
        for k, v in g.tile_stats(tiling).items():
            st[k] = st[k] + v
    st["output_axons"] = np.asarray(out_axons(tiling), dtype=np.float64)
    return st


def _overrun(st: dict, t: Target) -> dict[str, float]:
    return {k: float(usage(st, k).max(initial=0)) / lim for k, lim in limits(t).items()}


def fits(st: dict, t: Target) -> bool:
    return max(_overrun(st, t).values()) <= 1


def single_neuron_problem(shape, geoms: list, out_axons: Callable, t: Target) -> str | None:
    """Why a core holding one neuron of this layer breaks a limit, or None if it fits."""
    st = tile_stats(Tiling(shape3(shape), 1, 1, 1), geoms, out_axons)
    bad = [k for k, lim in limits(t).items() if st[k].max(initial=0) > lim]
    if not bad:
        return None
    return "a single neuron needs " + " and ".join(
        f"{int(st[k].max())} {LIMIT_TEXT[k]} (limit {limits(t)[k]})" for k in bad)


def _axis_sizes(n: int) -> list[int]:
    """Tile sizes giving every distinct number of tiles along an axis of length n, largest first."""
    return sorted({-(-n // k) for k in range(1, n + 1)}, reverse=True)


def _fewest(shape3_, geoms, out_axons, t: Target):
    c, h, w = shape3_
    best, best_key = None, None
    combos = sorted(((th, tw) for th in _axis_sizes(h) for tw in _axis_sizes(w)),
                    key=lambda p: (-(-h // p[0])) * (-(-w // p[1])))
    for th, tw in combos:
        spatial = (-(-h // th)) * (-(-w // tw))
        if best_key is not None and spatial > best_key[0]:
            break
        lo, hi, found = 1, c, None
        while lo <= hi:  # the largest channel block that fits (usage grows with the block)
            mid = (lo + hi) // 2
            til = Tiling(shape3_, mid, th, tw)
            s = tile_stats(til, geoms, out_axons)
            if fits(s, t):
                found, lo = (til, s), mid + 1
            else:
                hi = mid - 1
        if found is None:
            continue
        til, s = found
        even = -(-c // -(-c // til.channels))  # as many channel blocks, evened out (balanced cores)
        if even < til.channels:
            til_e = Tiling(shape3_, even, th, tw)
            s_e = tile_stats(til_e, geoms, out_axons)
            if fits(s_e, t):
                found = til, s = til_e, s_e
        key = (til.n_tiles, float(s["input_axons"].sum()))
        if best_key is None or key < best_key:
            best, best_key = found, key
    return best


def _compiler(shape3_, geoms, out_axons, t: Target):
    c, h, w = shape3_
    if h == 1 and w == 1:  # a flat layer: equal blocks, their number times the worst overrun
        k = 1
        while True:
            til = Tiling(shape3_, -(-c // k), 1, 1)
            s = tile_stats(til, geoms, out_axons)
            worst = max(_overrun(s, t).values())
            if worst <= 1:
                return til, s
            if til.channels == 1:
                return None
            k = min(c, k * int(np.ceil(worst)))
    ch, rows, cols = c, h, 1 << max(0, (w - 1).bit_length())  # the width rounded up to a power of two
    while True:
        til = Tiling(shape3_, ch, rows, cols, full=True)  # allocated whole, also past the edge
        s = tile_stats(til, geoms, out_axons)
        over = _overrun(s, t)
        if max(over.values()) <= 1:
            return til, s
        if (over["bits"] > 1 or over["input_axons"] > 1) and ch > 1:
            ch = -(-ch // 2)  # memory and input axons grow with the channels a core holds
        elif cols > 1:
            cols //= 2
        elif rows > 1:
            rows = -(-rows // 2)
        elif ch > 1:
            ch = -(-ch // 2)
        else:
            return None


def tile_population(name: str, shape, geoms: list, out_axons: Callable, t: Target,
                    strategy: str = "compiler") -> LayerMap:
    """The population's tiling by ``strategy`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} not in {STRATEGIES}")
    problem = single_neuron_problem(shape, geoms, out_axons, t)
    if problem:
        raise UserError(f"layer {name!r} fits on no {t.name} core: {problem}"
                        " (set a larger limit with --set if the hardware allows it)")
    found = _compiler(shape3(shape), geoms, out_axons, t)
    if strategy == "fewest":  # the search, unless the compiler's tiles are fewer (the search's bisection
        # assumes use grows with the channel block, which a block straddling two relay groups breaks)
        searched = _fewest(shape3(shape), geoms, out_axons, t)
        if found is None or searched[0].n_tiles <= found[0].n_tiles:
            found = searched
    if found is None:  # the one-neuron tiling fits, so only the compiler's halving can miss it
        found = _fewest(shape3(shape), geoms, out_axons, t)
    til, s = found
    return LayerMap(name, tuple(shape), til, geoms, s)


def pack(layers: list[LayerMap], t: Target) -> int:
    """Give every tile its core (``core_ids``): tiles of layers on one core share cores where every
    limit summed and ``neuron_groups_per_core`` allow. Returns the number of cores."""
    lim = limits(t)
    keys = list(lim)
    bins: list[dict] = []  # cores holding single-core layers: summed use, layer count
    next_core = 0
    small = [lm for lm in layers if lm.cores == 1 and t.neuron_groups_per_core > 1]
    for lm in layers:
        if lm not in small:
            lm.core_ids, next_core = np.arange(next_core, next_core + lm.cores), next_core + lm.cores
    use = {id(lm): {k: float(usage(lm.stats, k)[0]) for k in keys} for lm in small}
    for lm in sorted(small, key=lambda x: -max(use[id(x)][k] / lim[k] for k in keys)):
        u = use[id(lm)]
        for b in bins:
            if b["groups"] < t.neuron_groups_per_core and all(b["use"][k] + u[k] <= lim[k] for k in keys):
                break
        else:
            b = {"core": next_core, "use": dict.fromkeys(keys, 0.0), "groups": 0}
            bins.append(b)
            next_core += 1
        b["groups"] += 1
        for k in keys:
            b["use"][k] += u[k]
        lm.core_ids = np.array([b["core"]])
    return next_core
