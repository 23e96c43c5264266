"""Fast exact kernels for the emulator (``hw.emulator``): the same integers, fewer passes.

Where the time went (ResNet-20, 3×32×32, T=4, 64 images, 2 threads; bench/emulator_roof.py):
about 60 % in the neuron update (``lif_int_step`` on int64 tensors: ~10 full passes over the
``[T, B, neurons]`` state per step, plus an int64 ``u`` kept for every population), 16 % in the
float32 convolutions, the rest in int64 conversions and wrap checks of every current. On a student
that fires like a trained one (10 %; the first measurements used one that hardly fired) two more
costs showed: the scalar neuron loop (now vectorised, ``hw.lif_ref.lif_loop``) and page faults —
glibc handed every large tensor out as a fresh mmap, ~200,000 minor faults per call
(``keep_freed_memory`` below). This module removes the non-convolution passes while keeping
every result bit-exact:

1. **Static bounds** (``population_bound``): from the integer weights (after Lava's 8-bit
   clipping), the fan-in and the input range (spikes are 0/1; pixels ≤ max |x|), the largest
   possible |current| of every link, before and after its ``weight_exp`` shift, and of their sum.
   If every link's sum is below 2^24, a float32 convolution / matrix product is exact *whatever
   the summation order* (every partial sum is an integer below 2^24); if the population's summed,
   shifted current is below 2^24 in units of its coarsest common power of two, the float32 sum of
   the links is exact too; below 2^23 (Lava Conv's 24-bit wrap), 2^31 (int32 channels) and 2^25
   (``a_in << 6`` fits int32) no wrap can trigger, so none is computed. Then the currents stay
   float32 from the convolution to the neuron (no int64 tensor, no min/max scan).
2. **A fused neuron loop** (``lif_fused`` → ``hw.lif_ref.lif_loop``, numba, parallel over
   chunks of neurons, vectorised over the neurons of a chunk): all T steps of
   ``hw.lif_ref.lif_update`` — the one definition of the neuron step, compiled here — with
   ``i32_wraps=False`` (valid under the bounds above: |a_in| < 2^25, |bias| < 2^29) in one pass,
   reading the float32 currents and writing the spikes (and ``u`` only for the readout). Checked bit for bit against ``lif_int_step`` in
   tests/test_kernels.py, itself checked against real Lava in tests/test_lava.py. Without numba,
   or on a CUDA device, the same ``lif_update`` runs on torch tensors.

Where a bound does not hold, ``population_currents`` returns None and the emulator takes its
general path (int64 / float64, every wrap), population by population: the result is the same,
only slower. ``tests/test_kernels.py`` compares both paths on random integer layers, one of
them built so that the bound fails.

Devices: ``device="cuda"`` runs the convolutions and neuron updates on the GPU with cuDNN and
TF32 switched off for the call (TF32 has a 10-bit mantissa; cuDNN may pick Winograd/FFT
algorithms whose transforms round): the plain CUDA convolution in float32 is exact under the
same bounds. A population whose bound fails falls back to the CPU path.

Not done: an event-driven (sparse) path for low firing rates — at the rates seen here (1–20 %)
a dense float32 convolution of the 0/1 map beats gathering the active inputs' weights on a CPU.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

F32_EXACT = 1 << 24  # integers (and partial sums) below this are exact in float32

try:  # the fused neuron kernel; without numba the torch update is used (same integers)
    import numba
except ImportError:  # pragma: no cover - numba is a dependency, this only keeps imports working
    numba = None


# -- bounds -----------------------------------------------------------------------------------


def conv_bound(link) -> int:
    """Largest Σ|w| over one output's receptive field (exact integer): the largest |sum| of a
    convolution of 0/1 spikes with the link's kernel."""
    cached = link.__dict__.get("_conv_bound")
    if cached is None:
        w = np.abs(np.asarray(link.conv["weight"]).astype(np.int64))
        cached = link.__dict__["_conv_bound"] = int(w.reshape(len(w), -1).sum(1).max(initial=0))
    return cached


