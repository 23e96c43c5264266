"""A vectorised emulator of a ``DeploymentPlan`` on lava-nc 0.10's ``fixed_pt`` models.

It computes, for many samples at once, exactly what the Lava network built by ``hw.lava_net``
computes one sample after another — the same integer operations in the same order:

- ``input``  link: ``shift(conv(x_int, W), weight_exp)`` on 8-bit pixels, sent as int32
             (the ``RingBuffer`` data), so wrapped to 32 bits;
- ``conv``   link: Lava ``Conv`` (``PyConvModelFixed``): the convolution of the spikes, wrapped
             to 24 bits, ``weight_exp`` not applied (the plan only puts exponent-0 convs here);
- ``dense`` / ``sparse`` link: ``PyDenseModelBitAcc`` / ``PySparseModelBitAcc`` /
             ``PyDelaySparseModelBitAcc``: Lava's weight clipping/truncation for the matrix's
             sign mode, the sum of the weights of the spiking inputs, shifted by ``weight_exp``,
             sent through an int32 channel;
- the population's ``a_in``: the links' int32 outputs added in int32 (Lava's InPort sum);
- the neuron: ``PyLifResetModelBitAcc`` (``hw.lif_ref.lif_int_step`` — the update
  checked bit for bit against real Lava in tests/test_lava.py; reset by subtraction as
  ``hw.lava_procs.loihi_lif`` runs it), state zeroed at each sample's first step (the ``LIFReset``
  interval); a population's recurrent link adds its output of the previous step's spikes.

Delays only move a population's steps in Lava time (see ``hw.plan``); every input of a
population refers to the same sample step, so the emulator runs each population over the
``T`` steps of all samples at once. Each (population, step) is a tensor operation over every
sample; there is no Python loop over samples or neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from htakl_deploy.export.quantize import quantize_input
from htakl_deploy.hw import kernels
from htakl_deploy.hw.lif_ref import effective_weights, lif_int_step, wrap_i32
from htakl_deploy.hw.plan import INPUT, SIGMA_DELTA, DeploymentPlan, Link, Population

_F32_EXACT = 2**24  # integer sums below this are exact in float32


def _abs_max(x: torch.Tensor) -> int:
    if not x.numel():
        return 0
    lo, hi = torch.aminmax(x)
    return max(int(hi), -int(lo))


def _t_wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap of an int64 tensor to ``bits`` (a no-op, skipped, when in range)."""
    half = 2 ** (bits - 1)
    if x.numel() and (x.max() >= half or x.min() < -half):
        return torch.remainder(x + half, 2 * half) - half
    return x


def _t_shift(a: torch.Tensor, exp: int) -> torch.Tensor:
    return a * (2**exp) if exp >= 0 else torch.div(a, 2**-exp, rounding_mode="floor")


def _row_abs_max(m) -> float:
    return float(np.asarray(abs(m).sum(axis=1)).max(initial=0))


def _conv_int(x: torch.Tensor, link: Link, bound: float) -> torch.Tensor:
    """Exact integer convolution of ``x`` [T, B, C, H, W] via float32 (or float64 when the
    largest possible |sum| does not fit float32's 24-bit mantissa) → int64 tensor."""
    spec = link.conv
    dtype = torch.float32 if bound < _F32_EXACT else torch.float64
    t, b = x.shape[:2]
    w = torch.from_numpy(np.asarray(spec["weight"])).to(dtype)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x.reshape(t * b, *x.shape[2:]).to(dtype), w, None, spec["stride"],
                                       spec["padding"], spec["dilation"], spec["groups"])
    return y.round().to(torch.int64).reshape(t, b, *y.shape[1:])


def _conv_bound(link: Link) -> float:
    w = np.abs(np.asarray(link.conv["weight"]))
    return float(w.reshape(len(w), -1).sum(1).max(initial=0))


