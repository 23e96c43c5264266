"""Does it fit? A quantised network's deployment plan (``hw.plan``) partitioned onto neurocores.

Model of a core (the numbers come from a ``hw.target.Target``): a core holds neurons of **one**
population (as nengo-loihi places one block per core) and, on the destination side as on Loihi,
every synapse that ends on them. Per core:

- neurons <= ``neurons_per_core``;
- input axons <= ``input_axons_per_core``: one per distinct source neuron with a synapse on the
  core (per incoming link);
- output axons <= ``output_axons_per_core``: one per (own neuron, destination core) pair;
- synapse memory <= ``synapse_memory_bits_per_core``: per input axon, its synapses on the core in
  the cheaper of the sparse format (weight + delay + index bits each) and the dense format (one
  weight + delay field per neuron of the core, no index), in entries of at most
  ``synapses_per_entry`` with an ``entry_header_bits`` header, each rounded up to whole
  ``synapse_word_bits`` words. Zero weights of a kernel are stored (they are synapses, as the
  energy counter counts them); a ``dense`` link stores its full matrix; a link the plan keeps as
  a sparse matrix (no kernel) stores its non-zero weights only, as Lava's Sparse does.

The input link (the encoding layer) is computed off-chip in the plan (its currents are fed to the
first population), so it takes no synapse memory here; its MACs are reported separately.

**Partition.** A population of shape (C, H, W) (a flat one is (N, 1, 1)) is cut into a grid of
tiles: ``channels`` output channels × ``rows`` × ``cols`` output positions per tile (dense layers:
blocks of output neurons); one tile per core. For every tile height/width that gives a distinct
number of row/column tiles, the largest channel block that satisfies every limit on every tile is
found by bisection (usage grows with the block), then evened out (as many blocks, equal sizes); the tiling with the fewest cores wins, ties broken
by the fewest input axons summed over its cores (each is a route that every spike of that source
neuron travels: inter-core traffic). Populations are tiled from the readout backwards, so a
population's output-axon counts are known (its consumers' tiles are fixed) when it is tiled. A
residual join is one population with several incoming links: all of their synapses live on its
cores and are counted together. Conv links are evaluated separably (per channel, row and column
axis; the synapse memory of a tile from histograms of targets per axis); other links from their
sparse matrices. Every tile of the chosen tiling is checked exactly.

**Lower bounds.** Any placement needs at least ``ceil(neurons / neurons_per_core)`` and
``ceil(synapses·(weight_bits + delay bits) / synapse_memory_bits_per_core)`` cores, network-wide
(``lower_bound_cores``) and per layer (``lower_bound_cores_layerwise``, the sum: the bound for one
population per core); the report shows the greedy result next to them.

A layer whose single neuron breaks a limit (fan-in above the input axons of a core, its synapses
above the memory of a core, or its fan-out above the output axons) fits on no core: UserError
naming the layer and the limit.

**With recorded spikes** (``estimate``): per time step, from the partition and the real spikes:
synaptic ops per core (spike × its synapses on that core), spike messages (one per spike and
destination core), their mesh hops (cores placed in order, ``cores_per_tile`` per tile, tiles
row-major on a ``mesh_tiles_x``-wide mesh, chips side by side along x), a step latency (slowest
core's synaptic ops + neuron updates, plus the farthest message and the barrier) and the energy
per inference (synaptic ops, neuron updates of every neuron every step, messages and hops,
barriers). Spikes are averaged over the recorded samples.

Not modelled (so core counts are an upper estimate and the costs a Loihi-1-like estimate):
convolutional weight sharing (Loihi 2 has it, its memory format is not published), several
layers sharing a core, splitting one neuron's fan-in over cores (dendritic accumulation), the
off-chip encoding layer's transfer onto the chip, and chip-to-chip links (charged as mesh hops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import axis_reach
from htakl_deploy.hw.plan import INPUT, DeploymentPlan, Link
from htakl_deploy.hw.target import Target

RESOURCES = ("neurons", "synapse_memory", "input_axons", "output_axons")


# -- geometry helpers ----------------------------------------------------------------------


def blocks(n: int, size: int) -> np.ndarray:
    """int ``[n, ceil(n/size)]`` one-hot: element k belongs to block k // size."""
    m = np.zeros((n, -(-n // size)), dtype=np.int64)
    m[np.arange(n), np.arange(n) // size] = 1
    return m


def shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (int(np.prod(shape)), 1, 1)


def entry_bits(n: np.ndarray, bits_per_synapse: np.ndarray | int, t: Target) -> np.ndarray:
    """Memory bits of one input axon with ``n`` synapses on a core (0 for n = 0)."""
    n = np.asarray(n, dtype=np.int64)
    b = np.asarray(bits_per_synapse, dtype=np.int64)
    w, k, h = t.synapse_word_bits, t.synapses_per_entry, t.entry_header_bits
    full, rem = n // k, n % k
    words = lambda m: -(-(m * b + h) // w) * w  # noqa: E731
    return full * words(k) + np.where(rem > 0, words(rem), 0)


def index_bits(neurons: np.ndarray, t: Target) -> np.ndarray:
    n = np.maximum(np.asarray(neurons, dtype=np.int64), 2)
    return np.maximum(t.index_bits_min, np.ceil(np.log2(n)).astype(np.int64))


def delay_bits(delay: int) -> int:
    return int(math.ceil(math.log2(delay + 1))) if delay > 0 else 0


@dataclass(frozen=True)
class Tiling:
    """A (C, H, W) population cut into ``channels × rows × cols`` tiles, flat index (g, r, q)."""

    shape: tuple[int, int, int]
    channels: int
    rows: int
    cols: int

    @property
    def grid(self) -> tuple[int, int, int]:
        c, h, w = self.shape
        return -(-c // self.channels), -(-h // self.rows), -(-w // self.cols)

    @property
    def n_tiles(self) -> int:
        return int(np.prod(self.grid))

    def sizes(self) -> np.ndarray:
        """int ``[G, R, Q]``: neurons per tile."""
        axes = [np.bincount(np.arange(n) // s) for n, s in zip(self.shape, (self.channels, self.rows, self.cols))]
        return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]

    def block_sums(self, per_neuron: np.ndarray) -> np.ndarray:
        """``[n_tiles]`` sums of a per-neuron array (flat, torch order) over each tile."""
        a = per_neuron.reshape(self.shape)
        for axis, s in enumerate((self.channels, self.rows, self.cols)):
            a = np.add.reduceat(a, np.arange(0, a.shape[axis], s), axis=axis)
        return a.reshape(-1)

    def tile_of(self) -> np.ndarray:
        """int ``[N]``: the tile of every neuron (flat, torch order)."""
        c, h, w = self.shape
        g, r, q = self.grid
        ci, hi, wi = np.meshgrid(np.arange(c) // self.channels, np.arange(h) // self.rows,
                                 np.arange(w) // self.cols, indexing="ij")
        return ((ci * r + hi) * q + wi).reshape(-1)


# -- one incoming link's geometry ----------------------------------------------------------


class ConvGeom:
    """A convolution of the source's spikes (pools and identity skips composed in): separable."""

    def __init__(self, link: Link, src_shape, dst_shape, t: Target):
        c = link.conv
        cin, h, w = src_shape
        cout = dst_shape[0]
        kh, kw = np.asarray(c["weight"]).shape[2:]
        self.name, self.delay_bits = link.name, delay_bits(link.delay)
        self.src_shape, self.dst_shape = tuple(src_shape), tuple(dst_shape)
        self.reach_h = axis_reach(h, kh, c["stride"][0], c["padding"][0], c["dilation"][0])
        self.reach_w = axis_reach(w, kw, c["stride"][1], c["padding"][1], c["dilation"][1])
        cg, groups = np.asarray(c["weight"]).shape[1], int(c["groups"])
        self.chan = (np.arange(cin)[:, None] // cg) == (np.arange(cout)[None, :] // (cout // groups))
        if self.reach_h.shape[1] != dst_shape[1] or self.reach_w.shape[1] != dst_shape[2]:
            raise ValueError(f"link {link.name!r}: kernel output does not match the population's shape")
        self.t = t
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def axes(self, tiling: Tiling):
        """Targets per (input channel, channel tile), (input row, row tile), (input col, col tile)."""
        def per_block(axis: int, reach: np.ndarray, size: int) -> np.ndarray:
            key = (axis, size)  # the search asks for the same block sizes again and again
            if key not in self._blocks:
                self._blocks[key] = np.add.reduceat(reach.astype(np.int64), np.arange(0, reach.shape[1], size), axis=1)
            return self._blocks[key]

        return (per_block(0, self.chan, tiling.channels), per_block(1, self.reach_h, tiling.rows),
                per_block(2, self.reach_w, tiling.cols))

    def tile_stats(self, tiling: Tiling) -> dict[str, np.ndarray]:
        """Per tile ``[n_tiles]``: synapses, memory bits, input axons."""
        e, rc, cc = self.axes(tiling)
        sizes = tiling.sizes()  # [G, R, Q]
        g_n, r_n, q_n = sizes.shape
        amax, bmax = int(rc.max()), int(cc.max())
        hr = np.stack([np.bincount(rc[:, r], minlength=amax + 1) for r in range(r_n)])  # [R, A]
        hc = np.stack([np.bincount(cc[:, q], minlength=bmax + 1) for q in range(q_n)])  # [Q, B]
        a = np.arange(amax + 1)[:, None] * np.arange(bmax + 1)[None, :]  # [A, B] targets per (a, b)
        bits = np.zeros((g_n, r_n, q_n))
        syn = np.zeros((g_n, r_n, q_n))
        axons = np.zeros((g_n, r_n, q_n))
        nz_r, nz_c = (rc > 0).sum(0), (cc > 0).sum(0)  # [R], [Q]
        sum_r, sum_c = rc.sum(0), cc.sum(0)
        classes: dict[tuple, list[int]] = {}
        for g in range(g_n):  # channel tiles with the same size and targets share their stats
            classes.setdefault((int(sizes[g].max()), e[:, g].tobytes()), []).append(g)
        for gs in classes.values():
            vals, counts = np.unique(e[:, gs[0]], return_counts=True)
            n = sizes[gs[0]]  # [R, Q]
            sparse_b = self.t.weight_bits + self.delay_bits + index_bits(n, self.t)  # [R, Q]
            dense = entry_bits(n, self.t.weight_bits + self.delay_bits, self.t)  # [R, Q]
            tile_bits = np.zeros((r_n, q_n))
            tile_syn = np.zeros((r_n, q_n))
            tile_ax = np.zeros((r_n, q_n))
            for v, cnt in zip(vals, counts):
                if v == 0:
                    continue
                tgt = a * v  # [A, B]
                per = entry_bits(tgt[None, None], sparse_b[:, :, None, None], self.t)  # [R, Q, A, B]
                per = np.where(tgt[None, None] > 0, np.minimum(per, dense[:, :, None, None]), 0)
                tile_bits += cnt * np.einsum("ra,qb,rqab->rq", hr, hc, per)
                tile_syn += cnt * v * np.outer(sum_r, sum_c)
                tile_ax += cnt * np.outer(nz_r, nz_c)
            bits[gs], syn[gs], axons[gs] = tile_bits, tile_syn, tile_ax
        return {"synapses": syn.reshape(-1), "bits": bits.reshape(-1), "input_axons": axons.reshape(-1)}

    def counts(self, tiling: Tiling) -> sp.csr_matrix:
        """int ``[N_src, n_tiles]``: synapses of each source neuron on each destination tile."""
        e, rc, cc = self.axes(tiling)
        return sp.kron(sp.csr_matrix(e), sp.kron(sp.csr_matrix(rc), sp.csr_matrix(cc)), format="csr")

    def tiles_per_source(self, tiling: Tiling) -> np.ndarray:
        e, rc, cc = self.axes(tiling)
        return np.einsum("c,i,j->cij", (e > 0).sum(1), (rc > 0).sum(1), (cc > 0).sum(1)).reshape(-1)

    def fan_in_max(self) -> int:
        return int(self.chan.sum(0).max() * self.reach_h.sum(0).max() * self.reach_w.sum(0).max())

    def fan_out(self) -> np.ndarray:
        return np.einsum("c,i,j->cij", self.chan.sum(1), self.reach_h.sum(1), self.reach_w.sum(1)).reshape(-1)

    def synapses(self) -> int:
        return int(self.fan_out().sum())


class MatrixGeom:
    """Any other link, from its sparse matrix's pattern (a ``dense`` link: every entry)."""

    def __init__(self, link: Link, src_shape, dst_shape, t: Target):
        n_src, n_dst = int(np.prod(src_shape)), int(np.prod(dst_shape))
        if link.kind == "dense":
            pattern = sp.csr_matrix(np.ones((n_dst, n_src), dtype=np.int64))
        else:
            m = link.int_matrix(tuple(src_shape))
            pattern = sp.csr_matrix((np.ones_like(m.data, dtype=np.int64), m.indices, m.indptr), shape=m.shape)
        self.name, self.delay_bits, self.t = link.name, delay_bits(link.delay), t
        self.src_shape, self.dst_shape = tuple(src_shape), tuple(dst_shape)
        self.pattern = pattern  # [N_dst, N_src]

    def counts(self, tiling: Tiling) -> sp.csr_matrix:
        tile = tiling.tile_of()
        onehot = sp.csr_matrix((np.ones(len(tile), dtype=np.int64), (tile, np.arange(len(tile)))),
                               shape=(tiling.n_tiles, len(tile)))
        return (onehot @ self.pattern).T.tocsr()  # [N_src, n_tiles]

    def tile_stats(self, tiling: Tiling) -> dict[str, np.ndarray]:
        cnt = self.counts(tiling).tocsc()
        sizes = tiling.sizes().reshape(-1)
        col = np.repeat(np.arange(tiling.n_tiles), np.diff(cnt.indptr))
        sparse_b = self.t.weight_bits + self.delay_bits + index_bits(sizes, self.t)
        per = entry_bits(cnt.data, sparse_b[col], self.t)
        per = np.minimum(per, entry_bits(sizes, self.t.weight_bits + self.delay_bits, self.t)[col])
        return {"synapses": np.bincount(col, cnt.data, tiling.n_tiles),
                "bits": np.bincount(col, per, tiling.n_tiles),
                "input_axons": np.diff(cnt.indptr).astype(np.float64)}

    def tiles_per_source(self, tiling: Tiling) -> np.ndarray:
        return np.diff(self.counts(tiling).indptr)

    def fan_in_max(self) -> int:
        return int(np.diff(self.pattern.indptr).max(initial=0))

    def fan_out(self) -> np.ndarray:
        return np.bincount(self.pattern.indices, minlength=self.pattern.shape[1])

    def synapses(self) -> int:
        return int(self.pattern.nnz)


def link_geom(link: Link, plan: DeploymentPlan, t: Target):
    src, dst = shape3(plan.populations[link.src].shape), shape3(plan.populations[link.dst].shape)
    if link.conv is not None and len(plan.populations[link.src].shape) == 3 and len(plan.populations[link.dst].shape) == 3:
        return ConvGeom(link, src, dst, t)
    return MatrixGeom(link, src, dst, t)


# -- tiling one population -----------------------------------------------------------------


@dataclass
class LayerMap:
    name: str
    shape: tuple[int, ...]
    tiling: Tiling
    links: list  # geometries of the incoming (on-chip) links
    stats: dict  # per tile: neurons, synapses, bits, input_axons, output_axons
    first_core: int = 0
    fan_in_max: int = 0
    fan_out_max: int = 0
    synapses: int = 0
    min_bits: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def cores(self) -> int:
        return self.tiling.n_tiles

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))


def _stats(shape3_, tiling: Tiling, geoms: list, out_per_neuron: np.ndarray) -> dict[str, np.ndarray]:
    n = tiling.n_tiles
    st = {"neurons": tiling.sizes().reshape(-1).astype(np.float64), "synapses": np.zeros(n), "bits": np.zeros(n),
          "input_axons": np.zeros(n)}
    for g in geoms:
        for k, v in g.tile_stats(tiling).items():
            st[k] = st[k] + v
    st["output_axons"] = tiling.block_sums(out_per_neuron).astype(np.float64)
    return st


def _limits(t: Target) -> dict[str, int]:
    return {"neurons": t.neurons_per_core, "bits": t.synapse_memory_bits_per_core,
            "input_axons": t.input_axons_per_core, "output_axons": t.output_axons_per_core}


LIMIT_TEXT = {"neurons": "neurons per core", "bits": "synapse memory bits per core",
              "input_axons": "input axons per core (fan-in)", "output_axons": "output axons per core (fan-out)"}


def _fits(st: dict, t: Target) -> bool:
    return all(st[k].max(initial=0) <= lim for k, lim in _limits(t).items())


def _axis_sizes(n: int) -> list[int]:
    """Tile sizes giving every distinct number of tiles along an axis of length n, largest first."""
    return sorted({-(-n // k) for k in range(1, n + 1)}, reverse=True)


def single_neuron_problem(shape, geoms: list, out_per_neuron: np.ndarray, t: Target) -> str | None:
    """Why a core holding one neuron of this layer breaks a limit, or None if it fits."""
    st = _stats(shape3(shape), Tiling(shape3(shape), 1, 1, 1), geoms, out_per_neuron)
    bad = [k for k, lim in _limits(t).items() if st[k].max(initial=0) > lim]
    if not bad:
        return None
    return "a single neuron needs " + " and ".join(
        f"{int(st[k].max())} {LIMIT_TEXT[k]} (limit {_limits(t)[k]})" for k in bad)


def tile_population(name: str, shape, geoms: list, out_per_neuron: np.ndarray, t: Target) -> LayerMap:
    """The tiling with the fewest cores (then the fewest input axons) that fits every limit."""
    c, h, w = shape3(shape)
    problem = single_neuron_problem(shape, geoms, out_per_neuron, t)
    if problem:
        raise UserError(f"layer {name!r} fits on no {t.name} core: {problem}"
                        " (set a larger limit with --set if the hardware allows it)")
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
            til = Tiling((c, h, w), mid, th, tw)
            s = _stats((c, h, w), til, geoms, out_per_neuron)
            if _fits(s, t):
                found, lo = (til, s), mid + 1
            else:
                hi = mid - 1
        if found is None:
            continue
        til, s = found
        even = -(-c // -(-c // til.channels))  # as many channel blocks, evened out (balanced cores)
        if even < til.channels:
            til_e = Tiling((c, h, w), even, th, tw)
            s_e = _stats((c, h, w), til_e, geoms, out_per_neuron)
            if _fits(s_e, t):
                found = til, s = til_e, s_e
        key = (til.n_tiles, float(s["input_axons"].sum()))
        if best_key is None or key < best_key:
            best, best_key = found, key
    if best is None:  # cannot happen: the one-neuron tiling fits
        raise UserError(f"layer {name!r}: no tiling fits on {t.name}")
    til, s = best
    return LayerMap(name, tuple(shape), til, geoms, s)


# -- the whole network ---------------------------------------------------------------------


@dataclass
class Mapping:
    target: Target
    layers: dict[str, LayerMap]  # topological order
    input_link: Link
    input_synapses: int
    plan: DeploymentPlan

    @property
    def cores(self) -> int:
        return sum(lm.cores for lm in self.layers.values())

    @property
    def chips(self) -> int:
        return -(-self.cores // self.target.cores_per_chip)

    def core_xy(self) -> np.ndarray:
        """int ``[cores, 2]``: global mesh position of every core (chips side by side along x)."""
        t = self.target
        k = np.arange(self.cores)
        chip, tile = k // t.cores_per_chip, (k % t.cores_per_chip) // t.cores_per_tile
        return np.stack([chip * t.mesh_tiles_x + tile % t.mesh_tiles_x, tile // t.mesh_tiles_x], axis=1)


def map_plan(plan: DeploymentPlan, target: Target) -> Mapping:
    """Partition every population of ``plan`` onto ``target``'s cores (see the module docstring)."""
    geoms_in: dict[str, list] = {n: [] for n in plan.populations}
    geoms_out: dict[str, list] = {n: [] for n in plan.populations}
    for link in plan.links:
        if link.src == INPUT:
            continue
        g = link_geom(link, plan, target)
        geoms_in[link.dst].append(g)
        geoms_out[link.src].append((link.dst, g))
    no_fit = []  # limits a layer breaks whatever the other layers do: all named at once
    for name, pop in plan.populations.items():
        problem = single_neuron_problem(pop.shape, geoms_in[name], np.zeros(pop.size, np.int64), target)
        if problem:
            no_fit.append(f"layer {name!r}: {problem}")
    if no_fit:
        raise UserError(f"{len(no_fit)} layer(s) fit on no {target.name} core (set a larger limit with --set if "
                        f"the hardware allows it): " + "; ".join(no_fit))
    layers: dict[str, LayerMap] = {}
    for name in reversed(list(plan.populations)):  # consumers first: output axons are then known
        pop = plan.populations[name]
        out = np.zeros(pop.size, dtype=np.int64)
        for dst, g in geoms_out[name]:
            out += g.tiles_per_source(layers[dst].tiling)
        lm = tile_population(name, pop.shape, geoms_in[name], out, target)
        fan_out = np.zeros(pop.size, dtype=np.int64)
        for _, g in geoms_out[name]:
            fan_out += g.fan_out()
        lm.fan_out_max = int(fan_out.max(initial=0))
        lm.fan_in_max = sum(g.fan_in_max() for g in geoms_in[name])
        lm.synapses = sum(g.synapses() for g in geoms_in[name])
        lm.min_bits = sum(g.synapses() * (target.weight_bits + g.delay_bits) for g in geoms_in[name])
        layers[name] = lm
    layers = {n: layers[n] for n in plan.populations}
    first = 0
    for lm in layers.values():
        lm.first_core, first = first, first + lm.cores
    inp = plan.input_link
    if inp.kind == "bias":  # a netx input layer: the input is its bias, no synapse
        in_syn = 0
    elif inp.conv is not None and len(plan.input_shape) == 3:
        in_syn = ConvGeom(inp, shape3(plan.input_shape), shape3(plan.populations[inp.dst].shape), target).synapses()
    else:
        in_syn = int(inp.int_matrix(plan.input_shape).nnz)
    return Mapping(target, layers, inp, in_syn, plan)


def lower_bounds(m: Mapping) -> dict[str, int]:
    t = m.target
    neurons = sum(lm.neurons for lm in m.layers.values())
    bits = sum(lm.min_bits for lm in m.layers.values())
    per_layer = sum(max(-(-lm.neurons // t.neurons_per_core), -(-lm.min_bits // t.synapse_memory_bits_per_core), 1)
                    for lm in m.layers.values())
    return {"lower_bound_cores": max(-(-neurons // t.neurons_per_core), -(-bits // t.synapse_memory_bits_per_core)),
            "lower_bound_cores_layerwise": per_layer}


def binding_limit(lm: LayerMap, t: Target) -> str:
    """The resource nearest its limit on the layer's fullest core (what stops fewer cores)."""
    use = {k: lm.stats[k].max(initial=0) / lim for k, lim in _limits(t).items()}
    return max(use, key=use.get)


def summary(m: Mapping) -> dict:
    """The mapping as JSON-ready data (format ``htakl-map/1``)."""
    t, lims = m.target, _limits(m.target)
    rows = []
    for lm in m.layers.values():
        s = lm.stats
        pct = {k: 100.0 * float(s[k].max(initial=0)) / lim for k, lim in lims.items()}
        rows.append({
            "name": lm.name, "shape": list(lm.shape), "neurons": lm.neurons, "cores": lm.cores,
            "first_core": lm.first_core,
            "tile": {"channels": lm.tiling.channels, "rows": lm.tiling.rows, "cols": lm.tiling.cols},
            "neurons_per_core_max": int(s["neurons"].max()), "synapses": lm.synapses,
            "synapse_bits_per_core_max": int(s["bits"].max(initial=0)),
            "input_axons_per_core_max": int(s["input_axons"].max(initial=0)),
            "output_axons_per_core_max": int(s["output_axons"].max(initial=0)),
            "utilisation_pct": {"neurons": pct["neurons"], "synapse_memory": pct["bits"],
                                "input_axons": pct["input_axons"], "output_axons": pct["output_axons"]},
            "fan_in_max": lm.fan_in_max, "fan_out_max": lm.fan_out_max,
            "binding_limit": "none (one core)" if lm.cores == 1 else
            {"neurons": "neurons", "bits": "synapse_memory", "input_axons": "input_axons",
             "output_axons": "output_axons"}[binding_limit(lm, t)],
            "links": [g.name for g in lm.links],
            "lower_bound_cores": max(-(-lm.neurons // t.neurons_per_core),
                                     -(-lm.min_bits // t.synapse_memory_bits_per_core), 1),
        })
    per_core = {"layer": [], "memory_pct": [], "neurons_pct": []}
    for lm in m.layers.values():
        per_core["layer"] += [lm.name] * lm.cores
        per_core["memory_pct"] += [round(100.0 * float(b) / lims["bits"], 3) for b in lm.stats["bits"]]
        per_core["neurons_pct"] += [round(100.0 * float(n) / lims["neurons"], 3) for n in lm.stats["neurons"]]
    totals = {"cores": m.cores, "chips": m.chips, "boards": -(-m.chips // t.chips_per_board),
              "neurons": sum(lm.neurons for lm in m.layers.values()),
              "synapses": sum(lm.synapses for lm in m.layers.values()),
              "synapse_bits": int(sum(lm.stats["bits"].sum() for lm in m.layers.values())),
              "encoding_synapses_off_chip": m.input_synapses, **lower_bounds(m)}
    return {"format": "htakl-map/1", "target": t.to_dict(), "layers": rows, "totals": totals,
            "per_core": per_core}


# -- with recorded spikes: routing, latency, energy ----------------------------------------


def _spikes_per_step(recording, name: str, shape) -> np.ndarray:
    """int64 ``[T, N]``: spikes of population ``name`` per time step, summed over samples (the
    spike file's counts: ``SpikeFile`` or ``SpikeRecording``, any ``--record`` setting)."""
    got = recording.layer_shape(name)
    if got is None:
        raise UserError(f"spike recording has no layer {name!r}: was it recorded from this artefact?")
    want = (recording.timesteps, recording.samples, *shape)
    if tuple(got) != want:
        raise UserError(f"spike recording layer {name!r} has shape {tuple(got)}, the artefact expects {want}")
    return recording.layer_counts(name).reshape(recording.timesteps, -1)


def estimate(m: Mapping, recording) -> dict:
    """Per-time-step routing, latency and per-inference energy of ``recording`` (an open
    ``SpikeFile`` or a ``SpikeRecording``: only its per-step counts are read) on the mapping (see
    the module docstring). Counts are per sample (averaged over the recorded samples)."""
    from htakl_deploy.energy.models import load_preset

    t, plan = m.target, m.plan
    steps, samples = recording.timesteps, recording.samples
    xy = m.core_xy()
    core_synops = np.zeros((steps, m.cores))
    messages, hops = np.zeros(steps), np.zeros(steps)
    max_hops = np.zeros(steps, dtype=np.int64)
    per_link = []
    for lm in m.layers.values():
        for g in lm.links:
            link = next(k for k in plan.links if k.name == g.name)
            src = m.layers[link.src]
            x = _spikes_per_step(recording, link.src, plan.populations[link.src].shape)  # [T, N_src]
            counts = g.counts(lm.tiling)  # [N_src, n_dst_tiles]
            syn = np.asarray((counts.T @ x.T).T, dtype=np.float64)  # [T, n_dst_tiles]
            core_synops[:, lm.first_core:lm.first_core + lm.cores] += syn
            reach = counts.astype(bool).astype(np.int64)
            s_tile = src.tiling.tile_of()
            pt = sp.csr_matrix((np.ones(len(s_tile), dtype=np.int64), (s_tile, np.arange(len(s_tile)))),
                               shape=(src.cores, len(s_tile)))
            link_msgs = link_hops = 0.0
            for step in range(steps):
                msg = (pt @ reach.multiply(x[step][:, None])).tocoo()  # [src tiles, dst tiles]
                d = np.abs(xy[src.first_core + msg.row] - xy[lm.first_core + msg.col]).sum(1)
                messages[step] += msg.data.sum()
                hops[step] += (msg.data * d).sum()
                if msg.nnz and (msg.data > 0).any():
                    max_hops[step] = max(max_hops[step], int(d[msg.data > 0].max()))
                link_msgs += msg.data.sum()
                link_hops += (msg.data * d).sum()
            per_link.append({"link": g.name, "src": link.src, "dst": link.dst, "synops": float(syn.sum()) / samples,
                             "messages": link_msgs / samples, "hops": link_hops / samples})
    core_neurons = np.concatenate([lm.stats["neurons"] for lm in m.layers.values()])
    core_layer = np.concatenate([[lm.name] * lm.cores for lm in m.layers.values()])
    busy = core_synops / samples * t.t_synop_ns + core_neurons[None, :] * t.t_neuron_update_ns  # [T, cores]
    per_step = []
    for step in range(steps):
        k = int(busy[step].argmax())
        route_ns = t.t_spike_within_tile_ns + max_hops[step] * t.t_tile_hop_ns if messages[step] else 0.0
        per_step.append({"synops": float(core_synops[step].sum()) / samples, "messages": messages[step] / samples,
                         "hops": hops[step] / samples, "max_hops": int(max_hops[step]),
                         "slowest_core": k, "slowest_layer": str(core_layer[k]),
                         "compute_ns": float(busy[step, k]), "route_ns": route_ns,
                         "latency_ns": float(busy[step, k]) + route_ns + t.t_barrier_ns})
    synops = float(core_synops.sum()) / samples
    updates = float(core_neurons.sum()) * steps
    msgs, hop = float(messages.sum()) / samples, float(hops.sum()) / samples
    energy = {"synaptic_pj": synops * t.e_synop_pj, "neuron_pj": updates * t.e_neuron_update_pj,
              "routing_pj": msgs * t.e_spike_within_tile_pj + hop * t.e_tile_hop_pj,
              "barrier_pj": steps * t.e_barrier_pj}
    energy["total_pj"] = sum(energy.values())
    step_ns = float(np.mean([s["latency_ns"] for s in per_step]))
    paper = load_preset("paper-45nm")
    enc_macs = m.input_synapses * steps
    return {
        "samples": samples, "timesteps": steps, "backend": recording.attrs.get("backend"),
        "per_timestep": per_step, "links": per_link,
        "per_inference": {"synops": synops, "neuron_updates": updates, "messages": msgs, "hops": hop,
                          "energy": energy, "step_latency_ns_mean": step_ns,
                          "steps": steps + plan.max_depth, "latency_ns": step_ns * (steps + plan.max_depth),
                          "throughput_steps": steps, "time_per_inference_streamed_ns": step_ns * steps},
        "comparison": {"paper_45nm": {"name": paper.name, "acs": synops, "encoding_macs": enc_macs,
                                      "energy_pj": synops * paper.e_ac_pj + enc_macs * paper.e_mac_pj,
                                      "e_ac_pj": paper.e_ac_pj, "e_mac_pj": paper.e_mac_pj},
                       "encoding_macs_off_chip": enc_macs},
    }


# -- one call: artefact (+ its run's spikes) → the mapping report --------------------------

SPIKE_BACKENDS = ("lava-fixed_pt", "emulator", "lava-floating_pt", "torch-float")


def find_spikes(artefact_path) -> "Path | None":
    """The run's recorded spikes next to an artefact in ``RUN_DIR/export/``: the first of
    ``SPIKE_BACKENDS`` that has ``simulate/<backend>/spikes.h5``."""
    from pathlib import Path

    run_dir = Path(artefact_path).resolve().parent.parent
    for b in SPIKE_BACKENDS:
        p = run_dir / "simulate" / b / "spikes.h5"
        if p.is_file():
            return p
    return None


def map_artefact(artefact, *, target: str = "loihi2", overrides: tuple[str, ...] = (),
                 spikes: "str | None" = "auto") -> dict:
    """Map a run directory / export folder / ``student.lava.npz`` onto ``target``; with spikes
    (``"auto"``: the run's own recording, if any; a path; None: none) add the estimate, and the
    run's own AC/MAC energy for that backend when ``energy/<backend>.json`` exists."""
    import json
    from pathlib import Path

    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.hw.simulate import read_artefact, resolve_artefact
    from htakl_deploy.hw.target import load_target

    from htakl_deploy.export.pipeline import is_nir_file

    tgt = load_target(target).with_overrides(list(overrides))
    if is_nir_file(artefact):  # a graph file (NIR, or a lava-dl netx file): its plan, built here
        from htakl_deploy.export.nir_in import load_nir_graph
        from htakl_deploy.hw.plan import plan_from_quantized

        path = Path(artefact)
        try:
            plan = plan_from_quantized(load_nir_graph(path)[1])
        except ValueError as e:
            raise UserError(f"{path}: cannot deploy this graph: {e}") from None
    else:
        path = resolve_artefact(artefact)
        plan = read_artefact(path)
    m = map_plan(plan, tgt)
    data = summary(m)
    data["artefact"] = str(path)
    spike_path = find_spikes(path) if spikes == "auto" else (Path(spikes) if spikes else None)
    if spike_path is not None:
        with open_spikes(spike_path) as rec:
            est = estimate(m, rec)
        est["source"] = str(spike_path)
        backend = rec.attrs.get("backend")
        energy_file = path.resolve().parent.parent / "energy" / f"{backend}.json"
        if spikes == "auto" and energy_file.is_file():
            try:
                rep = json.loads(energy_file.read_text(encoding="utf-8"))
                ps = rep["per_sample"]
                est["comparison"]["measured"] = {"file": f"energy/{backend}.json", "energy_pj": ps["energy_pj"],
                                                 "acs": ps["acs"], "macs": ps["macs"],
                                                 "energy_model": rep["energy_model"]["name"]}
            except (OSError, ValueError, KeyError, TypeError):
                pass  # the report lists unreadable energy files; the estimate stands without it
        data["estimate"] = est
    return data


def map_run_dir(run_dir, target: str = "loihi2") -> str:
    """``htakl-deploy run``'s mapping stage: ``RUN_DIR/map/<target>.json`` from the run's artefact
    and spikes. A network that fits on no core is recorded there (``error``), not raised: the
    run's other results stand. Returns a one-line summary."""
    from pathlib import Path

    from htakl_deploy.atomic import write_json
    from htakl_deploy.hw.target import load_target

    tgt = load_target(target)
    out = Path(run_dir) / "map" / f"{tgt.name}.json"
    try:
        data = map_artefact(run_dir, target=target)
    except UserError as e:
        write_json(out, {"format": "htakl-map/1", "target": tgt.to_dict(), "error": str(e)})
        return f"does not fit: {e}"
    write_json(out, data)
    t = data["totals"]
    line = f"{t['cores']} cores on {t['chips']} chip(s) (lower bound {t['lower_bound_cores_layerwise']})"
    if "estimate" in data:
        pi = data["estimate"]["per_inference"]
        line += f", {pi['latency_ns'] / 1e3:.1f} µs and {pi['energy']['total_pj'] / 1e6:.3f} µJ per inference"
    return line