def matrix_bound(m) -> int:
    """Largest Σ|w| of one row (output) of a scipy int64 matrix ``[N_out, N_in]``."""
    return int(np.asarray(abs(m).sum(axis=1)).max(initial=0))


def _link_sum_bound(link, src_shape, x_max: int) -> int:
    """Largest |unshifted sum| the link can produce (``x_max`` bounds |input|: 1 for spikes)."""
    from htakl_deploy.hw import emulator as emu

    if link.kind == "bias":  # the input itself (emulator.bias_as_current)
        return x_max
    if link.conv is not None and (link.kind in ("input", "conv") or emu._kernel_is_exact(link)):
        return conv_bound(link) * x_max
    cached = link.__dict__.get("_matrix_bound")
    if cached is None:
        cached = link.__dict__["_matrix_bound"] = matrix_bound(emu.lava_matrix(link, src_shape))
    return cached * x_max


def population_bound(plan, name: str, src_shapes: dict, x_max: int) -> dict | None:
    """The static bounds of population ``name``'s current (see the module docstring), or None
    if the float32 path is not provably exact and wrap-free there.

    Returns ``{"bound": max |a_in|, "grain": g}``: every current is a multiple of 2^g."""
    terms = []
    for link in plan.links_into(name):
        src_shape = plan.input_shape if link.src == "input" else src_shapes[link.src]
        b = _link_sum_bound(link, src_shape, x_max if link.src == "input" else 1)
        if b >= F32_EXACT or (link.kind == "conv" and b >= 1 << 23):  # float32 inexact / 24-bit wrap
            return None
        e = link.weight_exp if link.kind != "conv" else 0
        out = b << e if e >= 0 else -((-b) >> -e)  # |floor(y / 2^k)| ≤ ceil(b / 2^k)
        if out >= 1 << 31:  # int32 channel wrap
            return None
        terms.append((out, max(e, 0)))
    if not terms:
        return None
    grain = min(g for _, g in terms)
    total = sum(o for o, _ in terms)
    if (total >> grain) >= F32_EXACT or total >= 1 << 25:  # inexact float32 sum / int32 wraps in the neuron
        return None
    return {"bound": total, "grain": grain}


# -- currents -------------------------------------------------------------------------------


def _weights(link, src_shape, device: torch.device):
    """The link's Lava-effective weights as float32 on ``device``, cached per link and device:
    ("conv", kernel) | ("dense", [N_in, N_out]) | ("sparse", scipy float32 [N_out, N_in])."""
    from htakl_deploy.hw import emulator as emu

    cache = link.__dict__.setdefault("_kernel_weights", {})
    key = str(device)
    if key not in cache:
        if link.conv is not None and (link.kind in ("input", "conv") or emu._kernel_is_exact(link)):
            w = torch.from_numpy(np.asarray(link.conv["weight"]).astype(np.float32))
            cache[key] = ("conv", w.to(device))
        else:
            m = emu.lava_matrix(link, src_shape)
            if link.kind == "dense":
                cache[key] = ("dense", torch.from_numpy(m.toarray().astype(np.float32)).T.contiguous().to(device))
            else:
                cache[key] = ("sparse", m.astype(np.float32))
    return cache[key]


def _link_current(link, x: torch.Tensor, dst_shape, device, shift: bool = True) -> torch.Tensor:
    """float32 ``[T, B, *dst_shape]`` = shift(Σ w·x, weight_exp) (unshifted if not ``shift``),
    exact under ``population_bound``."""
    t, b = x.shape[:2]
    if link.kind == "bias":  # the input as a current: exact where emulator.bias_as_current says so
        return x.to(torch.float32).reshape(t, b, *dst_shape)
    kind, w = _weights(link, tuple(x.shape[2:]), device)
    if kind == "conv":
        c = link.conv
        y = torch.nn.functional.conv2d(x.reshape(t * b, *x.shape[2:]).to(torch.float32), w, None, c["stride"],
                                       c["padding"], c["dilation"], c["groups"])
    elif kind == "dense":
        y = x.reshape(t * b, -1).to(torch.float32) @ w
    else:
        flat = x.reshape(t * b, -1).cpu().numpy().astype(np.float32)
        y = torch.from_numpy(np.ascontiguousarray((w @ flat.T).T)).to(device)
    e = link_exp(link) if shift else 0
    if e > 0:
        y.mul_(float(1 << e))  # exact: a power of two
    elif e < 0:
        y.mul_(1.0 / (1 << -e)).floor_()  # floor(y / 2^k): exact in float32
    return y.reshape(t, b, *dst_shape)