def _input_currents_t(plan: DeploymentPlan, x_int: torch.Tensor) -> torch.Tensor:
    """What the input link sends its population: currents (``input``), or the bias mantissas the
    input adds each step (``bias``: the netx input layer, ``x`` itself)."""
    link = plan.input_link
    if link.kind == "bias":
        return x_int
    if link.conv is None:  # a dense first layer: its integer matrix on the flat input (exact int64)
        t, b = x_int.shape[:2]
        m = link.matrix.tocsr().astype(np.int64)
        y = torch.from_numpy(np.ascontiguousarray((m @ x_int.reshape(t * b, -1).numpy().T).T))
        y = y.reshape(t, b, *plan.populations[link.dst].shape)
    else:
        y = _conv_int(x_int, link, _conv_bound(link) * _abs_max(x_int))
    return _t_wrap(_t_shift(y, link.weight_exp), 32)


def lag_input(plan: DeploymentPlan, x_int: np.ndarray) -> np.ndarray:
    """The input as the input link delivers it, ``[T, B, ...]``: with ``lag`` k, the samples' steps
    as one stream, k steps late (a sample's last k steps open the next sample; the first sample
    opens with zeros) — lava-dl's netx, whose file's first layer reads the input through its
    on-chip synapse, runs so. Unchanged without a lag."""
    k = plan.input_link.lag
    if not k:
        return x_int
    t, b = x_int.shape[:2]
    stream = np.moveaxis(x_int, 1, 0).reshape(b * t, *x_int.shape[2:])
    stream = np.concatenate([np.zeros((k, *stream.shape[1:]), stream.dtype), stream[:-k]])
    return np.moveaxis(stream.reshape(b, t, *x_int.shape[2:]), 0, 1)


def input_currents(plan: DeploymentPlan, x_int: np.ndarray) -> np.ndarray:
    """The first population's currents ``[T, B, *shape]`` (int64 holding int32 values)."""
    return _input_currents_t(plan, torch.from_numpy(np.asarray(x_int, dtype=np.int64))).numpy()


def lava_matrix(link: Link, src_shape: tuple[int, ...]) -> sp.csr_matrix:
    """The link's int64 matrix after Lava's 8-bit clipping and its ``num_weight_bits`` truncation
    for its sign mode."""
    m = link.int_matrix(src_shape).astype(np.int64)
    m.data = effective_weights(m.data[None, :], link.num_weight_bits)[0] if m.nnz else m.data
    return m


def _kernel_is_exact(link: Link) -> bool:
    """True if Lava's clipping/truncation leaves the kernel's weights unchanged, so that the
    convolution equals Lava's Sparse product (the quantiser's even 8-bit mantissas always do;
    checked once per link)."""
    keeps = link.__dict__.get("_kernel_is_exact")
    if keeps is None:
        w = np.asarray(link.conv["weight"]).reshape(1, -1)
        keeps = link.__dict__["_kernel_is_exact"] = bool(np.array_equal(effective_weights(w, link.num_weight_bits), w))
    return keeps


def _prepared(link: Link, src_shape: tuple[int, ...]) -> tuple[bool, object]:
    """The link's Lava-effective weights in the form the emulator multiplies with, computed once
    per link: (exact in float32?, dense float32 tensor [N_in, N_out] | scipy matrix)."""
    cached = link.__dict__.get("_emulator_weights")
    if cached is None:
        m = lava_matrix(link, src_shape)
        if _row_abs_max(m) >= _F32_EXACT:
            cached = (False, m)
        elif link.kind == "dense":
            cached = (True, torch.from_numpy(m.toarray().astype(np.float32)).T.contiguous())
        else:
            cached = (True, m.astype(np.float32))
        link.__dict__["_emulator_weights"] = cached
    return cached


