"""``export MODEL.nir --calibration SRC``: inputs that check a quantised foreign graph (issue 14).

What calibration inputs are for here (docs/DESIGN.md "Calibration inputs"): **not** the scales.
Each neuron layer's integer scale ``S`` and each connection's 8-bit mantissa and exponent come from
the weights alone (``export.quantize``): the largest weight sets the mantissa range, and recorded
currents cannot change what 8 bits of weight can hold. What the weights cannot tell is

1. **headroom**: Loihi's ``u`` and ``v`` are 24-bit; ``u`` wraps past ±2^23 and ``v`` saturates
   there (``hw.lif_ref.lif_update``). Whether that happens depends on the inputs. Calibration
   replays the integer network (``quantize.run_int``'s currents) and records, per neuron layer
   and for the readout, the largest ``|u|`` and the largest ``|v|`` before the clip, as a
   fraction of 2^23; any layer at or past it is a warning naming the layer.
2. **float vs integer agreement** when no named data set fits the graph: the decisions of the float
   graph (``graph.run_float``) and of the integer network on the calibration inputs.

``SRC`` is a data set name (``max_samples`` images of its *training* split, every class in proportion
(``ArrayDataset.subset``): calibration must not look at the test images the accuracy is measured on)
or inputs the user gives, read as ``--input`` reads them (``distill.data.inputfile``:
``.npy``/``.npz``/``.h5`` of ``[T, B, *input]`` sequences — event frames, T from the data — or
``[B, *input]`` static inputs, or a folder of event recordings). Anything else is a one-line ``UserError``.

Memory: the samples run a few at a time (``graph.samples_per_batch``), and the file is read batch
by batch, so a 64-sample, 300-step event calibration of the NIR paper's CNN stays small
(docs/NIR.md has the measured peak).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from htakl_deploy.distill.data.inputfile import Inputs, from_dataset, is_input_file, open_inputs
from htakl_deploy.errors import UserError

MAX_SAMPLES = 256


def load_calibration(source: str, in_shape: tuple[int, ...], timesteps: int, *, data_root: str | None = None,
                     max_samples: int = MAX_SAMPLES) -> Inputs:
    """The calibration inputs, at most ``max_samples`` of them (see the module docstring): a data set's
    training images (direct encoding over ``timesteps``) or a file / event folder
    (``distill.data.inputfile``: sequences keep their own T, static inputs get ``timesteps``)."""
    if is_input_file(source):
        return open_inputs(source, in_shape, default_timesteps=timesteps, flag="--calibration").head(max_samples)
    from htakl_deploy.distill.data.registry import load_dataset

    kwargs = {} if data_root is None else {"root": data_root}
    train, _ = load_dataset(source, **kwargs)  # unknown names: its own one-line UserError
    if tuple(train.in_shape) != tuple(in_shape):
        raise UserError(f"--calibration {source}: images are {tuple(train.in_shape)}, the graph's input is "
                        f"{tuple(in_shape)}")
    return from_dataset(train.subset(min(max_samples, len(train))), timesteps)


def calibrate(graph, q, inputs: Inputs) -> tuple[dict[str, Any], list[str]]:
    """(report, warnings): decision agreement of the float graph and the integer network on
    ``inputs``, and each neuron layer's / the readout's 24-bit headroom (module docstring). The
    samples run a few at a time (``graph.samples_per_batch``), so memory stays bounded however long
    the sequences are."""
    from htakl_deploy.export.graph import run_float, samples_per_batch
    from htakl_deploy.export.quantize import logits_from_int, run_int

    n, t = len(inputs), inputs.timesteps
    step = samples_per_batch(graph, t, n)
    same, peaks = 0, {}
    for s0 in range(0, n, step):
        x = torch.from_numpy(inputs.batch(s0, s0 + step))
        out_int, vals = run_int(q, x, record=True)
        pred_int = logits_from_int(q, out_int).mean(0).argmax(-1)
        del out_int
        for name, h in _headroom(q, vals, x.shape).items():
            for k, v in h.items():
                peaks.setdefault(name, {}).setdefault(k, 0)
                peaks[name][k] = max(peaks[name][k], v)
        del vals
        with torch.no_grad():
            pred_float = run_float(graph, x).mean(0).argmax(-1).numpy()
        same += int((pred_float == pred_int).sum())
    layers, warnings = {}, []
    for name, h in peaks.items():
        layers[name] = {**h, "u_headroom": h["max_abs_u"] / float(1 << 23), "v_headroom": h["max_abs_v"] / float(1 << 23)}
        for what in ("u", "v"):
            if h[f"max_abs_{what}"] >= 1 << 23:
                warnings.append(f"calibration: layer {name!r}: |{what}| reaches {h[f'max_abs_{what}']} on the calibration "
                                f"inputs, past Loihi's 24-bit limit 2^23 ({'wraps' if what == 'u' else 'saturates'})")
    report = {"samples": int(n), "timesteps": int(t), "inputs": inputs.kind,
              "decision_agreement": same / n, "layers": layers}
    return report, warnings


def _headroom(q, vals: dict[str, np.ndarray], shape) -> dict[str, dict[str, int]]:
    """Per target (neuron layer or readout): the largest |u| and |v| before Lava's wrap/clip,
    stepping the real (wrapped) state so the numbers are those of the network as it runs."""
    from htakl_deploy.export.quantize import _current
    from htakl_deploy.hw.lif_ref import trunc_decay

    g = q.graph
    by_pair = {(c.node, c.target): c for c in q.connections}
    out = {}
    for name, tq in q.targets.items():
        srcs = {s: _delayed(vals[s]) if (s, name) in g.back_edges else vals[s] for s in g.predecessors(name)}
        a = _current(by_pair, name, srcs)  # a recurrent source's value arrives one step later
        a = np.broadcast_to(np.asarray(a, dtype=np.int64), (shape[0], shape[1], *g.shapes[name]))
        bias = tq.bias_v().reshape(-1, *([1] * (a.ndim - 3)))
        node = g.nodes[name]
        u = np.zeros(a.shape[1:], np.int64)
        v = np.zeros(a.shape[1:], np.int64)
        max_u = max_v = 0
        for t in range(a.shape[0]):
            u_free = trunc_decay(u, 4096 - (tq.du + 1)) + (a[t] << 6)
            max_u = max(max_u, int(np.abs(u_free).max(initial=0)))
            if node.ROLE != "output":
                v_free = trunc_decay(v, 4096 - tq.dv) + u_free + bias
                max_v = max(max_v, int(np.abs(v_free).max(initial=0)))
            _, u, v = node.int_step(u, v, a[t], tq, bias)
        out[name] = {"max_abs_u": max_u, "max_abs_v": max_v}
    return out


def _delayed(v: np.ndarray) -> np.ndarray:
    """``v`` one step later along T (zeros at step 0)."""
    out = np.zeros_like(v)
    out[1:] = v[:-1]
    return out
