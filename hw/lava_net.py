"""Build and run a ``DeploymentPlan`` as a lava-nc 0.10 process graph (``Loihi2SimCfg``).

``build_network(plan, currents, backend)`` instantiates one process per plan element, from a
table of link kind → builder (``LINK_BUILDERS``):

- a ``RingBuffer`` sending the first population's pre-computed input currents (the off-chip
  encoding layer), one column per Lava step;
- ``LIFReset`` per population (``reset_interval = T``, ``reset_offset = (1 + depth) mod T``:
  neuron state is zeroed at each sample's first step, samples run back to back; a population that
  resets by subtraction or has a refractory delay: ``hw.lava_procs.loihi_lif.LIFResetLoihi``);
  a recurrent link connects a population's ``s_out`` back to its own ``a_in`` (a recurrent network's
  samples run side by side only, ``run_lava``);
- ``Conv`` (every kernel link without delay where ``Sparse`` is not cheaper, ``_as_lava_conv``) /
  ``Dense`` / ``Sparse`` / ``DelaySparse`` per link; several links into one
  population connect to its single ``a_in`` InPort, which sums them (residual joins);
- a recorder per population (``hw.lava_procs.recorder``) writing its ``s_out`` (the readout:
  its ``u``) into a shared-memory array each step, read once after the run (Lava's ``Monitor``,
  read back one value per message, remains as ``record="monitor"`` for the benchmark).

Shapes: Lava lays a ``(C, H, W)`` population out as ``(W, H, C)``; conv kernels are
``(C_out, W, H, C_in)`` and Lava's ``Conv`` flips them (a true convolution), so the builder
transposes and flips torch's cross-correlation kernels. Dense/sparse matrices are permuted
with ``plan.lava_perm``; the ports are flattened/reshaped at the connection.

``run_lava(plan, x_tb, backend=...)`` runs samples back to back and returns the same
``EmulatorResult`` as the emulator, with spikes in torch layout ``[T, B, ...]``: it computes the
input currents and hands plan and currents to ``run_network`` in a torch-free worker process
(``hw.lava_worker``; ``worker=False``: in this process). This module imports no torch at module
level, so the worker does not either. The runtime is stopped in a ``finally`` — also on errors
and Ctrl-C — so no Lava process outlives the call.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from htakl_deploy.hw.lava_compat import ensure_lava
from htakl_deploy.hw.plan import (CONV_SUM_LIMIT, INPUT, SIGMA_DELTA, DeploymentPlan, Link, Population, lava_perm,
                                  lava_shape)

BACKENDS = ("fixed_pt", "floating_pt")
STATE_VARS = {"lif": ("u", "v"), "delta": ("sigma", "act"), "sigma_delta": ("sigma", "act"), "sigma": ("sigma", None)}
RECORD_MODES = ("shared", "monitor")


def _to_lava_order(a_tb: np.ndarray) -> np.ndarray:
    """``[T, B, *shape]`` → Lava time series ``[*lava_shape, B·T]`` (sample-major)."""
    t, b = a_tb.shape[:2]
    per_step = np.moveaxis(a_tb, 0, 1).reshape(b * t, *a_tb.shape[2:])  # [B·T, *shape]
    if per_step.ndim == 4:
        per_step = per_step.transpose(0, 3, 2, 1)  # (C,H,W) → (W,H,C)
    return np.moveaxis(per_step, 0, -1)


def _from_lava_record(rec: np.ndarray, depth: int, samples: int, timesteps: int) -> np.ndarray:
    """Monitor record ``[steps, *lava_shape]`` → ``[T, samples, *torch_shape]`` for a population
    at ``depth`` (sample s, step t is Lava step ``s·T + depth + t + 1``, record row − 1)."""
    rows = rec[depth:depth + samples * timesteps].reshape(samples, timesteps, *rec.shape[1:])
    rows = np.moveaxis(rows, 0, 1)
    if rows.ndim == 5:
        rows = rows.transpose(0, 1, 4, 3, 2)
    return rows


@dataclass
class LavaNetwork:
    source: Any
    populations: dict[str, Any]
    links: dict[str, Any]
    monitors: dict[str, Any]  # population → its recorder (or Monitor)
    steps: int


def _lava_conv_weight(w: np.ndarray) -> np.ndarray:
    """torch ``[Cout, Cin, kh, kw]`` cross-correlation → Lava ``(Cout, W, H, Cin)``, flipped."""
    return np.ascontiguousarray(np.asarray(w).transpose(0, 3, 2, 1)[:, ::-1, ::-1])


def _permuted(m: sp.csr_matrix, dst: tuple[int, ...], src: tuple[int, ...]) -> sp.csr_matrix:
    return m.tocsr()[lava_perm(dst)][:, lava_perm(src)].tocsr()


def _lava_conv_csr(weight: np.ndarray, src_shape: tuple[int, ...], dst_shape: tuple[int, ...],
                   spec: dict) -> sp.csr_matrix:
    """The convolution ``spec`` with ``weight`` ``[Cout, Cin/groups, kh, kw]`` as a CSR matrix
    ``[N_dst, N_src]`` directly in Lava's ``(W, H, C)`` order (row ``(ow·OH + oh)·Cout + o``,
    column ``(iw·H + ih)·C + c``), zero weights and padding taps left out, written straight
    into its final arrays: no COO sort, no permutation (``conv_matrix`` + the permutation took
    ~30 s per 37 M-synapse ResNet layer). A row's columns are its position's first column plus
    fixed offsets, the same for every position whose taps are all inside the image."""
    c, h, w = src_shape
    cout, cg, kh, kw = weight.shape
    _, oh_n, ow_n = dst_shape
    (s0, s1), (p0, p1), (d0, d1) = spec["stride"], spec["padding"], spec["dilation"]
    ih0 = np.arange(oh_n) * s0 - p0  # first input row of each output row
    iw0 = np.arange(ow_n) * s1 - p1
    ih = ih0[:, None] + np.arange(kh) * d0  # [OH, kh]
    iw = iw0[:, None] + np.arange(kw) * d1  # [OW, kw]
    # positions in Lava order (ow major, oh minor): which taps fall inside the image
    valid = (((iw >= 0) & (iw < w))[:, None, None, :] & ((ih >= 0) & (ih < h))[None, :, :, None])
    valid = valid.reshape(ow_n * oh_n, kh * kw)  # [P, kh·kw]
    start = ((iw0[:, None] * h + ih0[None, :]) * c).reshape(-1)  # column of tap (0, 0), channel 0
    chan = (np.arange(cout) // (cout // spec["groups"]))[:, None] * cg + np.arange(cg)  # [Cout, cg]
    tap = (np.arange(kw)[None, :] * d1 * h + np.arange(kh)[:, None] * d0) * c  # [kh, kw]
    offset = chan[:, :, None, None] + tap[None, None]  # [Cout, cg, kh, kw]
    nonzero = weight != 0
    nz_tap = nonzero.sum(1).reshape(cout, kh * kw)  # nonzero weights per output channel and tap
    counts = valid.astype(np.int64) @ nz_tap.T  # [P, Cout] synapses per row
    indptr = np.concatenate([[0], np.cumsum(counts.reshape(-1))])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), weight.dtype)
    full = valid.all(1)
    offs, vals = offset[nonzero], weight[nonzero]  # an interior position's synapses, in row order
    edges = np.flatnonzero(np.diff(np.concatenate([[0], full.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):  # runs of interior positions: contiguous blocks
        lo, hi = indptr[a * cout], indptr[b * cout]
        indices[lo:hi].reshape(b - a, len(offs))[:] = start[a:b, None] + offs
        data[lo:hi].reshape(b - a, len(offs))[:] = vals
    for p in np.flatnonzero(~full):  # border positions: their own mask
        keep = nonzero & valid[p].reshape(1, 1, kh, kw)
        lo = indptr[p * cout]
        indices[lo:lo + keep.sum()] = start[p] + offset[keep]
        data[lo:lo + keep.sum()] = weight[keep]
    return sp.csr_matrix((data, indices, indptr), shape=(cout * oh_n * ow_n, c * h * w))


def _link_matrix(link: Link, src_shape: tuple[int, ...], fixed: bool) -> sp.csr_matrix:
    """The link's int (``fixed``) or float matrix in torch order: stored, or built from its
    kernel — only the one needed, and not kept on the link (a ResNet-20's kernels make 270 M
    synapses: both matrices kept would take ~6 GB)."""
    stored = link.matrix if fixed else link.f_matrix
    if stored is not None:
        return stored
    w = link.conv["weight"] if fixed else np.asarray(link.conv["f_weight"], dtype=np.float64)
    return link._from_kernel(w, src_shape).astype(np.int32 if fixed else np.float64)


# Lava's fixed_pt ``Conv`` model convolves each (output, input) channel pair with its own scipy
# ``convolve2d`` call, so its time per step grows with that pair count; ``Sparse``'s with the
# matrix's non-zeros (and its matrix takes memory: ~8 B per synapse in each process holding it,
# and tens of seconds to build). Measured per step, one 3×3 conv at 20 % input spikes (2-core
# machine): 64×64 ch at 32×32: Conv 0.88 s, Sparse 1.13 s; 128×128 at 16×16: 1.15 vs 1.29 s;
# 256×256 at 8×8: 2.6 vs 0.92 s; 512×512 at 4×4: 8.9 vs 0.75 s. Sparse is built in Lava's
# graded-spike mode (``num_message_bits``: its model multiplies the matrix by the 0/1 spike
# vector instead of summing a column slice — the same integer sums, ~10× faster). A link with a
# kernel and no extra delay is a Lava Conv (``lava_compat`` makes its model apply ``weight_exp``,
# as Dense and Sparse do) unless Sparse is cheap: up to ``SPARSE_FAST_NNZ`` synapses per copy of
# the network (at the demo's 64×32-channel conv on 4×4, 0.3 M synapses, Conv takes ~30 ms a step,
# Sparse ~1 ms), or more than ``LAVA_CONV_MAX_PAIRS`` channel pairs with at most
# ``SPARSE_MAX_NNZ`` synapses. Either way the same integers: the emulator checks every spike.
# VGG-16, 1 image (bench/lava_scale.py): with 24 M its 256/512-channel convs on 8×8/4×4 were
# Conv: 23.9 s a step, 2.3 GB of process tree (load 15); with 40 M they are Sparse: 5.0 s a
# step, 4.5 GB (load 10). ResNet-19's big convs (151 M synapses each) stay Conv.
LAVA_CONV_MAX_PAIRS = 128 * 128
SPARSE_FAST_NNZ = 2_000_000
SPARSE_MAX_NNZ = 40_000_000
GRADED_BITS = 8


def _conv_exact(link: Link) -> bool:
    """Whether Lava's Conv computes this kernel link exactly as Sparse would: the kernel unchanged
    by Sparse's 8-bit clipping/truncation (Conv applies none), and every sum, shifted by
    ``weight_exp``, inside Conv's 24-bit clamp."""
    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    w = np.asarray(link.conv["weight"]).astype(np.int64)
    mode = determine_sign_mode(w)
    if not np.array_equal(truncate_weights(clip_weights(w, mode, num_bits=8), mode, link.num_weight_bits), w):
        return False
    sum_abs = int(np.abs(w).reshape(len(w), -1).sum(1).max(initial=0))
    return sum_abs * 2 ** max(0, link.weight_exp) < CONV_SUM_LIMIT