def _link_output_t(link: Link, spikes: torch.Tensor, dst_shape: tuple[int, ...]) -> torch.Tensor:
    """A link's integer output; ``spikes``: bool, or graded int64 payloads (a relay's, a sigma-delta population's)."""
    t, b = spikes.shape[:2]
    scale = 1 if spikes.dtype == torch.bool else max(1, _abs_max(spikes))  # graded: sums grow with the payload
    if link.kind == "conv":  # Lava Conv: no exponent, 24-bit wrap
        return _t_wrap(_conv_int(spikes, link, _conv_bound(link) * scale), 24)
    if link.conv is not None and _kernel_is_exact(link):  # a Sparse whose matrix is this convolution
        y = _conv_int(spikes, link, _conv_bound(link) * scale)
        return _t_wrap(_t_shift(y, link.weight_exp), 32).reshape(t, b, *dst_shape)
    flat = spikes.reshape(t * b, -1)
    exact_f32, weights = _prepared(link, tuple(spikes.shape[2:]))
    if scale > 1:  # graded payloads: the exact int64 product
        exact_f32, weights = False, lava_matrix(link, tuple(spikes.shape[2:]))
    if exact_f32:  # binary inputs, |row sums| < 2^24: float32 sums are exact
        if link.kind == "dense":
            a = flat.to(torch.float32) @ weights
        else:
            a = torch.from_numpy(np.asarray((weights @ flat.numpy().astype(np.float32).T).T))
        a = a.round().to(torch.int64)
    else:
        a = torch.from_numpy(np.asarray((weights @ flat.numpy().astype(np.int64).T).T))
    return _t_wrap(_t_shift(a, link.weight_exp), 32).reshape(t, b, *dst_shape)


@dataclass
class EmulatorResult:
    spikes: dict[str, np.ndarray]  # population → bool [T, B, *shape] (torch layout)
    readout_u: np.ndarray  # int64 [T, B, K]: the readout's value each step (its current u; netx: v or spikes)
    logits: np.ndarray  # float64 [T, B, K] = (u + bias) / (64·S); netx: v / 64, or the spikes
    input_int: np.ndarray  # int64 [T, B, C, H, W]: the 8-bit pixels
    state: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # population → (u, v) [T, B, *shape]


def population_bias(pop: Population) -> np.ndarray:
    """``bias_mant << bias_exp`` per neuron as Lava's int32 ``effective_bias``."""
    return wrap_i32(pop.per_neuron(pop.bias_mant) << pop.bias_exp)


def readout_logits(pop: Population, readout_u: np.ndarray) -> np.ndarray:
    """The readout as numbers: ours ``(u + bias) / (64·S)``; a netx last layer's ``v / 64`` (Lava's
    floating_pt units) or its spikes."""
    if pop.read == "v":
        return readout_u / 64.0
    if pop.read in ("spikes", "sigma"):  # spike counts, graded payloads, a sigma decoder's sums
        return readout_u.astype(np.float64)
    return (readout_u + population_bias(pop)) / (64.0 * pop.scale)


def bias_as_current(pop: Population) -> bool:
    """Whether a bias-driven input layer can take its input as a current instead: with no current
    memory (``du = 4095``, netx's ``iDecay = 4096``) ``u`` is this step's ``a << 6``, and with
    ``bias_exp = 6`` (netx's) ``(mant + x) << 6 = mant << 6 + x << 6``: ``v`` and the spikes are the
    same integers (only the recorded ``u`` differs: x << 6 instead of 0)."""
    return pop.du == 4095 and pop.bias_exp == 6


def general_only(plan: DeploymentPlan, name: str, pop: Population) -> bool:
    """Whether the population needs the general path (``hw.kernels``' fused loop is the LIF's, for 0/1
    spikes in — or a bias-driven input taken as a current, ``bias_as_current`` —; it has no
    refractory state, v readout or recurrent link)."""
    return (pop.ref_delay != 1 or pop.read != "current" or pop.graded
            or any((k.kind == "bias" and not bias_as_current(pop)) or k.src == name
                   or (k.src != INPUT and plan.populations[k.src].graded) for k in plan.links_into(name)))