def link_exp(link) -> int:
    """The shift applied to the link's sums (Lava Conv has none)."""
    return link.weight_exp if link.kind != "conv" else 0


def population_currents(plan, name: str, pop, sources: dict, x: torch.Tensor | None, x_max: int,
                        device) -> tuple[torch.Tensor, dict] | None:
    """The population's input current ``a_in`` as float32 ``[T, B, *shape]`` holding exact
    integers, and its bounds; None where the bounds do not prove it (the caller falls back).
    ``sources``: population → spikes (float32 0/1 are used as they are). With one or two links
    their shifts and sum are left to the neuron kernel (``bounds["second"]`` = the other link's
    unshifted current or None, ``bounds["exps"]``), saving passes over the currents (a ResNet
    block's second neuron has two links: its conv and the skip); more links are shifted and
    summed here in float32."""
    shapes = {k: tuple(v.shape[2:]) for k, v in sources.items()}
    bounds = population_bound(plan, name, shapes, x_max)
    if bounds is None:
        return None
    links = plan.links_into(name)
    in_kernel = len(links) <= 2  # one or two links: shifts and sum in the kernel; more: here
    currents = [_link_current(link, x if link.src == "input" else sources[link.src], pop.shape, device,
                              shift=not in_kernel) for link in links]
    if not in_kernel:
        acc = currents[0]
        for y in currents[1:]:
            acc.add_(y)  # exact: the population bound's grain condition
        return acc, {**bounds, "second": None, "exps": (0, 0)}
    second = currents[0] if len(links) == 2 else None
    return currents[-1], {**bounds, "second": second,
                          "exps": (link_exp(links[-1]), link_exp(links[0]) if second is not None else 0)}


# -- the neuron -----------------------------------------------------------------------------