def _as_lava_conv(link: Link, dst_shape: tuple[int, ...]) -> bool:
    """Whether a link is built as a Lava Conv (by the costs above, per copy), else Sparse/Dense."""
    if link.conv is None or link.kind == "input" or link.delay or len(dst_shape) != 3:
        return False
    w = np.asarray(link.conv["weight"])
    copies = link.conv.get("copies", 1)
    pairs = w.shape[0] * w.shape[1] // copies
    nnz = np.count_nonzero(w) // copies * int(np.prod(dst_shape[1:]))  # upper bound (padding)
    if nnz <= max(SPARSE_FAST_NNZ, int(np.prod(dst_shape)) // copies):  # cheap, or one tap per neuron
        return False
    if pairs > LAVA_CONV_MAX_PAIRS and nnz <= SPARSE_MAX_NNZ:
        return False
    return _conv_exact(link)


def _build_conv(link: Link, src_shape, dst_shape, fixed: bool, message_bits: int = 0):
    from lava.proc.conv.process import Conv

    spec = link.conv
    if not _as_lava_conv(link, dst_shape):
        return _build_sparse(link, src_shape, dst_shape, fixed, message_bits)
    w = spec["weight"].astype(np.int32) if fixed else spec["f_weight"].astype(np.float64)
    proc = Conv(weight=_lava_conv_weight(w), input_shape=lava_shape(src_shape),
                padding=tuple(spec["padding"][::-1]), stride=tuple(spec["stride"][::-1]),
                dilation=tuple(spec["dilation"][::-1]), groups=spec["groups"], name=link.name,
                weight_exp=link.weight_exp if fixed else 0, num_message_bits=message_bits)
    if tuple(proc.output_shape) != lava_shape(dst_shape):
        raise ValueError(f"link {link.name!r}: Lava Conv output {proc.output_shape} != {lava_shape(dst_shape)}")
    return proc, False


def _build_dense(link: Link, src_shape, dst_shape, fixed: bool, message_bits: int = 0):
    from lava.proc.dense.process import Dense

    m = _permuted(_link_matrix(link, src_shape, fixed), dst_shape, src_shape).toarray()
    if fixed:
        return Dense(weights=m.astype(np.int32), weight_exp=link.weight_exp, num_weight_bits=link.num_weight_bits,
                     num_message_bits=message_bits, name=link.name), True
    return Dense(weights=m.astype(np.float64), num_message_bits=message_bits, name=link.name), True


def _build_sparse(link: Link, src_shape, dst_shape, fixed: bool, message_bits: int = 0):
    from lava.proc.sparse.process import DelaySparse, Sparse

    if link.conv is not None and len(src_shape) == 3 and len(dst_shape) == 3:
        c = link.conv
        m = _lava_conv_csr(np.asarray(c["weight"]) if fixed else np.asarray(c["f_weight"], dtype=np.float64),
                           src_shape, dst_shape, c)
    else:
        m = _permuted(_link_matrix(link, src_shape, fixed), dst_shape, src_shape)
    m.eliminate_zeros()
    m = m.astype(np.int32) if fixed else m.astype(np.float64)
    kwargs = {"weight_exp": link.weight_exp, "num_weight_bits": link.num_weight_bits} if fixed else {}
    if link.delay == 0:
        return Sparse(weights=m, name=link.name, num_message_bits=max(GRADED_BITS, message_bits), **kwargs), True
    delays = m.copy().astype(int)  # Lava checks for exactly the default int dtype
    delays.data[:] = link.delay
    return DelaySparse(weights=m, delays=delays, name=link.name, num_message_bits=message_bits, **kwargs), True


LINK_BUILDERS: dict[str, Callable[..., tuple[Any, bool]]] = {  # (link, src shape, dst shape, fixed, message bits)
    "conv": _build_conv,
    "dense": _build_dense,
    "sparse": _build_sparse,
}


def _build_sigma_delta(pop: Population, fixed: bool):
    """lava-nc's sigma-delta processes with the parameters lava-dl's netx gives them (spike and state
    exponents 6, ReLU); netx resets none of them, and neither does this (a plan holding them runs one
    group of samples per network, ``run_lava``)."""
    from lava.proc.sdn.process import Delta, Sigma, SigmaDelta

    from htakl_deploy.export.nodes.sigma_delta import SPIKE_EXP, STATE_EXP

    if not fixed:
        raise ValueError(f"population {pop.name!r}: sigma-delta neurons are built for fixed_pt only")
    shape = lava_shape(pop.shape)
    if pop.neuron == "sigma":
        return Sigma(shape=shape)
    exps = dict(spike_exp=SPIKE_EXP, state_exp=STATE_EXP)
    if pop.neuron == "delta":
        return Delta(shape=shape, vth=pop.vth, **exps)
    bias = pop.per_neuron(pop.bias_mant)
    bias = bias.transpose(2, 1, 0) if len(pop.shape) == 3 else bias
    return SigmaDelta(shape=shape, vth=pop.vth, bias=np.ascontiguousarray(bias).astype(np.int32), name=pop.name, **exps)


def _build_population(pop: Population, timesteps: int, fixed: bool):
    from lava.proc.lif.process import LIFReset

    from htakl_deploy.hw.lava_procs.loihi_lif import LIFResetLoihi

    shape = lava_shape(pop.shape)
    if pop.neuron in SIGMA_DELTA:
        return _build_sigma_delta(pop, fixed)
    if pop.neuron == "graded":  # a relay: its input current, sent as a graded spike every step
        if not fixed:
            raise ValueError(f"population {pop.name!r}: graded relays run in fixed_pt only (Lava's GradedVec has "
                             "no floating_pt model)")
        from lava.proc.graded.process import GradedVec

        return GradedVec(shape=shape, vth=0, exp=0)  # (GradedVec takes no name)
    to_lava = (lambda a: a.transpose(2, 1, 0)) if len(pop.shape) == 3 else (lambda a: a)
    plain = pop.readout and pop.read == "current"  # our readout: its bias is added when read
    if fixed:
        bias = np.zeros(pop.shape, np.int64) if plain else pop.per_neuron(pop.bias_mant)
        params = dict(du=pop.du, dv=pop.dv, vth=pop.vth, bias_mant=to_lava(bias).astype(np.int32),
                      bias_exp=0 if plain else pop.bias_exp)
    else:
        bias = np.zeros(pop.shape) if plain else pop.per_neuron(pop.f_bias)
        params = dict(du=pop.f_du, dv=pop.f_dv, vth=pop.f_vth, bias_mant=to_lava(bias).astype(np.float64),
                      bias_exp=0)
    kwargs = dict(shape=shape, reset_interval=timesteps, reset_offset=(1 + pop.depth) % timesteps, name=pop.name,
                  **params)
    if pop.ref_delay == 1 and pop.reset == "zero":
        return LIFReset(**kwargs)  # lava's own
    if pop.ref_delay != 1 and not fixed:
        raise ValueError(f"population {pop.name!r}: refractory delay {pop.ref_delay} is built for fixed_pt only")
    return LIFResetLoihi(ref_delay=pop.ref_delay, reset=pop.reset, **kwargs)  # Loihi 2's additions


def build_network(plan: DeploymentPlan, currents_tb: np.ndarray, *, backend: str = "fixed_pt",
                  record: str = "shared", record_state: bool = False) -> LavaNetwork:
    """Processes for ``plan`` fed with the first population's currents ``[T, B, *shape]`` (a
    ``bias`` input link: the bias mantissas the input adds, written by a ``BiasWriter``).

    Recording (``record``): ``"shared"``, a ``SpikeRecorder`` / ``VarRecorder`` per population
    writing into an array in shared memory (``hw.lava_procs.recorder``: read at once after the
    run; ``release_recordings`` frees them); ``"monitor"``, Lava's ``Monitor`` (read back
    through ``Var.get``, one value per message — the old, slow path). ``record_state`` (shared
    only): every population's ``u`` and ``v`` too, under ``NAME#u`` / ``NAME#v``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}, expected one of {BACKENDS}")
    ensure_lava()
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    from htakl_deploy.hw.lava_procs.recorder import SpikeRecorder, VarRecorder, create_recording, release

    fixed = backend == "fixed_pt"
    timesteps, samples = currents_tb.shape[:2]
    steps = plan.lava_steps(samples, timesteps)
    series = _to_lava_order(currents_tb)
    pad = np.zeros((*series.shape[:-1], steps - series.shape[-1]), series.dtype)
    data = np.concatenate([series, pad], axis=-1)
    pops = {name: _build_population(p, timesteps, fixed) for name, p in plan.populations.items()}
    link_in = plan.input_link
    if link_in.kind == "bias":  # the input is the first population's bias mantissa, step by step
        from htakl_deploy.hw.lava_procs.bias import BiasWriter

        dst = plan.populations[link_in.dst]
        mant = (dst.per_neuron(dst.bias_mant) if fixed else dst.per_neuron(dst.f_bias))
        lava_mant = mant.transpose(2, 1, 0) if len(dst.shape) == 3 else mant
        data = data + np.expand_dims(np.broadcast_to(lava_mant, data.shape[:-1]), -1)
        data = data.astype(np.int32) if fixed else data.astype(np.float64)
        pops[link_in.dst].bias_mant.init = data[..., 0]
        source = BiasWriter(var=pops[link_in.dst].bias_mant, data=data)
    else:
        source = RingBuffer(data=data.astype(np.int32) if fixed else data.astype(np.float64))
    links = {}
    for link in plan.links:
        dst = plan.populations[link.dst]
        if link.src == INPUT:
            if link.kind == "input":
                source.s_out.connect(pops[link.dst].a_in)
            continue
        src = plan.populations[link.src]
        if src.neuron == "graded":  # a relay's payloads: Dense/Sparse (exact sums, never Conv's 24-bit clamp)
            build = _build_dense if link.kind == "dense" else _build_sparse
            proc, flat = build(link, src.shape, dst.shape, fixed, src.message_bits)
        else:
            kind = "conv" if _as_lava_conv(link, dst.shape) else link.kind
            proc, flat = LINK_BUILDERS[kind](link, src.shape, dst.shape, fixed, src.message_bits)
        out = pops[link.src].s_out
        (out.flatten() if flat and len(src.shape) > 1 else out).connect(proc.s_in)
        (proc.a_out.reshape(lava_shape(dst.shape)) if flat and len(dst.shape) > 1 else proc.a_out).connect(
            pops[link.dst].a_in)
        links[link.name] = proc
    recorders = {}
    var_type = np.int64 if fixed else np.float64
    for name, pop in plan.populations.items():
        read_var = {"current": "u", "v": "v", "sigma": "sigma"}.get(pop.read) if pop.readout else None
        if record != "shared":  # one Monitor per probe: lava 0.10's Monitor fails to compile with several
            recorders[name] = Monitor()
            recorders[name].probe(getattr(pops[name], read_var) if read_var else pops[name].s_out, steps)
            continue
        shape = lava_shape(pop.shape)
        if read_var:
            key, _ = create_recording(shape, steps, var_type)
            recorders[name] = VarRecorder(var=getattr(pops[name], read_var), key=key)
        else:  # spikes: 0/1, or graded payloads (a relay's, a sigma-delta population's)
            key, _ = create_recording(shape, steps, var_type if pop.graded else np.uint8)
            recorders[name] = SpikeRecorder(shape=shape, key=key)
            pops[name].s_out.connect(recorders[name].a_in)
        if record_state and pop.neuron != "graded":  # a relay has no state; a sigma-delta one (sigma, act)
            for var, lava_var in zip(("u", "v"), STATE_VARS[pop.neuron]):
                key, _ = create_recording(shape, steps, var_type)
                if lava_var is not None:
                    recorders[f"{name}#{var}"] = VarRecorder(var=getattr(pops[name], lava_var), key=key)
                else:
                    release(key)
    return LavaNetwork(source, pops, links, recorders, steps)


def release_recordings(net: LavaNetwork) -> None:
    """Drop the network's shared recording arrays (their memory goes with the last reference)."""
    from htakl_deploy.hw.lava_procs.recorder import SpikeRecorder, VarRecorder, release

    for rec in net.monitors.values():
        if isinstance(rec, (SpikeRecorder, VarRecorder)):
            release(rec.proc_params["key"])


def _recorded(net: LavaNetwork, plan: DeploymentPlan) -> dict[str, np.ndarray]:
    """Each population's recording ``[steps, *lava_shape]``: its spikes, the readout's ``u``."""
    from htakl_deploy.hw.lava_procs.recorder import _SHARED, SpikeRecorder, VarRecorder

    out = {}
    for name, rec in net.monitors.items():
        if isinstance(rec, (SpikeRecorder, VarRecorder)):
            out[name] = _SHARED[rec.proc_params["key"]].copy()
        else:
            pop = plan.populations[name]
            var = {"current": "u", "v": "v"}.get(pop.read) if pop.readout else None
            out[name] = np.asarray(rec.get_data()[name][var or "s_out"])
    return out


# -- several samples per Lava step: K copies of the network side by side ----------------------

# Lava steps have a fixed cost (every process exchanges messages and synchronises each step)
# on top of the computing; K copies of the network in the same processes — each population K
# times wider (copies stacked along channels), each link block-diagonal (a grouped convolution,
# a block-diagonal matrix) — run K samples per step. A copy's spikes depend only on its own
# sample: the emulator checks every spike of every copy. Measured on the demo convnet, 360
# images (2 cores, load ~10): K = 1: 29 images/s (5.6 ms a step), 2: 58, 4: 61, 8: 44, 16: 49
# (the copies' computing then dominates, and building the wider network takes longer).
MAX_COPIES = 8
RECURRENT_MAX_COPIES = 64  # a recurrent network runs k samples side by side per Lava run (each run ~1-3 s to start)
PROGRESS_EVERY_S = 2.0
COPIES_NNZ_BUDGET = 16_000_000  # synapses of all Sparse links of all copies (≈ 8 B each)


def tile_plan(plan: DeploymentPlan, k: int) -> DeploymentPlan:
    """``plan`` with ``k`` copies side by side: population ``(C, ...)`` → ``(k·C, ...)`` (copy
    ``j`` holds channels ``j·C … (j+1)·C − 1``), kernels grouped ``k`` times more, matrices
    block-diagonal. Depths, delays and neuron parameters are unchanged. Kernels stay kernels (a
    Sparse link's matrix is written from the grouped kernel by ``_lava_conv_csr``): no torch."""
    if k == 1:
        return plan
    pops = {}
    for name, p in plan.populations.items():
        pops[name] = replace(p, shape=(k * p.shape[0], *p.shape[1:]), bias_mant=np.tile(p.bias_mant, k),
                             f_bias=np.tile(p.f_bias, k))
    links = []
    for link in plan.links:
        conv, matrix, f_matrix, kind = link.conv, None, None, link.kind
        if kind == "bias":  # no synapses: the input itself, folded with the copies
            links.append(link)
            continue
        if conv is not None:  # a kernel (conv, pooled conv, identity skip): k times more groups
            conv = {**conv, "weight": np.concatenate([conv["weight"]] * k), "copies": conv.get("copies", 1) * k,
                    "groups": conv["groups"] * k}
            if link.conv.get("f_weight") is not None:
                conv["f_weight"] = np.concatenate([link.conv["f_weight"]] * k)
        else:
            matrix = sp.block_diag([link.matrix] * k, format="csr")
            f_matrix = None if link.f_matrix is None else sp.block_diag([link.f_matrix] * k, format="csr")
            kind = "sparse" if kind == "dense" else kind  # block-diagonal: Sparse, not a dense matrix
        links.append(Link(link.name, link.src, link.dst, kind, link.delay, link.weight_exp, matrix, f_matrix, conv,
                          link.num_weight_bits, link.lag))
    return DeploymentPlan(plan.input_shape, plan.input_scale, pops, links, plan.metadata)


def _link_nnz(plan: DeploymentPlan, link: Link) -> int:
    """Synapses of a link built as Sparse/Dense (0 for a Lava Conv or the off-chip input)."""
    if link.kind in ("input", "bias") or _as_lava_conv(link, plan.populations[link.dst].shape):
        return 0
    if link.conv is None:
        return int(link.matrix.nnz)
    w = np.asarray(link.conv["weight"])
    return int(np.count_nonzero(w)) * int(np.prod(plan.populations[link.dst].shape[1:]))  # upper bound


def is_recurrent(plan: DeploymentPlan) -> bool:
    """Whether a population of ``plan`` feeds itself (a recurrent link)."""
    return any(link.src == link.dst for link in plan.links)


def choose_copies(plan: DeploymentPlan, samples: int) -> int:
    """How many samples per Lava step: as many as there are samples, at most ``MAX_COPIES``
    (``RECURRENT_MAX_COPIES`` for a recurrent network, whose samples cannot run back to back),
    and the copies' synapses within ``COPIES_NNZ_BUDGET``."""
    nnz = sum(_link_nnz(plan, link) for link in plan.links)
    cap = RECURRENT_MAX_COPIES if is_recurrent(plan) else MAX_COPIES
    by_memory = COPIES_NNZ_BUDGET // nnz if nnz else cap
    return int(max(1, min(samples, cap, by_memory)))


def _fold(a_tb: np.ndarray, k: int) -> np.ndarray:
    """``[T, B, C, ...]`` → ``[T, ceil(B/k), k·C, ...]`` (sample ``g·k + j`` in copy ``j``; the
    last group padded with zero samples)."""
    t, b = a_tb.shape[:2]
    groups = -(-b // k)
    pad = np.zeros((t, groups * k - b, *a_tb.shape[2:]), a_tb.dtype)
    a = np.concatenate([a_tb, pad], axis=1).reshape(t, groups, k, *a_tb.shape[2:])
    return a.reshape(t, groups, k * a_tb.shape[2], *a_tb.shape[3:])


def _unfold(a: np.ndarray, k: int, samples: int) -> np.ndarray:
    """Inverse of ``_fold``: ``[T, G, k·C, ...]`` → ``[T, samples, C, ...]``."""
    t, g = a.shape[:2]
    a = a.reshape(t, g, k, a.shape[2] // k, *a.shape[3:])
    return a.reshape(t, g * k, *a.shape[3:])[:, :samples]


def run_network(plan: DeploymentPlan, currents_tb: np.ndarray, *, backend: str = "fixed_pt", copies: int = 1,
                record: str = "shared", progress: Callable[[int], None] | None = None, chunk_samples: int = 50,
                timings: dict[str, Any] | None = None,
                before_stop: Callable[[], None] | None = None, record_state: bool = False) -> dict[str, np.ndarray]:
    """Build and run ``plan`` in Lava, in this process, on the first population's currents
    ``[T, B, *shape]``, ``copies`` samples side by side; return each population's recording in
    torch layout ``[T, B, *shape]``: spikes (bool), the readout's ``u`` (int64, or float64 for
    ``floating_pt``). Torch-free: ``hw.lava_worker`` calls it in its own process. ``progress``,
    ``chunk_samples``, ``record`` and ``timings`` as in ``run_lava``; ``before_stop()`` is called
    just before the runtime is stopped (also on errors)."""
    if record not in RECORD_MODES:
        raise ValueError(f"record {record!r}, expected one of {RECORD_MODES}")
    ensure_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    k = int(copies)
    if k < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    timesteps, samples = currents_tb.shape[:2]
    groups = -(-samples // k)
    clock = {"t0": time.perf_counter()}
    net = build_network(tile_plan(plan, k), _fold(currents_tb, k), backend=backend, record=record,
                        record_state=record_state)
    clock["built"] = time.perf_counter()
    run_cfg = Loihi2SimCfg(select_tag=backend)
    max_groups = max(1, chunk_samples // k)
    done_steps, chunk_groups = 0, 1  # the first step alone (start), then one group, then ~PROGRESS_EVERY_S
    try:
        while done_steps < net.steps:
            n = 1 if done_steps == 0 else min(chunk_groups * timesteps, net.steps - done_steps)
            if net.steps - done_steps - n <= plan.max_depth:
                n = net.steps - done_steps  # fold the pipeline drain into the last chunk
            t_run = time.perf_counter()
            net.source.run(condition=RunSteps(num_steps=n), run_cfg=run_cfg)
            if done_steps == 0:
                clock["started"] = time.perf_counter()
                processes = len(multiprocessing.active_children())
            else:
                per_group_s = (time.perf_counter() - t_run) / n * timesteps
                chunk_groups = max(1, min(max_groups, int(PROGRESS_EVERY_S / max(per_group_s, 1e-9))))
            done_steps += n
            if progress is not None:
                progress(min(samples, k * max(0, (done_steps - plan.max_depth) // timesteps)))
        clock["stepped"] = time.perf_counter()
        data = _recorded(net, plan)
        clock["read"] = time.perf_counter()
    finally:
        if before_stop is not None:
            before_stop()
        net.source.stop()
        release_recordings(net)
    if timings is not None:
        timings.update(build_s=clock["built"] - clock["t0"], start_s=clock["started"] - clock["built"],
                       step_s=(clock["stepped"] - clock["started"]) / max(1, net.steps - 1),
                       readback_s=clock["read"] - clock["stepped"], steps=net.steps, copies=k,
                       processes=processes)
    out = {}
    values = np.int64 if backend == "fixed_pt" else np.float64
    for name, pop in plan.populations.items():
        rec = _unfold(_from_lava_record(data.pop(name), pop.depth, groups, timesteps), k, samples)
        out[name] = rec.astype(values if pop.readout or pop.graded else bool)
        for var in ("u", "v") if record_state and pop.neuron != "graded" else ():
            raw = data.pop(f"{name}#{var}", None)  # a sigma decoder has no act: zeros, as the emulator's
            raw = np.zeros((net.steps, *lava_shape(tile_plan(plan, k).populations[name].shape))) if raw is None else raw
            state = _unfold(_from_lava_record(raw, pop.depth, groups, timesteps), k, samples)
            out[f"{name}#{var}"] = state.astype(values)
    return out


def run_lava(plan: DeploymentPlan, x_tb, *, backend: str = "fixed_pt", x_is_int: bool = False,
             progress: Callable[[int], None] | None = None, chunk_samples: int = 50,
             record: str = "shared", copies: int | None = None,
             timings: dict[str, float] | None = None, worker: bool = True, record_state: bool = False):
    """Run samples ``x`` ``[T, B, C, H, W]`` (pixels in [0, 1]) back to back in Lava,
    ``copies`` at a time side by side (``tile_plan``; default ``choose_copies``); return an
    ``EmulatorResult``.

    ``worker`` (default): Lava runs in a separate, torch-free process (``hw.lava_worker``), so
    that the processes Lava forks do not inherit this process's memory (torch, data, models); a
    Lava process that dies there (out of memory, killed) ends the call with
    ``LavaWorkerError`` instead of a hang. ``worker=False`` runs Lava in this process.

    ``record``: ``"shared"`` (recorders writing into shared memory, read at once) or
    ``"monitor"`` (Lava's ``Monitor``, read value by value: kept for the benchmark's old path).

    ``progress(n)`` is called with the number of samples completed after each chunk of steps:
    about every ``PROGRESS_EVERY_S`` seconds, at most ``chunk_samples`` samples (the run is
    paused between chunks; state carries on), so that a progress bar can show an ETA.
    ``timings``, if given, receives the phases in seconds: ``build_s`` (process graph),
    ``start_s`` (Lava compiles, forks its processes and runs the first step), ``step_s`` (each
    further step, mean), ``readback_s``, and ``steps``, ``copies``, ``processes`` (OS processes
    Lava forked); with a worker also ``worker_s`` (the worker's whole life, from start to its
    results read here). ``record_state``: every population's ``u`` and ``v`` each step too, in the
    result's ``state`` (as ``emulate(..., record_state=True)``)."""
    from htakl_deploy.export.quantize import quantize_input
    from htakl_deploy.hw.emulator import EmulatorResult, input_currents, lag_input, readout_logits

    if record not in RECORD_MODES:
        raise ValueError(f"record {record!r}, expected one of {RECORD_MODES}")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}, expected one of {BACKENDS}")
    if backend == "floating_pt" and not plan.float_weights:
        raise ValueError("floating_pt needs the plan's float weights, which an exported artefact does not hold "
                         "(hw.simulate.float_plan rebuilds them from the float student beside it)")
    x = np.asarray(x_tb)
    if x.ndim < 3 or tuple(x.shape[2:]) != plan.input_shape:
        raise ValueError(f"expected input [T, B, {plan.input_shape}], got {x.shape}")
    samples = x.shape[1]
    x_int = x.astype(np.int64) if x_is_int else quantize_input(x, plan.input_scale)
    x_in = lag_input(plan, x_int)
    if plan.input_link.kind == "bias":  # the input is added to a bias mantissa (a netx input layer)
        currents = x_in
    elif backend == "fixed_pt":
        currents = input_currents(plan, x_in)
    else:
        currents = _float_input_currents(plan, x_in * plan.input_scale)
    k = choose_copies(plan, samples) if copies is None else int(copies)
    if k < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    kwargs = dict(backend=backend, record=record, chunk_samples=chunk_samples, timings=timings,
                  record_state=record_state)
    if worker:
        from htakl_deploy.hw.lava_worker import run_in_worker as run_it
    else:
        run_it = run_network
    if is_recurrent(plan) or any(p.neuron in SIGMA_DELTA for p in plan.populations.values()):
        # a recurrent link would carry one sample's last spikes into the next one's first step, and netx
        # resets no sigma-delta neuron: each group of k samples (side by side) is a network of its own,
        # run from its first step
        parts = [run_it(plan, currents[:, i:i + k], copies=min(k, samples - i),
                        progress=None if progress is None else (lambda n, i=i: progress(i + n)), **kwargs)
                 for i in range(0, samples, k)]
        rec = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0]}
    else:
        rec = run_it(plan, currents, copies=k, progress=progress, **kwargs)
    state = ({name: (rec.pop(f"{name}#u"), rec.pop(f"{name}#v")) for name, p in plan.populations.items()
              if p.neuron != "graded"} if record_state else None)
    readout_u = rec.pop(plan.readout.name)
    if backend == "fixed_pt":
        logits = readout_logits(plan.readout, readout_u)
    elif plan.readout.read == "current":
        logits = readout_u + plan.readout.per_neuron(plan.readout.f_bias)
    else:
        logits = readout_u.astype(np.float64)
    return EmulatorResult(rec, readout_u, logits, x_int, state)


def _float_input_currents(plan: DeploymentPlan, x: np.ndarray) -> np.ndarray:
    """Float first-layer currents (``floating_pt``): ``conv(x, W/τ)``, no bias (it is the LIF's)."""
    import torch

    spec = plan.input_link.conv
    t, b = x.shape[:2]
    if spec is None:  # a dense first layer: its float matrix on the flat input
        y = (plan.input_link.f_matrix @ x.reshape(t * b, -1).astype(np.float64).T).T
        return np.asarray(y).reshape(t, b, *plan.populations[plan.input_link.dst].shape)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(torch.from_numpy(x.reshape(t * b, *x.shape[2:]).astype(np.float64)),
                                       torch.from_numpy(np.asarray(spec["f_weight"], dtype=np.float64)), None,
                                       spec["stride"], spec["padding"], spec["dilation"], spec["groups"])
    return y.numpy().reshape(t, b, *y.shape[1:])
