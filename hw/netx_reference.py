"""lava-dl's own netx in Lava: the reference our netx reader, emulator and Lava builder are held to.

``run_netx_lava(path, x_int, ...)`` builds ``lava.lib.dl.netx.hdf5.Network`` from a netx file (lava-dl
0.6.0, installed by ``make install``), feeds samples back to back the way netx networks take their
input, runs Lava ``Loihi2SimCfg(select_tag='fixed_pt')`` and returns every layer's spikes, ``u`` and
``v`` per sample step, in our layout ``[T, B, *shape]`` (torch (C, H, W) order), keyed by our
population names (``layer{i}``, the file's layer index):

- a netx input layer with a neuron (PilotNet LIF): ``x`` is its ``bias_mant``, written each step
  (``hw.lava_procs.bias.BiasWriter``; Intel's hardware test sets ``bias_mant.init = image``);
- an input layer without a neuron: ``x`` enters the first layer's synapse as graded spikes
  (``input_message_bits``) from a ``RingBuffer``.

Samples run back to back with netx's own reset (``reset_interval = T``: layer ``k`` is reset at
time steps ``≡ k + 1``), which is how our plan runs them (``LIFReset`` offset ``1 + depth``), so
layer ``k``'s step ``t`` of sample ``s`` is Lava step ``s·T + k + t + 1`` in both.

``import_netx()``: netx's import needs ``torchvision`` (slayer's object-detection package imports
it and uses it in helpers netx never calls); PyPI's torchvision wheels cannot load against the CPU
torch pin (``operator torchvision::nms does not exist``), so three empty modules stand in for it
for that import only — netx, lava-nc and cv2 are the real packages.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np


def import_netx():
    """lava-dl 0.6.0's ``netx`` (see the module docstring for the torchvision stand-in)."""
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401  (a working torchvision, if some environment has one)
        except Exception:
            tv = types.ModuleType("torchvision")
            tv.ops, tv.transforms = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.transforms")
            sys.modules.update({"torchvision": tv, "torchvision.ops": tv.ops, "torchvision.transforms": tv.transforms})
    from htakl_deploy.hw.lava_compat import ensure_lava

    ensure_lava()
    from lava.lib.dl import netx

    return netx


def _lava_series(x_tb: np.ndarray) -> np.ndarray:
    """``[T, B, *shape]`` → ``[*lava_shape, B·T]`` (sample-major, (C, H, W) as (W, H, C))."""
    from htakl_deploy.hw.lava_net import _to_lava_order

    return _to_lava_order(x_tb)


STATE_VARS = {"LIF": ("u", "v"), "LIFReset": ("u", "v"), "Delta": ("sigma", "act"), "SigmaDelta": ("sigma", "act"),
              "Sigma": ("sigma", None)}


def run_netx_lava(path: str | Path, x_int: np.ndarray, *, input_message_bits: int = 8,
                  names: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run lava-dl's netx on integer inputs ``x_int`` ``[T, B, *input_shape]`` (torch order): returns
    ``{population: {"s": spikes (bool; graded payloads int64), "u": int64, "v": int64}}``, each
    ``[T, B, *shape]`` (a sigma-delta layer's pair is (sigma, act), as the emulator's). ``names``: our
    population names in netx's layer order (default ``layer{i}`` by file index, flatten skipped).
    A sigma-delta network (netx resets none of its neurons) runs each sample as a network of its
    own, from its first step; the others run their samples back to back."""
    netx = import_netx()
    probe = netx.hdf5.Network(net_config=str(path))
    if any(type(layer.neuron).__name__ in ("Delta", "SigmaDelta", "Sigma") for layer in probe.layers):
        parts = [_run_netx_lava(netx, path, x_int[:, i:i + 1], input_message_bits, names)
                 for i in range(x_int.shape[1])]
        return {n: {k: np.concatenate([p[n][k] for p in parts], axis=1) for k in parts[0][n]} for n in parts[0]}
    return _run_netx_lava(netx, path, x_int, input_message_bits, names)


def _run_netx_lava(netx, path, x_int, input_message_bits, names):
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    from htakl_deploy.hw.lava_net import _from_lava_record
    from htakl_deploy.hw.lava_procs.bias import BiasWriter
    from htakl_deploy.hw.lava_procs.recorder import (
        _SHARED, SpikeRecorder, VarRecorder, create_recording, release)

    timesteps, samples = x_int.shape[:2]
    net = netx.hdf5.Network(net_config=str(path), reset_interval=timesteps, input_message_bits=input_message_bits)
    steps = samples * timesteps + len(net.layers)
    series = _lava_series(np.asarray(x_int, dtype=np.int64))
    data = np.concatenate([series, np.zeros((*series.shape[:-1], steps - series.shape[-1]), np.int64)], axis=-1)
    if names is None:
        import h5py

        with h5py.File(path, "r") as f:
            kinds = [f["layer"][str(i)]["type"][()] for i in range(len(f["layer"]))]
            kinds = [(k[0] if np.ndim(k) else k) for k in kinds]
            has_neuron = ["neuron" in f["layer"][str(i)] for i in range(len(f["layer"]))]
        names = [f"layer{i}" for i, (k, n) in enumerate(zip(kinds, has_neuron))
                 if k not in (b"flatten", "flatten") and not (k in (b"input", "input") and not n)]
    if len(names) != len(net.layers):
        raise ValueError(f"{len(names)} names for {len(net.layers)} netx layers")
    first = net.layers[0]
    if type(first).__name__ == "Input" and hasattr(first.neuron, "bias_mant"):  # the input is its bias mantissa
        mant = np.asarray(first.neuron.bias_mant.init, dtype=np.int64)
        bias = (data + np.expand_dims(np.broadcast_to(mant, data.shape[:-1]), -1)).astype(np.int32)
        first.neuron.bias_mant.init = bias[..., 0]
        source = BiasWriter(var=first.neuron.bias_mant, data=bias)
    elif type(first).__name__ == "Input":  # a delta encoder: the input into its a_in (lava-dl's own tests)
        source = RingBuffer(data=data.astype(np.int32))
        source.s_out.connect(first.neuron.a_in)
    else:  # graded input spikes into the first layer's synapse
        source = RingBuffer(data=data.astype(np.int32))
        source.s_out.connect(net.inp)
    keys = {}
    recorders = []
    for name, layer in zip(names, net.layers):
        lava_vars = STATE_VARS[type(layer.neuron).__name__]
        shape = tuple(getattr(layer.neuron, lava_vars[0]).shape)
        for var, lava_var in zip(("u", "v"), lava_vars):
            keys[name, var], _ = create_recording(shape, steps, np.int64)
            if lava_var is not None:  # a sigma decoder has no act: its recording stays zeros
                recorders.append(VarRecorder(var=getattr(layer.neuron, lava_var), key=keys[name, var]))
        keys[name, "s"], _ = create_recording(shape, steps, np.int64)
        rec = SpikeRecorder(shape=shape, key=keys[name, "s"])
        layer.neuron.s_out.connect(rec.a_in)
        recorders.append(rec)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        raw = {k: _SHARED[key].copy() for k, key in keys.items()}
    finally:
        net.stop()
        for key in keys.values():
            release(key)
    out: dict[str, dict[str, np.ndarray]] = {}
    for depth, name in enumerate(names):
        got = {var: _from_lava_record(raw[name, var], depth, samples, timesteps) for var in ("s", "u", "v")}
        layer = net.layers[depth]
        if type(layer.neuron).__name__ not in ("Delta", "SigmaDelta", "Sigma"):
            got["s"] = got["s"] != 0
        out[name] = got
    return out