def _run_sd_population(pop: Population, a_in: torch.Tensor, start: dict | None = None):
    """A sigma-delta population (``export.nodes.sigma_delta.sd_int_step``, lava-nc's models) over the
    steps of ``a_in`` ``[T, B, *shape]``, from ``start`` (its state when the sample begins: netx
    resets no sigma-delta layer, so what the pipeline fill left, ``pipeline_fill``) or zeros. Returns
    (graded outputs — ``sigma`` for a sigma decoder —, sigma, act) as int64 tensors, and the end state."""
    from htakl_deploy.export.nodes.sigma_delta import sd_int_step

    a = a_in.numpy()
    state = {k: np.array(np.broadcast_to(start[k], a.shape[1:]) if start else np.zeros(a.shape[1:], np.int64))
             for k in ("sigma", "act", "residue")}
    bias = population_bias(pop)
    out, sig, act = (np.zeros(a.shape, np.int64) for _ in range(3))
    for t in range(a.shape[0]):
        out[t] = sd_int_step(pop.neuron, state, a[t], vth=pop.vth, bias_v=bias)
        sig[t], act[t] = state["sigma"], state["act"]
    return (torch.from_numpy(out), torch.from_numpy(sig), torch.from_numpy(act)), state


def _run_population_t(pop: Population, a_in: torch.Tensor | None, bias_in: torch.Tensor | None = None,
                      shape: tuple[int, ...] | None = None, want_v: bool = False, recurrent: list[Link] = ()):
    """The population's neurons over the ``T`` steps of ``a_in`` ``[T, B, *shape]`` (None: no
    synaptic input, a netx input layer) with, from a ``bias`` link, ``bias_in`` ``[T, B, *shape]``
    added to the bias mantissas each step: spikes, u (and v with ``want_v``). The update is
    ``hw.lif_ref.lif_int_step`` (with the refractory state where ``ref_delay > 1``); its wraps are
    skipped where they cannot trigger: the int32 ones when |a_in| < 2^25 (``a_in << 6`` fits
    int32) and |bias| < 2^29 (u, v stay 24-bit); the 24-bit one of u when it has no memory
    (du = 4095) and |a_in| < 2^17. ``recurrent``: links from the population to itself; their output
    of step t − 1's spikes joins ``a_in`` at step t (Lava's InPort sum, int32), so no wrap is skipped."""
    plain = pop.readout and pop.read == "current"  # our readout: its bias is added when read
    shape = tuple(a_in.shape) if a_in is not None else tuple(bias_in.shape)
    bias_np = np.zeros(pop.shape, np.int64) if plain else population_bias(pop)
    bias = torch.from_numpy(np.ascontiguousarray(bias_np))
    mant = torch.from_numpy(np.array(pop.per_neuron(pop.bias_mant)))
    if a_in is None:
        a_in = torch.zeros(shape, dtype=torch.int64)
    a_max = _abs_max(a_in)
    b_max = int(np.abs(bias_np).max(initial=0)) if bias_in is None else max(
        int(np.abs(bias_np).max(initial=0)), (_abs_max(bias_in) + int(np.abs(pop.bias_mant).max(initial=0))) << max(pop.bias_exp, 0))
    i32_wraps = bool(recurrent) or not (a_max < 2**25 and b_max < 2**29)
    u_wraps = i32_wraps or pop.du != 4095 or a_max >= 2**17
    u = torch.zeros(shape[1:], dtype=torch.int64)
    v = torch.zeros_like(u)
    ref = torch.zeros_like(u) if pop.ref_delay != 1 else None
    spikes = torch.zeros(shape, dtype=torch.bool)
    us = torch.zeros(shape, dtype=torch.int64)
    vs = torch.zeros(shape, dtype=torch.int64) if want_v else None
    for t in range(shape[0]):
        b = bias if bias_in is None else wrap_i32(_t_shift(mant + bias_in[t], pop.bias_exp))
        a_t = a_in[t]
        for link in recurrent if t else ():
            a_t = _t_wrap(a_t + _link_output_t(link, spikes[t - 1:t], pop.shape)[0], 32)
        out = lif_int_step(u, v, a_t, du=pop.du, dv=pop.dv, bias_v=b, vth=pop.vth, i32_wraps=i32_wraps,
                           u_wraps=u_wraps, ref_delay=pop.ref_delay, ref=ref, subtract=pop.reset == "subtract")
        spikes[t], u, v = out[:3]
        ref = out[3] if ref is not None else None
        us[t] = u
        if want_v:
            vs[t] = v
    return (spikes, us, vs) if want_v else (spikes, us)


