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

``SRC`` is a data set name (its *training* split, the first ``max_samples`` images: calibration
must not look at the test images the accuracy is measured on) or a file of inputs in the graph's
range: ``.npy`` (read with ``allow_pickle=False``) or ``.h5``/``.hdf5`` (one dataset, or the one
named ``inputs``; no external links), shaped ``[T, B, *input]`` or ``[B, *input]`` (then the same
frame every step: direct encoding), finite, in [0, 1] (the first layer takes 8-bit pixels
``round(255·x)``). Anything else is a one-line ``UserError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from htakl_deploy.errors import UserError

MAX_SAMPLES = 256
H5_KEY = "inputs"


def load_calibration(source: str, in_shape: tuple[int, ...], timesteps: int, *, data_root: str | None = None,
                     max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """The calibration inputs as float64 ``[T, B, *in_shape]`` (see the module docstring)."""
    path = Path(source)
    if path.suffix.lower() in (".npy", ".h5", ".hdf5"):
        x = _read_file(path)
        where = f"--calibration {path}"
    else:
        from htakl_deploy.distill.data import encode
        from htakl_deploy.distill.data.registry import load_dataset

        kwargs = {} if data_root is None else {"root": data_root}
        train, _ = load_dataset(source, **kwargs)  # unknown names: its own one-line UserError
        if tuple(train.in_shape) != tuple(in_shape):
            raise UserError(f"--calibration {source}: images are {tuple(train.in_shape)}, the graph's input is "
                            f"{tuple(in_shape)}")
        xb, _ = train.batch(torch.arange(min(max_samples, len(train))))
        return encode(xb, timesteps, "direct").double().numpy()
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{where}: holds {x.dtype} values, expected real numbers")
    n = len(in_shape)
    if x.ndim == n + 1:
        x = np.repeat(x[None], timesteps, axis=0)
    elif x.ndim != n + 2:
        raise UserError(f"{where}: shape {x.shape}, expected [T, B, {', '.join(map(str, in_shape))}] or "
                        f"[B, {', '.join(map(str, in_shape))}]")
    if tuple(x.shape[2:]) != tuple(in_shape):
        raise UserError(f"{where}: inputs are {tuple(x.shape[2:])}, the graph's input is {tuple(in_shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise UserError(f"{where}: no inputs (shape {x.shape})")
    x = x[:, :max_samples].astype(np.float64)
    if not np.isfinite(x).all():
        raise UserError(f"{where}: holds NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise UserError(f"{where}: values span [{x.min():.4g}, {x.max():.4g}], expected [0, 1] (the first layer "
                        "takes 8-bit pixels round(255·x))")
    return x


def _read_file(path: Path) -> np.ndarray:
    from htakl_deploy.readers import check_h5_self_contained, describe_missing

    if not path.is_file():
        raise describe_missing(path, "--calibration", "calibration file")
    where = f"--calibration {path}"
    try:
        if path.suffix.lower() == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            import h5py

            check_h5_self_contained(path, "--calibration")
            with h5py.File(path, "r") as f:
                sets = [k for k in f if isinstance(f[k], h5py.Dataset)]
                key = H5_KEY if H5_KEY in sets else (sets[0] if len(sets) == 1 else None)
                if key is None:
                    raise UserError(f"{where}: expected one dataset (or one named {H5_KEY!r}), found {sorted(sets)}")
                x = f[key][()]
    except UserError:
        raise
    except Exception as e:  # numpy/h5py raise ValueError/OSError/KeyError on bad files
        raise UserError(f"{where}: not a readable input array: {type(e).__name__}: {str(e)[:160]}") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{where}: holds a scalar, expected an array of inputs")
    return x


def calibrate(graph, q, x_tb: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """(report, warnings): decision agreement of the float graph and the integer network on
    ``x_tb``, and each neuron layer's / the readout's 24-bit headroom (module docstring)."""
    from htakl_deploy.export.graph import run_float
    from htakl_deploy.export.quantize import logits_from_int, run_int

    x = torch.from_numpy(x_tb)
    out_int, vals = run_int(q, x, record=True)
    pred_int = logits_from_int(q, out_int).mean(0).argmax(-1)
    with torch.no_grad():
        pred_float = run_float(graph, x).mean(0).argmax(-1).numpy()
    layers, warnings = {}, []
    for name, h in _headroom(q, vals, x_tb.shape).items():
        layers[name] = h
        for what in ("u", "v"):
            if h[f"max_abs_{what}"] >= 1 << 23:
                warnings.append(f"calibration: layer {name!r}: |{what}| reaches {h[f'max_abs_{what}']} on the calibration "
                                f"inputs, past Loihi's 24-bit limit 2^23 ({'wraps' if what == 'u' else 'saturates'})")
    report = {"samples": int(x_tb.shape[1]), "timesteps": int(x_tb.shape[0]),
              "decision_agreement": float((pred_float == pred_int).mean()), "layers": layers}
    return report, warnings


def _headroom(q, vals: dict[str, np.ndarray], shape) -> dict[str, dict[str, Any]]:
    """Per target (neuron layer or readout): the largest |u| and |v| before Lava's wrap/clip,
    stepping the real (wrapped) state so the numbers are those of the network as it runs."""
    from htakl_deploy.export.quantize import _shift
    from htakl_deploy.hw.lif_ref import trunc_decay

    g = q.graph
    by_pair = {(c.node, c.target): c for c in q.connections}
    out = {}
    for name, tq in q.targets.items():
        a = 0
        for src in g.predecessors(name):
            c = by_pair[(src, name)]
            a = a + (vals[src] if not c.identity else _shift(vals[src] * c.weight_mant, c.weight_exp))
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
        out[name] = {"max_abs_u": max_u, "max_abs_v": max_v, "u_headroom": max_u / float(1 << 23),
                     "v_headroom": max_v / float(1 << 23)}
    return out
