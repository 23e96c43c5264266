"""What one incoming link costs on the cores of a tiled population (``hw.mapping``'s geometry).

A population of shape (C, H, W) (a flat one is (N, 1, 1)) is cut into ``Tiling``s of
``channels × rows × cols``; a link's geometry gives, per tile, the synapses it puts there, the
synapse memory they take and the input axons they need, and, per source neuron, where its spikes
go. Two storage formats, chosen by the target's data (``hw/targets/*.toml``):

**Matrix links** (dense, sparse, and convolutions where kernels are not shared). Per input axon
and core, its synapses there form one or more entries of at most ``synapses_per_entry``, each
``count × (weight + delay + index bits) + entry_header_bits`` rounded up to whole
``synapse_word_bits`` words; the index addresses the core's neurons (at least ``index_bits_min``
bits). With ``dense_format`` an index-free entry of every neuron of the core is used instead where
smaller (Loihi 1, nengo-loihi's block.py). A ``dense`` link stores its full matrix, zeros too (as
Lava's ``Dense``); a sparse one its non-zero weights (as Lava's ``Sparse``).

**Shared kernels** (``conv_shared_kernels``, Loihi 2): a convolution stores its kernel once per
core, whatever the core's rows and columns: for every input channel and kernel position, the
weights to the core's output channels, ``weight + conv_x_stride_bits × x-stride + delay`` bits
each, rounded up to whole words. Its input axons are one per axon type: the x-stride (a stride-2
convolution takes 2). Inferred from Intel's published compiles (hw/targets/loihi2.toml).

**Weight bits**: ``weight_bits`` for every link, or (``adaptive_weight_bits``) the link's own
precision by lava-dl netx's rule (``netx_weight_bits``: the bits its integer weights need once
their shared power-of-two factor and, for mixed signs, Loihi's dropped lowest bit are removed).

**Output axons**: one per (source neuron, destination core) pair (``axon_per_destination_core``,
Loihi 1), or one axon-map entry per source neuron for a matrix link and per source position ×
the x-stride of the convolution into the source for a shared-kernel link (Loihi 2's ``AxonMap``
in Intel's tables: 253 = 2 × 99 · 32 / 25 after a stride-2 layer, 29 = 22 · 4 / 3 after a
stride-1 one). Off-chip traffic: the population fed by the encoding link takes one input axon per
core (the host's messages), the readout one axon-map entry per neuron (its values leave the chip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from htakl_deploy.export.nodes.geometry import axis_reach
from htakl_deploy.hw.plan import Link
from htakl_deploy.hw.target import Target


def shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (int(np.prod(shape)), 1, 1)


def words(bits, t: Target):
    """Whole synapse-memory words holding ``bits`` (array or int)."""
    return -(-np.asarray(bits, dtype=np.int64) // t.synapse_word_bits)


def entry_bits(n: np.ndarray, bits_per_synapse: np.ndarray | int, t: Target) -> np.ndarray:
    """Memory bits of one input axon with ``n`` synapses on a core (0 for n = 0)."""
    n = np.asarray(n, dtype=np.int64)
    b = np.asarray(bits_per_synapse, dtype=np.int64)
    k, h = t.synapses_per_entry, t.entry_header_bits
    full, rem = n // k, n % k
    return (full * words(k * b + h, t) + np.where(rem > 0, words(rem * b + h, t), 0)) * t.synapse_word_bits


def index_bits(neurons: np.ndarray, t: Target) -> np.ndarray:
    n = np.maximum(np.asarray(neurons, dtype=np.int64), 2)
    return np.maximum(t.index_bits_min, np.ceil(np.log2(n)).astype(np.int64))


def delay_bits(delay: int) -> int:
    return int(math.ceil(math.log2(delay + 1))) if delay > 0 else 0


def netx_weight_bits(w: np.ndarray, has_zeros: bool = False) -> int:
    """Bits of synaptic precision lava-dl netx gives a weight matrix (``netx.utils.
    optimize_weight_bits``, the same rule; tested against it): the largest weight scaled to the
    8-bit range of its sign mode (mixed: 127 / −128; one sign: 255 / −256) gives the spare top bits,
    the weights' shared power-of-two factor the spare low bits (one fewer for mixed signs, whose
    lowest bit Loihi drops anyway); 8 minus both. ``has_zeros``: the matrix has entries not in
    ``w`` (implicit zeros of a sparse matrix). An all-zero matrix takes 1 bit."""
    w = np.asarray(w, dtype=np.int64).ravel()
    if has_zeros:
        w = np.append(w, 0)
    if not w.size or not w.any():
        return 1
    hi, lo = int(w.max()), int(w.min())
    if hi < 0:
        signed, scale = 0, -256 / lo
    elif lo >= 0:
        signed, scale = 0, 255 / hi
    else:
        signed, scale = 1, min(127 / hi if hi else math.inf, -128 / lo)  # hi = 0: netx's 127 / 0 = inf
    scale_bits = math.floor(math.log2(scale)) + signed
    nz = np.abs(w[w != 0])
    shared = min(8, int((nz & -nz).min()).bit_length() - 1)  # trailing zero bits common to all weights
    return int(8 - scale_bits - (shared - signed))


def link_weight_bits(link: Link, src_shape, t: Target) -> int:
    if not t.adaptive_weight_bits:
        return t.weight_bits
    if link.conv is not None:
        return max(1, min(t.weight_bits, netx_weight_bits(np.asarray(link.conv["weight"]))))
    m = link.int_matrix(tuple(src_shape))
    implicit = m.nnz < int(np.prod(m.shape)) and link.kind == "dense"
    return max(1, min(t.weight_bits, netx_weight_bits(m.data, has_zeros=implicit)))


@dataclass(frozen=True)
class Tiling:
    """A (C, H, W) population cut into ``channels × rows × cols`` tiles, flat index (g, r, q).
    ``full``: every tile is allocated whole (the compiler's tiles): a tile reaching past the
    layer's edge holds neurons there too, which are updated and receive synaptic ops (Intel's
    activity profile of PilotNet shows both on its partial cores)."""

    shape: tuple[int, int, int]
    channels: int
    rows: int
    cols: int
    full: bool = False

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

    def allocated(self) -> np.ndarray:
        """``[n_tiles]``: neurons allocated per tile (``full``: the whole tile)."""
        if self.full:
            return np.full(self.n_tiles, self.channels * self.rows * self.cols)
        return self.sizes().reshape(-1)

    def positions(self) -> np.ndarray:
        """int ``[n_tiles]``: (row, column) positions per tile."""
        _, h, w = self.shape
        g, _, _ = self.grid
        rows, cols = np.bincount(np.arange(h) // self.rows), np.bincount(np.arange(w) // self.cols)
        return np.broadcast_to(np.outer(rows, cols)[None], (g, len(rows), len(cols))).reshape(-1)

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
        self.t, self.kernel = t, kh * kw
        self.spec = c
        self.stride = (int(c["stride"][0]), int(c["stride"][1]))
        self.weight_bits = link_weight_bits(link, src_shape, t)
        self.shared = bool(t.conv_shared_kernels)
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def axes(self, tiling: Tiling):
        """Targets per (input channel, channel tile), (input row, row tile), (input col, col tile)."""
        def per_block(axis: int, reach: np.ndarray, size: int) -> np.ndarray:
            key = (axis, size, tiling.full)  # the search asks for the same block sizes again and again
            if key not in self._blocks:
                if tiling.full:  # outputs up to the last tile's end
                    reach = self._extended(axis, -(-reach.shape[1] // size) * size)
                self._blocks[key] = np.add.reduceat(reach.astype(np.int64), np.arange(0, reach.shape[1], size), axis=1)
            return self._blocks[key]

        return (per_block(0, self.chan, tiling.channels), per_block(1, self.reach_h, tiling.rows),
                per_block(2, self.reach_w, tiling.cols))

    def _extended(self, axis: int, n_out: int) -> np.ndarray:
        """The reach along ``axis`` with outputs up to ``n_out`` (no weights beyond the channels)."""
        if axis == 0:
            return np.pad(self.chan, ((0, 0), (0, n_out - self.chan.shape[1])))
        c, a = self.spec, axis - 1
        k = np.asarray(c["weight"]).shape[2 + a]
        return axis_reach(self.src_shape[axis], k, c["stride"][a], c["padding"][a], c["dilation"][a], n_out)

    def tile_stats(self, tiling: Tiling) -> dict[str, np.ndarray]:
        """Per tile ``[n_tiles]``: synapses, memory bits, input axons."""
        e, rc, cc = self.axes(tiling)
        g_n, r_n, q_n = tiling.grid
        syn = e.sum(0)[:, None, None] * np.outer(rc.sum(0), cc.sum(0))[None]
        if self.shared:
            bits = self.weight_bits + self.stride[1] * self.t.conv_x_stride_bits + self.delay_bits
            kernel = self.kernel * np.where(e > 0, words(e * bits, self.t), 0).sum(0) * self.t.synapse_word_bits
            ones = np.ones((g_n, r_n, q_n))
            return {"synapses": syn.reshape(-1), "bits": (kernel[:, None, None] * ones).reshape(-1),
                    "input_axons": (self.stride[1] * ones).reshape(-1)}
        return {"synapses": syn.reshape(-1), **self._entry_stats(tiling, e, rc, cc)}

    def _entry_stats(self, tiling: Tiling, e, rc, cc) -> dict[str, np.ndarray]:
        """Every synapse stored (no kernel sharing): per input axon the cheaper entry format."""
        sizes = tiling.sizes()  # [G, R, Q]
        g_n, r_n, q_n = sizes.shape
        amax, bmax = int(rc.max()), int(cc.max())
        hr = np.stack([np.bincount(rc[:, r], minlength=amax + 1) for r in range(r_n)])  # [R, A]
        hc = np.stack([np.bincount(cc[:, q], minlength=bmax + 1) for q in range(q_n)])  # [Q, B]
        a = np.arange(amax + 1)[:, None] * np.arange(bmax + 1)[None, :]  # [A, B] targets per (a, b)
        bits = np.zeros((g_n, r_n, q_n))
        axons = np.zeros((g_n, r_n, q_n))
        nz_r, nz_c = (rc > 0).sum(0), (cc > 0).sum(0)  # [R], [Q]
        classes: dict[tuple, list[int]] = {}
        for g in range(g_n):  # channel tiles with the same size and targets share their stats
            classes.setdefault((int(sizes[g].max()), e[:, g].tobytes()), []).append(g)
        for gs in classes.values():
            vals, counts = np.unique(e[:, gs[0]], return_counts=True)
            n = sizes[gs[0]]  # [R, Q]
            sparse_b = self.weight_bits + self.delay_bits + index_bits(n, self.t)  # [R, Q]
            dense = entry_bits(n, self.weight_bits + self.delay_bits, self.t)  # [R, Q]
            tile_bits = np.zeros((r_n, q_n))
            tile_ax = np.zeros((r_n, q_n))
            for v, cnt in zip(vals, counts):
                if v == 0:
                    continue
                tgt = a * v  # [A, B]
                per = entry_bits(tgt[None, None], sparse_b[:, :, None, None], self.t)  # [R, Q, A, B]
                if self.t.dense_format:
                    per = np.minimum(per, dense[:, :, None, None])
                per = np.where(tgt[None, None] > 0, per, 0)
                tile_bits += cnt * np.einsum("ra,qb,rqab->rq", hr, hc, per)
                tile_ax += cnt * np.outer(nz_r, nz_c)
            bits[gs], axons[gs] = tile_bits, tile_ax
        return {"bits": bits.reshape(-1), "input_axons": axons.reshape(-1)}

    def counts(self, tiling: Tiling) -> sp.csr_matrix:
        """int ``[N_src, n_tiles]``: synapses of each source neuron on each destination tile."""
        e, rc, cc = self.axes(tiling)
        return sp.kron(sp.csr_matrix(e), sp.kron(sp.csr_matrix(rc), sp.csr_matrix(cc)), format="csr")

    def synops(self, x: np.ndarray, tiling: Tiling) -> np.ndarray:
        """``[T, n_tiles]``: synaptic ops of the spike counts ``x`` ``[T, N_src]`` per destination
        tile: every synapse a spike reaches, times the link's fraction of non-zero weights where the
        target says so (``skip_zero_weights``; ``nonzero_fraction``)."""
        return np.asarray((self.counts(tiling).T @ x.T).T, dtype=np.float64) * self.nonzero_fraction()

    def nonzero_fraction(self) -> float:
        if not self.t.skip_zero_weights:
            return 1.0
        w = np.asarray(self.spec["weight"])
        return float(np.count_nonzero(w)) / max(w.size, 1)

    def tiles_per_source(self, tiling: Tiling) -> np.ndarray:
        e, rc, cc = self.axes(tiling)
        return np.einsum("c,i,j->cij", (e > 0).sum(1), (rc > 0).sum(1), (cc > 0).sum(1)).reshape(-1)

    def output_axons(self, src: Tiling, dst: Tiling, src_x_stride: int = 1) -> np.ndarray:
        """``[src tiles]``: the axons (map entries) this link needs on each source core
        (``src_x_stride``: the x-stride of the convolution into the source population)."""
        if self.t.axon_per_destination_core:
            return src.block_sums(self.tiles_per_source(dst))
        if self.shared:
            return src.positions() * src_x_stride
        return src.block_sums((self.fan_out() > 0).astype(np.int64))

    def fan_in_max(self) -> int:
        return int(self.chan.sum(0).max() * self.reach_h.sum(0).max() * self.reach_w.sum(0).max())

    def fan_out(self) -> np.ndarray:
        return np.einsum("c,i,j->cij", self.chan.sum(1), self.reach_h.sum(1), self.reach_w.sum(1)).reshape(-1)

    def synapses(self) -> int:
        return int(self.fan_out().sum())

    def min_bits(self) -> int:
        """The memory any placement needs for this link (lower bounds)."""
        if self.shared:  # the kernel at least once, its output channels packed densely
            return int(self.kernel * self.chan.sum() * (self.weight_bits + self.stride[1] * self.t.conv_x_stride_bits
                                                         + self.delay_bits))
        return self.synapses() * (self.weight_bits + self.delay_bits)


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
        self.weight_bits = link_weight_bits(link, src_shape, t)
        self.pattern = pattern  # [N_dst, N_src]
        self.weights = link.int_matrix(tuple(src_shape)).tocsr()

    def counts(self, tiling: Tiling) -> sp.csr_matrix:
        tile = tiling.tile_of()
        onehot = sp.csr_matrix((np.ones(len(tile), dtype=np.int64), (tile, np.arange(len(tile)))),
                               shape=(tiling.n_tiles, len(tile)))
        return (onehot @ self.pattern).T.tocsr()  # [N_src, n_tiles]

    def tile_stats(self, tiling: Tiling) -> dict[str, np.ndarray]:
        cnt = self.counts(tiling).tocsc()
        sizes = tiling.sizes().reshape(-1)
        col = np.repeat(np.arange(tiling.n_tiles), np.diff(cnt.indptr))
        sparse_b = self.weight_bits + self.delay_bits + index_bits(sizes, self.t)
        per = entry_bits(cnt.data, sparse_b[col], self.t)
        if self.t.dense_format:
            per = np.minimum(per, entry_bits(sizes, self.weight_bits + self.delay_bits, self.t)[col])
        return {"synapses": np.bincount(col, cnt.data, tiling.n_tiles),
                "bits": np.bincount(col, per, tiling.n_tiles),
                "input_axons": np.diff(cnt.indptr).astype(np.float64)}

    def tiles_per_source(self, tiling: Tiling) -> np.ndarray:
        return np.diff(self.counts(tiling).indptr)

    def synops(self, x: np.ndarray, tiling: Tiling) -> np.ndarray:
        """``[T, n_tiles]`` as ``ConvGeom.synops``."""
        return np.asarray((self.counts(tiling).T @ x.T).T, dtype=np.float64) * self.nonzero_fraction()

    def nonzero_fraction(self) -> float:
        if not self.t.skip_zero_weights:
            return 1.0
        return float(np.count_nonzero(self.weights.data)) / max(self.pattern.nnz, 1)

    def output_axons(self, src: Tiling, dst: Tiling, src_x_stride: int = 1) -> np.ndarray:
        if self.t.axon_per_destination_core:
            return src.block_sums(self.tiles_per_source(dst))
        return src.block_sums((self.fan_out() > 0).astype(np.int64))

    def fan_in_max(self) -> int:
        return int(np.diff(self.pattern.indptr).max(initial=0))

    def fan_out(self) -> np.ndarray:
        return np.bincount(self.pattern.indices, minlength=self.pattern.shape[1])

    def synapses(self) -> int:
        return int(self.pattern.nnz)

    def min_bits(self) -> int:
        return self.synapses() * (self.weight_bits + self.delay_bits)


class HostGeom:
    """The encoding link's end on chip: one input axon per core (the host's messages), nothing stored."""

    name = "host"
    weight_bits = 0

    def tile_stats(self, tiling: Tiling) -> dict[str, np.ndarray]:
        z = np.zeros(tiling.n_tiles)
        return {"synapses": z, "bits": z, "input_axons": z + 1}

    def fan_in_max(self) -> int:
        return 0

    def synapses(self) -> int:
        return 0

    def min_bits(self) -> int:
        return 0


def link_geom(link: Link, plan, t: Target):
    src, dst = shape3(plan.populations[link.src].shape), shape3(plan.populations[link.dst].shape)
    if link.conv is not None and len(plan.populations[link.src].shape) == 3 and len(plan.populations[link.dst].shape) == 3:
        return ConvGeom(link, src, dst, t)
    return MatrixGeom(link, src, dst, t)
