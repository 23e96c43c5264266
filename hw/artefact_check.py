"""Reading a ``student.lava.npz`` someone handed you: every field checked before anything runs.

``read_plan(path, label)`` reads a deployment plan (format ``hw.artefact_format``: an ``.npz`` of
plain ``.npy`` arrays, never pickles, each array's type and size checked against its own header,
the header and the file before it is allocated) and checks it as a whole, raising a one-line
``UserError`` naming the file and the field for anything a plan written by ``htakl-deploy
export`` cannot hold:

- the format: ``htakl-lava-plan/2``; an artefact of an older format is refused with the command
  that re-exports it;
- the JSON header: exactly the known fields (no extra, none missing) with the right types;
- every array the header refers to is present, with the type and shape it must have (integers
  in an integer type, with a shift in 1..``MAX_SHIFT`` where the header's ``int_shift`` says so),
  and no other;
- populations: positive shapes, Loihi ranges (``du``/``dv`` 12 bits, ``vth`` 17 bits, 13-bit
  ``bias_mant``, …), per-channel biases, finite float parameters;
- links: known kinds, sources and targets that exist, matrices ``[N_dst, N_src]`` (dense or CSR)
  and kernels that map the source's shape onto the target's, mantissas within Lava's 24-bit
  sums, finite float weights (when the artefact holds any);
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
from htakl_deploy.hw import artefact_format as fmt

HEADER_KEYS = {"format", "input_shape", "input_scale", "metadata", "float_weights", "int_shift", "populations", "links"}
LINK_KEYS = {"name", "src", "dst", "kind", "delay", "weight_exp"}
LINK_OPTIONAL = {"conv", "matrix", "f_matrix", "num_weight_bits", "lag"}
CONV_KEYS = {"stride", "padding", "dilation", "groups"}
MATRIX_KEYS = {"layout", "shape"}
INT_RANGES = {"du": (-1, 4095), "dv": (0, 4096), "vth": (0, 2**23), "bias_exp": (0, 24),
              "scale": (1, 2**17 - 1), "depth": (0, 10_000), "delay": (0, 63), "weight_exp": (-8, 7),
              "ref_delay": (1, 63), "num_weight_bits": (1, 9), "lag": (0, 63),
              "message_bits": (0, 32)}
MAX_NEURONS = 2**26
MAX_MANTISSA = 2**24  # Lava's synaptic sums wrap at 24 bits
BIAS_MANT_MAX = 4095  # Loihi's bias mantissa: 13-bit signed (export.quantize)
UNREADABLE = "not a readable Lava artefact (not an .npz archive, or truncated)"
REEXPORT = "re-export it with `htakl-deploy export RUN_DIR --target lava`"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shape_ok(v: Any, ndim: int | None = None) -> bool:
    return (isinstance(v, list) and len(v) >= 1 and (ndim is None or len(v) == ndim)
            and all(_is_int(s) and 1 <= s <= 2**20 for s in v))


def read_header(path: Path) -> tuple[dict, fmt.Members]:
    """The header and the (unread) arrays of the ``.npz``; the caller closes the ``Members``."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: {UNREADABLE}")
    try:
        members = fmt.Members(path)
    except fmt.FormatError as e:
        raise UserError(f"{path}: not a readable Lava artefact ({e})") from None
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, RuntimeError):
        raise UserError(f"{path}: {UNREADABLE}") from None
    try:
        raw = fmt.read_header_bytes(members)
    except fmt.FormatError as e:
        members.close()
        raise UserError(f"{path}: not a readable Lava artefact ({e})") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, RuntimeError):
        members.close()
        raise UserError(f"{path}: {UNREADABLE}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        members.close()
        raise UserError(f"{path}: the header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        members.close()
        raise UserError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    return header, members


def _pop_keys() -> set[str]:
    """The header fields of a population: the ``Population`` dataclass less its arrays."""
    from dataclasses import fields

    from htakl_deploy.hw.plan import POP_ARRAYS, Population

    return {f.name for f in fields(Population)} - set(POP_ARRAYS)


def check_header(path: Path, header: dict, arrays: fmt.Members) -> None:
    """Every header field, and the type and shape of every array it refers to (read from the
    arrays' own headers: nothing is allocated here)."""
    from htakl_deploy.hw.plan import LINK_KINDS, NEURONS, READS, RESETS, WEIGHTED_KINDS

    POP_KEYS = _pop_keys()

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}")

    if header.get("format") in fmt.OLD_FORMATS:
        raise bad(f"format {header['format']!r} is an older artefact format (8-byte weights beside float "
                  f"copies); {REEXPORT}")
    if header.get("format") != fmt.FORMAT:
        raise bad(f"format {header.get('format')!r}, expected {fmt.FORMAT!r} (not an htakl-deploy Lava artefact)")
    if set(header) != HEADER_KEYS:
        extra, missing = sorted(set(header) - HEADER_KEYS), sorted(HEADER_KEYS - set(header))
        raise bad(f"header fields: unknown {extra}, missing {missing}")
    if not _shape_ok(header["input_shape"]) or len(header["input_shape"]) > 3:
        raise bad(f"input_shape must be 1 to 3 positive integers, got {header['input_shape']!r}")
    if not (_is_num(header["input_scale"]) and header["input_scale"] > 0):
        raise bad(f"input_scale must be a finite number > 0, got {header['input_scale']!r}")
    if not isinstance(header["metadata"], dict):
        raise bad("metadata must be a table")
    if not isinstance(header["float_weights"], bool):
        raise bad("float_weights must be true or false")
    shifts = header["int_shift"]
    if not isinstance(shifts, dict) or not all(_is_int(v) and 1 <= v <= fmt.MAX_SHIFT for v in shifts.values()):
        raise bad(f"int_shift must map arrays to integers in 1..{fmt.MAX_SHIFT}")
    for key in ("populations", "links"):
        if not isinstance(header[key], list) or not header[key] or not all(isinstance(d, dict) for d in header[key]):
            raise bad(f"{key} must be a non-empty list of tables")
    used, ints = {"header"}, set()

    def array(name: str, kind: str, shape, who: str, ndim: int | None = None) -> tuple[int, ...]:
        used.add(name)
        if kind == "i":
            ints.add(name)
        return _array(path, arrays, name, kind, shape, who, ndim)

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
        if d["neuron"] not in NEURONS or (d["neuron"] == "graded" and d["readout"]):
            raise bad(f"{who}: neuron must be one of {', '.join(NEURONS)} (a graded relay is not the readout), "
                      f"got {d['neuron']!r}")
        if d["reset"] not in RESETS:
            raise bad(f"{who}: reset must be one of {', '.join(RESETS)}, got {d['reset']!r}")
        for k in (k for k in ("depth", "scale", "du", "dv", "vth", "bias_exp", "ref_delay", "message_bits")
                  if k in POP_KEYS):
            lo, hi = INT_RANGES[k]
            if not (_is_int(d[k]) and lo <= d[k] <= hi):
                raise bad(f"{who}: {k} must be an integer in {lo}..{hi}, got {d[k]!r}")
        if d["neuron"] == "lif" and d["vth"] < 1:  # 0 is a graded or sigma-delta population's only
            raise bad(f"{who}: vth must be an integer in 1..{INT_RANGES['vth'][1]} for a LIF population, got {d['vth']!r}")
        for k in (k for k in ("f_du", "f_dv", "f_vth") if k in POP_KEYS):
            if not (_is_num(d[k]) and d[k] >= 0):
                raise bad(f"{who}: {k} must be a finite number >= 0, got {d[k]!r}")
        array(f"pop{i}.bias_mant", "i", (d["shape"][0],), who)
        array(f"pop{i}.f_bias", "f", (d["shape"][0],), who)
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
        for k in (k for k in ("delay", "weight_exp", "num_weight_bits", "lag") if k in d):
            lo, hi = INT_RANGES[k]
            if not (_is_int(d[k]) and lo <= d[k] <= hi):
                raise bad(f"{who}: {k} must be an integer in {lo}..{hi}, got {d[k]!r}")
        if ("conv" in d) == ("matrix" in d) and ("conv" in d or d["kind"] in WEIGHTED_KINDS):
            raise bad(f"{who}: needs a kernel (conv) or a matrix, and not both")
        if ("f_matrix" in d) != (header["float_weights"] and "matrix" in d):
            raise bad(f"{who}: f_matrix belongs to a matrix link of an artefact with float_weights")
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
            shape = array(f"link{i}.weight", "i", None, who, ndim=4)
            if header["float_weights"]:
                array(f"link{i}.f_weight", "f", shape, who)
        for key, tag, kind in (("matrix", "m", "i"), ("f_matrix", "f", "f")):
            if key not in d:
                continue
            m = d[key]
            if not isinstance(m, dict) or set(m) != MATRIX_KEYS or m["layout"] not in ("dense", "csr"):
                raise bad(f"{who}: {key} must hold layout ('dense' or 'csr') and shape")
            if not _shape_ok(m["shape"], 2):
                raise bad(f"{who}: {key} shape must be 2 positive integers, got {m['shape']!r}")
            prefix = f"link{i}.{tag}"
            if m["layout"] == "dense":
                array(prefix, kind, tuple(m["shape"]), who)
            else:
                nnz = array(f"{prefix}.data", kind, None, who, ndim=1)
                array(f"{prefix}.indices", "index", nnz, who)
                array(f"{prefix}.indptr", "index", (m["shape"][0] + 1,), who)
    extra = sorted(set(arrays) - used)
    if extra:
        raise bad(f"arrays no field refers to: {extra[:5]}")
    if set(shifts) - ints:
        raise bad(f"int_shift names arrays that are not integer values: {sorted(set(shifts) - ints)[:5]}")
    meta = header["metadata"]
    from htakl_deploy.distill.config import MAX_TIMESTEPS

    t = meta.get("timesteps")
    if not (_is_int(t) and 1 <= t <= MAX_TIMESTEPS):
        raise bad(f"metadata timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {t!r}")
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        # None: a graph imported from NIR without --data (map needs no data; simulate says what is missing)
        raise bad(f"metadata config must be a training config table ({REEXPORT})")


ARRAY_TYPES = {"i": fmt.INT_STORE, "f": fmt.FLOAT_STORE, "index": fmt.INDEX_STORE + fmt.INT_STORE}
TYPE_WORDS = {"i": "integers", "f": "floats", "index": "integer indices"}


def _array(path: Path, arrays: fmt.Members, name: str, kind: str, shape, who: str,
           ndim: int | None = None) -> tuple[int, ...]:
    """The shape of array ``name`` after checking its type and shape (from its ``.npy`` header)."""
    if name not in arrays:
        raise UserError(f"{path}: {who}: array {name!r} is missing")
    try:
        dtype, got = arrays.info(name)
    except fmt.FormatError as e:
        raise UserError(f"{path}: {who}: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError):
        raise UserError(f"{path}: {UNREADABLE}") from None
    if dtype not in ARRAY_TYPES[kind]:
        raise UserError(f"{path}: {who}: array {name!r} must hold {TYPE_WORDS[kind]} "
                        f"({', '.join(str(t) for t in ARRAY_TYPES[kind])}), got {dtype}")
    if shape is not None and got != tuple(shape):
        raise UserError(f"{path}: {who}: array {name!r} has shape {got}, expected {tuple(shape)}")
    if ndim is not None and len(got) != ndim:
        raise UserError(f"{path}: {who}: array {name!r} must have {ndim} dimensions, got shape {got}")
    return got


def _check_values(path: Path, plan) -> None:
    """Values the types cannot rule out: 24-bit mantissas, 13-bit biases, finite floats."""
    def finite(a, what: str) -> None:
        a = np.asarray(a)
        if a.size and not np.isfinite(a).all():
            raise UserError(f"{path}: {what} holds {'NaN' if np.isnan(a).any() else 'inf'} values")

    def abs_max(a) -> int:
        a = np.asarray(a)
        return max(int(a.max()), -int(a.min())) if a.size else 0

    for p in plan.populations.values():
        if abs_max(p.bias_mant) > BIAS_MANT_MAX:
            raise UserError(f"{path}: population {p.name!r}: bias_mant beyond 13 bits (|b| <= {BIAS_MANT_MAX})")
        finite(p.f_bias, f"population {p.name!r}: f_bias")
    for link in (k for k in plan.links if k.conv is not None or k.matrix is not None):
        ints = link.conv["weight"] if link.conv is not None else link.matrix.data
        if abs_max(ints) > MAX_MANTISSA:
            raise UserError(f"{path}: link {link.name!r}: weights beyond Lava's 24-bit range")
        floats = link.conv.get("f_weight") if link.conv is not None else link.f_matrix
        if floats is not None:
            finite(getattr(floats, "data", floats), f"link {link.name!r}: float weights")


def check_plan(path: Path, plan) -> None:
    """Whole-graph consistency of a loaded plan: sizes, topological order (a population's own recurrent
    link aside), depths and delays."""
    from htakl_deploy.hw.plan import INPUT, INPUT_KINDS, check_recurrent_start

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
        if link.src == link.dst:  # a recurrent link: its one-step hop is the recurrence, nothing more
            if link.delay or pops[link.src].readout:
                raise bad(f"{who}: a recurrent link ({link.src} → itself) must have delay 0 and not be the readout's")
        elif link.src != INPUT and position[link.src] >= position[link.dst]:
            raise bad(f"{who}: {link.src} → {link.dst} makes a cycle through several populations (populations "
                      "must be in topological order; only a population's own recurrent link goes back)")
        elif depth[link.dst] != depth[link.src] + 1 + link.delay:
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
    try:
        check_recurrent_start(pops, plan.links)
    except ValueError as e:
        raise bad(str(e)) from None


def read_plan(path: str | Path, label: str = "ARTEFACT"):
    """Load and check a Lava artefact; ``UserError`` (naming ``label`` and the file) on anything wrong."""
    from htakl_deploy.hw.plan import plan_from_members

    path = Path(path)
    try:
        header, members = read_header(path)
        with members:
            check_header(path, header, members)
            try:
                plan = plan_from_members(header, members)  # each array read once, after the checks
            except (OSError, EOFError, zipfile.BadZipFile, RuntimeError):
                raise UserError(f"{path}: {UNREADABLE}") from None
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise UserError(f"{path}: inconsistent Lava artefact: {str(e).splitlines()[0][:200]}") from None
        _check_values(path, plan)
        check_plan(path, plan)
    except UserError as e:
        raise UserError(f"{label}: {e}") from None
    return plan
