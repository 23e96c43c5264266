"""Reading a ``student.lava.npz`` someone handed you: every field checked before anything runs.

``read_plan(path, label)`` loads a deployment plan (``hw.plan.load_plan``: ``np.load`` with
``allow_pickle=False``, so no object arrays and no code) and checks it as a whole, raising a
one-line ``UserError`` naming the file and the field for anything a plan written by
``htakl-deploy export`` cannot hold:

- the JSON header: exactly the known fields (no extra, none missing) with the right types;
- every array the header refers to is present, with the dtype and shape it must have;
- populations: positive shapes, Loihi ranges (``du``/``dv`` 12 bits, ``vth`` 17 bits, …),
  per-channel biases, finite float parameters;
- links: known kinds, sources and targets that exist, matrices ``[N_dst, N_src]`` and kernels
  that map the source's shape onto the target's, integer mantissas, finite float weights;
- timing: the link graph is acyclic, populations are listed in topological order with the
  readout last, and every link's delay makes its source's depth meet its target's
  (``depth(dst) = depth(src) + 1 + delay``, the input at depth −1);
- metadata: ``timesteps`` an integer in 1..MAX_TIMESTEPS and a training ``config`` table (or None:
  a graph imported from NIR without ``--data``).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from htakl_deploy.errors import UserError

HEADER_KEYS = {"format", "input_shape", "input_scale", "metadata", "populations", "links"}
LINK_KEYS = {"name", "src", "dst", "kind", "delay", "weight_exp", "has_matrix"}
LINK_OPTIONAL = {"conv", "m_shape", "f_shape", "num_weight_bits"}
CONV_KEYS = {"stride", "padding", "dilation", "groups"}
INT_RANGES = {"du": (-1, 4095), "dv": (0, 4096), "vth": (1, 2**17), "bias_exp": (0, 24),
              "scale": (1, 2**17 - 1), "depth": (0, 10_000), "delay": (0, 63), "weight_exp": (-8, 7),
              "ref_delay": (1, 63), "num_weight_bits": (1, 9)}
MAX_NEURONS = 2**26
MAX_MANTISSA = 2**24  # Lava's synaptic sums wrap at 24 bits


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shape_ok(v: Any, ndim: int | None = None) -> bool:
    return (isinstance(v, list) and len(v) >= 1 and (ndim is None or len(v) == ndim)
            and all(_is_int(s) and 1 <= s <= 2**20 for s in v))


def read_header(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The header (checked field by field) and the arrays of the ``.npz``."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable Lava artefact (not an .npz archive, or truncated)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise UserError(f"{path}: holds Python objects (pickled arrays), which are never loaded; "
                            "not an htakl-deploy Lava artefact") from None
        raise UserError(f"{path}: not a readable Lava artefact (not an .npz archive, or truncated)") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError):
        raise UserError(f"{path}: not a readable Lava artefact (not an .npz archive, or truncated)") from None
    if not isinstance(arrays, dict) or "header" not in arrays:
        raise UserError(f"{path}: not a readable Lava artefact (no header)")
    raw = arrays["header"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise UserError(f"{path}: the header must be UTF-8 JSON bytes, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: the header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    return header, arrays


def _pop_keys() -> set[str]:
    """The header fields of a population: the ``Population`` dataclass less its two arrays."""
    from dataclasses import fields

    from htakl_deploy.hw.plan import Population

    return {f.name for f in fields(Population)} - {"bias_mant", "f_bias"}


def check_header(path: Path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    from htakl_deploy.hw.plan import FORMAT, LINK_KINDS, READS

    POP_KEYS = _pop_keys()

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}")

    if header.get("format") != FORMAT:
        raise bad(f"format {header.get('format')!r}, expected {FORMAT!r} (not an htakl-deploy Lava artefact)")
    if set(header) != HEADER_KEYS:
        extra, missing = sorted(set(header) - HEADER_KEYS), sorted(HEADER_KEYS - set(header))
        raise bad(f"header fields: unknown {extra}, missing {missing}")
    if not _shape_ok(header["input_shape"]) or len(header["input_shape"]) > 3:
        raise bad(f"input_shape must be 1 to 3 positive integers, got {header['input_shape']!r}")
    if not (_is_num(header["input_scale"]) and header["input_scale"] > 0):
        raise bad(f"input_scale must be a finite number > 0, got {header['input_scale']!r}")
    if not isinstance(header["metadata"], dict):
        raise bad("metadata must be a table")
    for key in ("populations", "links"):
        if not isinstance(header[key], list) or not header[key] or not all(isinstance(d, dict) for d in header[key]):
            raise bad(f"{key} must be a non-empty list of tables")
    used = {"header"}
    for i, d in enumerate(header["populations"]):
        who = f"population {d.get('name', i)!r}"
        if set(d) != POP_KEYS:
            raise bad(f"{who}: fields: unknown {sorted(set(d) - POP_KEYS)}, missing {sorted(POP_KEYS - set(d))}")
        if not isinstance(d["name"], str) or not d["name"]:
            raise bad(f"{who}: name must be a non-empty string")
        if not _shape_ok(d["shape"]) or math.prod(d["shape"]) > MAX_NEURONS:
            raise bad(f"{who}: shape must be positive integers (at most {MAX_NEURONS} neurons), got {d['shape']!r}")
        if not isinstance(d["readout"], bool):
            raise bad(f"{who}: readout must be true or false")
        if d["read"] not in READS or (d["read"] != "current" and not d["readout"]):
            raise bad(f"{who}: read must be one of {', '.join(READS)} (not 'current' only for the readout), "
                      f"got {d['read']!r}")
        for k in (k for k in ("depth", "scale", "du", "dv", "vth", "bias_exp", "ref_delay") if k in POP_KEYS):
            lo, hi = INT_RANGES[k]
            if not (_is_int(d[k]) and lo <= d[k] <= hi):
                raise bad(f"{who}: {k} must be an integer in {lo}..{hi}, got {d[k]!r}")
        for k in (k for k in ("f_du", "f_dv", "f_vth") if k in POP_KEYS):
            if not (_is_num(d[k]) and d[k] >= 0):
                raise bad(f"{who}: {k} must be a finite number >= 0, got {d[k]!r}")
        for tag, kind in (("bias_mant", "i"), ("f_bias", "f")):
            name = f"pop{i}.{tag}"
            _array(path, arrays, name, kind, (d["shape"][0],), who)
            used.add(name)
    for i, d in enumerate(header["links"]):
        who = f"link {d.get('name', i)!r}"
        if not LINK_KEYS <= set(d) <= LINK_KEYS | LINK_OPTIONAL:
            raise bad(f"{who}: fields: unknown {sorted(set(d) - LINK_KEYS - LINK_OPTIONAL)}, "
                      f"missing {sorted(LINK_KEYS - set(d))}")
        for k in ("name", "src", "dst", "kind"):
            if not isinstance(d[k], str) or not d[k]:
                raise bad(f"{who}: {k} must be a non-empty string")
        if d["kind"] not in LINK_KINDS:
            raise bad(f"{who}: kind {d['kind']!r} is not one of {', '.join(LINK_KINDS)}")
        for k in (k for k in ("delay", "weight_exp", "num_weight_bits") if k in d):
            lo, hi = INT_RANGES[k]
            if not (_is_int(d[k]) and lo <= d[k] <= hi):
                raise bad(f"{who}: {k} must be an integer in {lo}..{hi}, got {d[k]!r}")
        if "conv" in d:
            c = d["conv"]
            if not isinstance(c, dict) or set(c) != CONV_KEYS:
                raise bad(f"{who}: conv must hold exactly {sorted(CONV_KEYS)}")
            for k in ("stride", "dilation"):
                if not _shape_ok(c[k], 2):
                    raise bad(f"{who}: conv {k} must be 2 positive integers, got {c[k]!r}")
            if not (isinstance(c["padding"], list) and len(c["padding"]) == 2
                    and all(_is_int(p) and 0 <= p <= 1024 for p in c["padding"])):
                raise bad(f"{who}: conv padding must be 2 integers >= 0, got {c['padding']!r}")
            if not (_is_int(c["groups"]) and c["groups"] >= 1):
                raise bad(f"{who}: conv groups must be an integer >= 1, got {c['groups']!r}")
            w = _array(path, arrays, f"link{i}.weight", "i", None, who, ndim=4)
            _array(path, arrays, f"link{i}.f_weight", "f", w.shape, who)
            used |= {f"link{i}.weight", f"link{i}.f_weight"}
        for tag, kind in (("m", "i"), ("f", "f")):
            if f"{tag}_shape" in d:
                if not _shape_ok(d[f"{tag}_shape"], 2):
                    raise bad(f"{who}: {tag}_shape must be 2 positive integers, got {d[f'{tag}_shape']!r}")
                rows = d[f"{tag}_shape"][0]
                data = _array(path, arrays, f"link{i}.{tag}.data", kind, None, who, ndim=1)
                _array(path, arrays, f"link{i}.{tag}.indices", "i", data.shape, who)
                _array(path, arrays, f"link{i}.{tag}.indptr", "i", (rows + 1,), who)
                used |= {f"link{i}.{tag}.data", f"link{i}.{tag}.indices", f"link{i}.{tag}.indptr"}
    extra = sorted(set(arrays) - used)
    if extra:
        raise bad(f"arrays no field refers to: {extra[:5]}")
    meta = header["metadata"]
    from htakl_deploy.distill.config import MAX_TIMESTEPS

    t = meta.get("timesteps")
    if not (_is_int(t) and 1 <= t <= MAX_TIMESTEPS):
        raise bad(f"metadata timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {t!r}")
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        # None: a graph imported from NIR without --data (map needs no data; simulate says what is missing)
        raise bad("metadata config must be a training config table (re-export with `htakl-deploy export --target lava`)")


def _array(path: Path, arrays: dict, name: str, kind: str, shape, who: str, ndim: int | None = None) -> np.ndarray:
    if name not in arrays:
        raise UserError(f"{path}: {who}: array {name!r} is missing")
    a = arrays[name]
    if kind == "i" and a.dtype.kind not in "iu":
        raise UserError(f"{path}: {who}: array {name!r} must hold integers, got {a.dtype}")
    if kind == "f" and a.dtype.kind not in "fiu":
        raise UserError(f"{path}: {who}: array {name!r} must hold numbers, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise UserError(f"{path}: {who}: array {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if ndim is not None and a.ndim != ndim:
        raise UserError(f"{path}: {who}: array {name!r} must have {ndim} dimensions, got shape {a.shape}")
    if kind == "f" and not np.isfinite(a).all():
        what = "NaN" if np.isnan(a).any() else "inf"
        raise UserError(f"{path}: {who}: array {name!r} holds {what} values")
    if kind == "i" and a.size and np.abs(a.astype(np.int64)).max() > MAX_MANTISSA and name.endswith(("weight", "m.data")):
        raise UserError(f"{path}: {who}: array {name!r} holds integers beyond Lava's 24-bit range")
    return a


def check_plan(path: Path, plan) -> None:
    """Whole-graph consistency of a loaded plan: sizes, acyclic order, depths and delays."""
    from htakl_deploy.hw.plan import INPUT, INPUT_KINDS

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}")

    pops = plan.populations
    names = list(pops)
    if len(set(names)) != len(names) or INPUT in pops:
        raise bad("population names must be unique and not 'input'")
    if not pops[names[-1]].readout:
        raise bad("the readout population must come last")
    position = {n: i for i, n in enumerate(names)}
    depth = {INPUT: -1, **{n: p.depth for n, p in pops.items()}}
    shapes = {INPUT: plan.input_shape, **{n: p.shape for n, p in pops.items()}}
    for link in plan.links:
        who = f"link {link.name!r}"
        if link.src == link.dst or (link.src != INPUT and position[link.src] >= position[link.dst]):
            raise bad(f"{who}: {link.src} → {link.dst} makes a cycle (populations must be in topological order)")
        if depth[link.dst] != depth[link.src] + 1 + link.delay:
            raise bad(f"{who}: depth of {link.dst!r} ({depth[link.dst]}) must be the depth of {link.src!r} "
                      f"({depth[link.src]}) + 1 + delay ({link.delay})")
        if (link.src == INPUT) != (link.kind in INPUT_KINDS):
            raise bad(f"{who}: only the input link (kind 'input') may read the input")
        n_src, n_dst = math.prod(shapes[link.src]), math.prod(shapes[link.dst])
        if link.conv is not None:
            w = np.asarray(link.conv["weight"])
            src_shape = shapes[link.src]
            groups = link.conv["groups"]
            if len(src_shape) != 3 or w.shape[1] * groups != src_shape[0] or w.shape[0] % groups:
                raise bad(f"{who}: kernel {w.shape} (groups {groups}) does not take {link.src!r} of shape {src_shape}")
            kh, kw = w.shape[2:]
            (sh, sw), (ph, pw), (dh, dw) = link.conv["stride"], link.conv["padding"], link.conv["dilation"]
            out = (w.shape[0], (src_shape[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                   (src_shape[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
            if out != tuple(shapes[link.dst]):
                raise bad(f"{who}: kernel maps {link.src!r} {src_shape} to {out}, but {link.dst!r} has shape "
                          f"{tuple(shapes[link.dst])}")
        else:
            for m in (link.matrix, link.f_matrix):
                if m is None:
                    continue
                if m.shape != (n_dst, n_src):
                    raise bad(f"{who}: matrix {m.shape} must be [N_dst, N_src] = ({n_dst}, {n_src})")
                try:
                    m.check_format(full_check=True)
                except ValueError as e:
                    raise bad(f"{who}: damaged sparse matrix ({e})") from None
    for name in names:
        if not plan.links_into(name):
            raise bad(f"population {name!r} has no incoming link")


def read_plan(path: str | Path, label: str = "ARTEFACT"):
    """Load and check a Lava artefact; ``UserError`` (naming ``label`` and the file) on anything wrong."""
    from htakl_deploy.hw.plan import plan_from_arrays

    path = Path(path)
    try:
        header, arrays = read_header(path)
        check_header(path, header, arrays)
        try:
            plan = plan_from_arrays(arrays)  # the arrays read_header read: the file is read once
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise UserError(f"{path}: inconsistent Lava artefact: {str(e).splitlines()[0][:200]}") from None
        check_plan(path, plan)
    except UserError as e:
        raise UserError(f"{label}: {e}") from None
    return plan