def pipeline_fill(plan: DeploymentPlan) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What Lava computes before each population's first reset when samples run back to back (our
    ``LIFReset`` and lava-dl's netx alike): a population at depth ``d`` runs ``d`` steps from a zero
    state before its first sample begins (Lava steps 1 … d), driven by its bias and by the fill
    spikes of shallower populations — never by the input, which enters at depth 0, where there is no
    fill. So it is the same for every input; the first reset then zeroes it (a sigma-delta population,
    which netx never resets, starts its sample from it). Returns population → (spikes, u, v), each
    ``[depth, *shape]`` (Lava steps 1 … depth; sigma-delta: graded outputs, sigma, act)."""
    return _fill(plan)[0]


def _fill(plan: DeploymentPlan):
    """``pipeline_fill``, and the sigma-delta populations' state at the fill's end (what their
    first sample starts from: netx does not reset them)."""
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    ends: dict[str, dict] = {}
    steps = plan.max_depth
    lava_spikes: dict[str, torch.Tensor] = {}  # population → its fill spikes on Lava steps [steps, 1, *shape]
    for name, pop in plan.populations.items():
        d = pop.depth
        a = torch.zeros((d, 1, *pop.shape), dtype=torch.int64)
        for link in plan.links_into(name):
            if link.src == INPUT or not d:
                continue
            y = _link_output_t(link, lava_spikes[link.src], pop.shape)  # what the synapse sends one step later
            lag = 1 + link.delay
            if d > lag:
                a[lag:] = _t_wrap(a[lag:] + y[:d - lag], 32)
        if pop.neuron in SIGMA_DELTA:
            (s, u, v), ends[name] = _run_sd_population(pop, a)
        elif pop.neuron == "graded":  # a relay forwards its input current
            s, u, v = a, torch.zeros_like(a), torch.zeros_like(a)
        elif d:
            s, u, v = _run_population_t(pop, a, want_v=True)
        else:
            s, u, v = (torch.zeros((0, 1, *pop.shape), dtype=torch.bool),) * 3
        full = torch.zeros((steps, 1, *pop.shape), dtype=s.dtype)
        full[:d] = s
        lava_spikes[name] = full
        out[name] = (s[:, 0].numpy(), u[:, 0].numpy(), v[:, 0].numpy())
    return out, ends


def emulate(plan: DeploymentPlan, x_tb, *, x_is_int: bool = False, batch_size: int = 512,
            device: str | None = None, fast: bool = True, record_state: bool = False) -> EmulatorResult:
    """Run ``x`` (pixels in [0, 1], ``[T, B, C, H, W]``; or 8-bit integers with ``x_is_int``),
    ``batch_size`` samples at a time (memory grows with it; samples are independent; on the CPU
    fewer, ``kernels.chunk_samples``, where the network is large).

    ``fast``: populations whose currents provably stay exact in float32 and wrap-free take
    ``hw.kernels`` (float32 currents, fused neuron kernel), the others the general path below;
    the integers are the same (tests/test_kernels.py). ``device``: "cpu" (default) or "cuda".
    ``record_state``: also every population's ``u`` and ``v`` (after reset) each step, in
    ``EmulatorResult.state`` (the general path for all: for comparisons with Lava, not for speed)."""
    x = np.asarray(x_tb)
    if x.ndim < 3 or tuple(x.shape[2:]) != plan.input_shape:
        raise ValueError(f"expected input [T, B, {plan.input_shape}], got {x.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_int = x.astype(np.int64) if x_is_int else quantize_input(x, plan.input_scale)
    x_lag = lag_input(plan, x_int)
    dev = torch.device(device or "cpu")
    if dev.type == "cpu":  # see hw.kernels: tensors under glibc's mmap ceiling, their pages reused
        kernels.keep_freed_memory()
        batch_size = kernels.chunk_samples(plan, x_int.shape[0], batch_size)
    n = x_int.shape[1]
    spikes: dict[str, np.ndarray] = {}
    readout_u = None
    state = {} if record_state else None
    starts = _fill(plan)[1] if any(p.neuron in SIGMA_DELTA for p in plan.populations.values()) else {}
    with kernels.exact_device(dev), torch.no_grad():
        for i in range(0, n, batch_size):  # each chunk written into the whole result: no second copy
            part, u = _emulate_batch(plan, x_lag[:, i:i + batch_size], dev, fast and not record_state, state, starts)
            if readout_u is None:
                spikes = {k: np.empty((v.shape[0], n, *v.shape[2:]), v.dtype) for k, v in part.items()}
                readout_u = np.empty((u.shape[0], n, *u.shape[2:]), u.dtype)
            for k, v in part.items():
                spikes[k][:, i:i + v.shape[1]] = v
            readout_u[:, i:i + u.shape[1]] = u
    if state is not None:
        state = {k: (np.concatenate(us, 1), np.concatenate(vs, 1)) for k, (us, vs) in state.items()}
    return EmulatorResult(spikes, readout_u, readout_logits(plan.readout, readout_u), x_int, state)


def _emulate_batch(plan: DeploymentPlan, x_int: np.ndarray, device: torch.device = torch.device("cpu"),
                   fast: bool = True, state: dict | None = None,
                   starts: dict | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    spikes: dict[str, torch.Tensor] = {}
    spikes_f32: dict[str, torch.Tensor] = {}  # the same spikes as float32, for the fast path's convolutions
    readout_u = None
    x_max = int(np.abs(x_int).max(initial=0))
    x_dev = torch.from_numpy(x_int).to(device) if fast else None
    order = {name: i for i, name in enumerate(plan.populations)}
    last_use: dict[str, int] = {}  # population → index of the last population reading its spikes
    for link in plan.links:
        last_use[link.src] = max(last_use.get(link.src, -1), order[link.dst])
    for i, (name, pop) in enumerate(plan.populations.items()):
        bias = np.zeros(pop.shape, np.int64) if pop.readout else population_bias(pop)
        quick = None
        if fast and not general_only(plan, name, pop):
            quick = kernels.population_currents(plan, name, pop, spikes_f32, x_dev, x_max, device)
        if quick is not None and int(np.abs(bias).max(initial=0)) < 2**29:
            b = quick[1]
            s, spikes_f32[name], u = kernels.lif_fused(pop, quick[0], bias, b["bound"], want_u=pop.readout,
                                                       exp=b["exps"][0], second=b["second"], exp2=b["exps"][1])
        else:  # the general path (int64 / float64, every wrap checked), on the CPU
            a, bias_in = None, None
            for link in plan.links_into(name):
                if link.src == name:
                    continue  # recurrent: step by step below
                out = (_input_currents_t(plan, torch.from_numpy(x_int)) if link.src == INPUT
                       else _link_output_t(link, spikes[link.src].cpu(), pop.shape))
                if link.kind == "bias":
                    bias_in = out
                    continue
                a = out if a is None else _t_wrap(a + out, 32)
            want_v = state is not None or pop.read == "v"
            if pop.neuron == "graded":  # a relay forwards its input current as its payload
                got = (a, None, None)
            elif pop.neuron in SIGMA_DELTA:  # graded outputs; its state pair is (sigma, act)
                got = _run_sd_population(pop, a, (starts or {}).get(name))[0]
            else:
                got = _run_population_t(pop, a, bias_in, want_v=want_v,
                                        recurrent=[k for k in plan.links_into(name) if k.src == name])
            s, u = got[:2]
            if state is not None and pop.neuron != "graded":
                us, vs = state.setdefault(name, ([], []))
                us.append(u.numpy())
                vs.append(got[2].numpy())
            if pop.read == "v":
                u = got[2]
            elif pop.read in ("spikes", "sigma"):  # a sigma decoder's output is its sigma
                u = s.to(torch.int64)
            s = s.to(device)
            if not pop.graded:
                spikes_f32[name] = s.to(torch.float32)
        if pop.readout:
            readout_u = u.cpu().numpy()
        else:
            spikes[name] = s
        for src in [k for k in spikes_f32 if last_use.get(k, -1) <= i]:
            del spikes_f32[src]  # no population left reads it: 4 bytes per neuron-step less at the peak
    return {k: v.cpu().numpy() for k, v in spikes.items()}, readout_u