def lif_fused(pop, a: torch.Tensor, bias: np.ndarray, bound: int, *, want_u: bool, exp: int = 0,
              second: torch.Tensor | None = None, exp2: int = 0,
              use_numba: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All T steps of ``lif_int_step(..., i32_wraps=False)`` for ``a_in = shift(a, exp)`` (plus
    ``shift(second, exp2)`` if given), ``a`` ``[T, B, *shape]`` float32 holding exact integers
    (|a_in| ≤ ``bound`` < 2^25; |bias| < 2^29, checked here). Returns spikes as bool and as float32 0/1 (what the next convolution takes),
    and u int64 with ``want_u``. On the CPU with numba one fused pass; else torch ops."""
    from htakl_deploy.hw.lif_ref import lif_int_step, lif_loop, numba_threads

    if bound >= 1 << 25 or int(np.abs(bias).max(initial=0)) >= 1 << 29:
        raise ValueError("lif_fused needs |a_in| < 2^25 and |bias| < 2^29 (no int32 wrap)")
    u_wraps = pop.du != 4095 or bound >= 1 << 17  # u = a << 6 cannot pass 2^23 otherwise
    steps = a.shape[0]
    if numba is not None and use_numba and a.device.type == "cpu":
        flat = a.reshape(steps, -1).contiguous().numpy()
        flat2 = second.reshape(steps, -1).contiguous().numpy() if second is not None else flat
        b = np.ascontiguousarray(np.broadcast_to(bias, pop.shape).reshape(-1).astype(np.int64))
        spikes = np.empty(flat.shape, np.bool_)
        spikes_f = np.empty(flat.shape, np.float32)
        us = np.empty(flat.shape if want_u else (1, 1), np.int64)
        with numba_threads():
            lif_loop(flat, exp, flat2, exp2, second is not None, b, b.size, int(pop.du), int(pop.dv), int(pop.vth),
                     u_wraps, pop.reset == "subtract", spikes, spikes_f, us, want_u)
        return (torch.from_numpy(spikes).reshape(a.shape), torch.from_numpy(spikes_f).reshape(a.shape),
                torch.from_numpy(us).reshape(a.shape) if want_u else None)
    def shifted(x, e):
        x = x.to(torch.int64)
        return x if not e else x * (1 << e) if e > 0 else torch.div(x, 1 << -e, rounding_mode="floor")

    a64 = shifted(a, exp) if second is None else shifted(a, exp) + shifted(second, exp2)
    bias_t = torch.from_numpy(np.array(np.broadcast_to(bias, pop.shape), dtype=np.int64)).to(a.device)
    u = torch.zeros(a.shape[1:], dtype=torch.int64, device=a.device)
    v = torch.zeros_like(u)
    spikes = torch.empty(a.shape, dtype=torch.bool, device=a.device)
    us = torch.empty(a.shape, dtype=torch.int64, device=a.device) if want_u else None
    for t in range(steps):
        spikes[t], u, v = lif_int_step(u, v, a64[t], du=pop.du, dv=pop.dv, bias_v=bias_t, vth=pop.vth,
                                       i32_wraps=False, u_wraps=u_wraps, subtract=pop.reset == "subtract")
        if want_u:
            us[t] = u
    return spikes, spikes.to(torch.float32), us


# -- memory ---------------------------------------------------------------------------------

# glibc serves an allocation above its mmap threshold (128 KiB at first, raised as such chunks are
# freed, to at most 32 MiB) with a fresh mmap and gives it back on free, so every current and
# spike tensor of every population page-faults all its pages in again (ResNet-20, 64 images:
# ~200,000 minor faults and 0.3-0.9 s of system time per call, on 0.7 s of work; the float32
# convolutions alone fault the same way). ``keep_freed_memory`` fixes the threshold at that 32 MiB
# ceiling and lets free heap memory stay mapped up to ``TRIM_BYTES``, so the emulator's tensors
# are carved from pages already faulted in; ``chunk_samples`` keeps each tensor under the ceiling.
MMAP_CEILING_BYTES = 32 << 20  # glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_BYTES = 1 << 30  # free heap memory kept mapped for reuse (ResNet-19: the same peak, 1.14 GB, with and without)
TENSOR_BYTES = 16 << 20  # the largest float32 current a chunk of samples makes
_malloc_set = False


def keep_freed_memory() -> bool:
    """Once per process, glibc only (elsewhere nothing is done): mmap threshold = 32 MiB, trim
    threshold = ``TRIM_BYTES`` (``mallopt``). Returns whether the settings are in force. Freed
    memory is reused, not added to: the peak stays (measured on ResNet-19, 16 samples)."""
    global _malloc_set
    if not _malloc_set:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc: its own allocator's behaviour stands
            return False
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        _malloc_set = bool(mallopt(m_mmap_threshold, MMAP_CEILING_BYTES)) and bool(mallopt(m_trim_threshold, TRIM_BYTES))
    return _malloc_set


def chunk_samples(plan, steps: int, batch_size: int) -> int:
    """Samples the CPU path runs together: at most ``batch_size``, and few enough that the largest
    population's float32 current ``[steps, n, *shape]`` stays under ``TENSOR_BYTES`` (below glibc's
    mmap ceiling, so ``keep_freed_memory`` reuses its pages; oneDNN's convolutions are as fast on
    16 × 4 images as on 64 × 4)."""
    largest = max(int(np.prod(p.shape)) for p in plan.populations.values())
    return max(1, min(batch_size, TENSOR_BYTES // (4 * steps * largest)))


@contextmanager
def exact_device(device: torch.device):
    """On CUDA: no TF32, no cuDNN (Winograd/FFT algorithms round) for the duration; elsewhere
    nothing to do (PyTorch's CPU float32 convolution is a direct/GEMM sum, exact under the bounds)."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=False, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
