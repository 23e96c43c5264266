"""The deployment plan: a quantised student as the populations and links a Loihi-style chip runs.

``plan_from_quantized(q)`` turns a ``QuantizedGraph`` (export/quantize.py) into plain data that
both the Lava builder (``hw.lava_net``) and the vectorised emulator (``hw.emulator``) consume,
so the two can only differ in *how* they compute, never in *what*:

- **Population**: one per LIF node (``LIFReset`` on Lava) plus the **readout** (the logits
  node: a non-spiking LIF whose current ``u`` is read every step); a **graded relay**
  (``neuron == "graded"``, Lava's ``GradedVec`` with threshold 0, added by ``hw.map_transform``)
  sends the integer current it receives as a graded spike every step. Integer (``fixed_pt``) and
  float (``floating_pt``) neuron parameters; ``depth`` = the step offset at which the
  population sees a sample's first time step.
- **Link**: one per connection into a population, with its full linear map from the source
  population's spikes (pooling and flatten between them composed in), its kind and its delay:

  * ``input``  the first, encoding connection: integer MACs on the 8-bit pixels (a conv kernel,
               or a dense first layer's matrix), computed off-chip; its currents are fed to the
               first population (a Lava ``RingBuffer``).
  * ``conv``   a plain convolution of spikes with ``weight_exp == 0`` and no extra delay: Lava
               ``Conv`` (whose ``fixed_pt`` model ignores ``weight_exp`` and clamps its output
               at 24 bits — so only exponent-0 convs go there), or ``Sparse`` where that is
               faster (the Lava builder decides, ``hw.lava_net``).
  * ``dense``  a flatten → dense connection without extra delay: Lava ``Dense``.
  * ``sparse`` anything else (a conv with exponent ≠ 0, pooled connections,
               identity skips, any connection needing an extra delay): Lava ``Sparse`` /
               ``DelaySparse``.

Timing. Every Conv/Dense/Sparse hop delays by one step (Lava buffers a synapse's output for
one step). A population's ``depth`` is ``max(depth(src) + 1)`` over its links, and a link
from a shallower source gets ``delay = depth(dst) − depth(src) − 1`` extra steps
(``DelaySparse``), so every input of a population refers to the same sample time step — the
residual skip of a ResNet block is delayed by one step to meet the main path. Samples run back
to back with ``T`` steps each (``LIFReset`` with ``reset_interval = T`` and an offset of
``1 + depth``): population at depth ``k`` handles sample ``s``, time step ``t`` at Lava step
``s·T + k + t + 1``. A run of ``n`` samples takes ``n·T + max_depth`` Lava steps.

Layouts: matrices here are in torch's flat ``(C, H, W)`` order; ``lava_perm(shape)`` gives the
index map to Lava's ``(W, H, C)`` layout (the builder permutes).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import IO, TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from htakl_deploy.atomic import atomic_path
from htakl_deploy.hw import artefact_format as fmt

if TYPE_CHECKING:  # the graph side (torch) is imported where used: reading a saved plan (``load_plan``)
    # stays torch-free, for the Lava worker process (``hw.lava_worker``)
    from htakl_deploy.export.graph import StudentGraph
    from htakl_deploy.export.quantize import QuantizedGraph


def __getattr__(name: str):
    if name == "conv_matrix":  # re-exported (hw.lava_net, tests), imported on first use: it needs torch
        from htakl_deploy.export.nodes.conv import conv_matrix

        return conv_matrix
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

FORMAT = fmt.FORMAT
INPUT = "input"
LINK_KINDS = ("input", "bias", "conv", "dense", "sparse")
INPUT_KINDS = ("input", "bias")  # the links that read the graph's input
WEIGHTED_KINDS = ("input", "conv", "dense", "sparse")  # the kinds that carry a kernel or a matrix
READS = ("current", "v", "spikes", "sigma")
RESETS = ("zero", "subtract")  # a population's reset after a spike: Lava's LIF, or by subtraction (hw.lava_procs.loihi_lif)
CONV_SUM_LIMIT = 2**23  # Lava's Conv sums in float32 and wraps at 24 bits: stay below both
MAX_DELAY = 63  # Loihi 2 synaptic delays are 6 bits
# the neuron models: lava-nc's LIF; "graded", a relay (hw.map_transform); a netx SDNN's sigma-delta
# models (export/nodes/sigma_delta.py: "delta" input encoder, "sigma_delta", "sigma" decoder). Every one
# but the LIF sends graded spikes (integer payloads of Population.message_bits)
NEURONS = ("lif", "graded", "delta", "sigma_delta", "sigma")
SIGMA_DELTA = ("delta", "sigma_delta", "sigma")


@dataclass(eq=False)
class Population:
    name: str
    shape: tuple[int, ...]
    depth: int
    readout: bool
    scale: int  # S: v (Lava units) = H·(S/θ)·64; readout: logits = (u + bias) / (64·S)
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray  # int64 per channel ([C] or [N])
    bias_exp: int
    f_du: float
    f_dv: float
    f_vth: float
    f_bias: np.ndarray  # float64 per channel
    ref_delay: int = 1  # Loihi's refractory delay (hw.lif_ref.refractory_hold); 1: none beyond the spike's step
    # the readout: "current" (ours: u + bias, never fires), or a netx last layer's "v" / "spikes" / "sigma"
    read: str = "current"
    neuron: str = "lif"  # one of NEURONS
    message_bits: int = 0  # a graded population's payload bits (0: binary spikes)
    reset: str = "zero"  # RESETS: v = 0 after a spike (lava-nc's LIF) or v − vth (Loihi 2 microcode)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if self.neuron not in NEURONS:
            raise ValueError(f"population {self.name!r}: neuron {self.neuron!r} not in {NEURONS}")
        if self.neuron == "graded" and self.readout:
            raise ValueError(f"population {self.name!r}: a graded relay cannot be the readout")
        if self.read not in READS:
            raise ValueError(f"population {self.name!r}: read {self.read!r} not in {READS}")
        if self.graded != (self.message_bits > 0):
            raise ValueError(f"population {self.name!r}: a {self.neuron} neuron sends "
                             f"{'graded' if self.graded else 'binary'} spikes, message_bits {self.message_bits}")
        if self.read != "current" and not self.readout:
            raise ValueError(f"population {self.name!r}: only the readout has a read mode")
        if self.reset not in RESETS:
            raise ValueError(f"population {self.name!r}: reset {self.reset!r} not in {RESETS}")
        self.bias_mant = np.asarray(self.bias_mant, dtype=np.int64)
        self.f_bias = np.asarray(self.f_bias, dtype=np.float64)
        if self.depth < 0:
            raise ValueError(f"population {self.name!r}: depth must be >= 0")
        if self.bias_mant.shape != (self.shape[0],) or self.f_bias.shape != (self.shape[0],):
            raise ValueError(f"population {self.name!r}: biases must be per channel [{self.shape[0]}]")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def graded(self) -> bool:
        """Its spikes carry integer payloads (a relay or a sigma-delta population)."""
        return self.neuron != "lif"

    def per_neuron(self, per_channel: np.ndarray) -> np.ndarray:
        """A per-channel array broadcast to the population's torch shape."""
        return np.broadcast_to(per_channel.reshape(-1, *([1] * (len(self.shape) - 1))), self.shape)


@dataclass(eq=False)
class Link:
    name: str
    src: str  # a population name, or INPUT
    dst: str
    kind: str
    delay: int
    weight_exp: int
    matrix: sp.csr_matrix | None = None  # integer mantissas [N_dst, N_src], torch flat order
    f_matrix: sp.csr_matrix | None = None  # float, same shape; None in a plan read from an artefact
    # kinds "conv"/"input", and "sparse" links that are convolutions of the source's spikes —
    # plain convs, convs after non-overlapping pools and identity skips (pooled or not) composed
    # into one kernel: weight, f_weight (absent in a plan read from an artefact), stride, padding,
    # dilation, groups. The emulator convolves; matrices are built from it only for Lava's Sparse.
    conv: dict | None = None
    num_weight_bits: int = 8  # Lava's Dense/Sparse truncation (hw.lif_ref.effective_weights); netx: up to 9
    # the input link only: steps the input stream arrives late (lava-dl's netx runs a file's first layer's
    # synapse on chip: the input reaches it one step late, a sample's last step lands in the next one)
    lag: int = 0

    def int_matrix(self, src_shape: tuple[int, ...]) -> sp.csr_matrix:
        """The integer mantissas ``[N_dst, N_src]`` in torch flat order: stored, or built from the
        kernel on first use and kept (a ResNet's pooled convs would take GBs if stored)."""
        if self.matrix is None:
            self.matrix = self._from_kernel(self.conv["weight"], src_shape).tocsr()
        return self.matrix

    def float_matrix(self, src_shape: tuple[int, ...]) -> sp.csr_matrix:
        """The float weights ``[N_dst, N_src]`` (float64), stored or built from the float kernel."""
        if self.f_matrix is None:
            if self.conv is None or self.conv.get("f_weight") is None:
                raise ValueError(f"link {self.name!r} holds no float weights")
            self.f_matrix = self._from_kernel(np.asarray(self.conv["f_weight"], dtype=np.float64), src_shape).tocsr()
        return self.f_matrix

    def matrices(self, src_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """(``int_matrix``, ``float_matrix`` or None where the link holds no float weights)."""
        has_float = self.f_matrix is not None or (self.conv is not None and self.conv.get("f_weight") is not None)
        return self.int_matrix(src_shape), self.float_matrix(src_shape) if has_float else None

    def _from_kernel(self, weight: np.ndarray, src_shape: tuple[int, ...]) -> sp.spmatrix:
        from htakl_deploy.export.nodes.conv import conv_matrix

        c = self.conv
        return conv_matrix(np.asarray(weight), src_shape, c["stride"], c["padding"], c["dilation"], c["groups"])

    def __post_init__(self):
        if self.kind not in LINK_KINDS:
            raise ValueError(f"link {self.name!r}: kind {self.kind!r} not in {LINK_KINDS}")
        if not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"link {self.name!r}: delay {self.delay} outside [0, {MAX_DELAY}]")
        if self.kind == "conv" and (self.weight_exp != 0 or self.delay != 0 or self.conv is None):
            raise ValueError(f"link {self.name!r}: a Lava Conv link needs weight_exp 0, no delay and a kernel")
        if self.kind in WEIGHTED_KINDS and self.conv is None and self.matrix is None:
            raise ValueError(f"link {self.name!r}: a {self.kind} link needs its matrix or a kernel")
        if self.kind == "bias" and (self.src != INPUT or self.delay or self.weight_exp != 0):
            raise ValueError(f"link {self.name!r}: a bias link reads the input, with no delay or exponent")
        if self.lag and (self.kind != "input" or not 0 < self.lag <= MAX_DELAY):
            raise ValueError(f"link {self.name!r}: only the input link may lag, by 1..{MAX_DELAY} steps")


@dataclass(eq=False)
class DeploymentPlan:
    input_shape: tuple[int, ...]
    input_scale: float
    populations: dict[str, Population]  # topological order; the readout last
    links: list[Link]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        readouts = [p for p in self.populations.values() if p.readout]
        if len(readouts) != 1:
            raise ValueError(f"a plan needs exactly one readout population, got {len(readouts)}")
        for link in self.links:
            if link.dst not in self.populations or (link.src != INPUT and link.src not in self.populations):
                raise ValueError(f"link {link.name!r}: unknown population {link.src!r} → {link.dst!r}")
        if sum(link.kind in INPUT_KINDS for link in self.links) != 1:
            raise ValueError("a plan needs exactly one input link")

    @property
    def readout(self) -> Population:
        return next(p for p in self.populations.values() if p.readout)

    @property
    def max_depth(self) -> int:
        return max(p.depth for p in self.populations.values())

    @property
    def input_link(self) -> Link:
        """The link that reads the graph's input: currents into a population (``input``) or, for a
        netx input layer, its bias (``bias``: ``x << 6`` added to ``v`` each step)."""
        return next(link for link in self.links if link.kind in INPUT_KINDS)

    def links_into(self, name: str) -> list[Link]:
        return [link for link in self.links if link.dst == name]

    def lava_steps(self, samples: int, timesteps: int) -> int:
        return samples * timesteps + self.max_depth

    @property
    def float_weights(self) -> bool:
        """Whether every link carries its float weights (Lava's ``floating_pt`` models need them;
        a plan read from an exported artefact has none, see ``hw.artefact_format``)."""
        return all(link.conv.get("f_weight") is not None if link.conv is not None else link.f_matrix is not None
                   for link in self.links if link.conv is not None or link.matrix is not None)

    # -- saving: one .npz (format: hw.artefact_format), written atomically ----------------------

    def encoded(self, float_weights: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
        """The header and the arrays ``save`` writes: integers and floats in their smallest exact
        types, float weights only with ``float_weights``."""
        if float_weights and not self.float_weights:
            raise ValueError("this plan holds no float weights to save")
        arrays: dict[str, np.ndarray] = {}
        shifts: dict[str, int] = {}

        def put_int(name: str, a: np.ndarray) -> None:
            arrays[name], s = fmt.pack_int(a)
            if s:
                shifts[name] = s

        def put_matrix(prefix: str, m: sp.spmatrix, integer: bool) -> dict:
            members, meta, s = fmt.pack_matrix(m, prefix, integer)
            arrays.update(members)
            if s:
                shifts[fmt.matrix_members(prefix, meta["layout"])[0]] = s
            return meta

        header = {"format": fmt.FORMAT, "input_shape": list(self.input_shape), "input_scale": self.input_scale,
                  "metadata": self.metadata, "float_weights": float_weights, "int_shift": shifts,
                  "populations": [], "links": []}
        for i, p in enumerate(self.populations.values()):
            header["populations"].append({k: v for k, v in asdict(p).items() if k not in POP_ARRAYS})
            put_int(f"pop{i}.bias_mant", p.bias_mant)
            arrays[f"pop{i}.f_bias"] = fmt.pack_float(p.f_bias)
        for i, link in enumerate(self.links):
            d = {"name": link.name, "src": link.src, "dst": link.dst, "kind": link.kind,
                 "delay": link.delay, "weight_exp": link.weight_exp}
            if link.num_weight_bits != 8:
                d["num_weight_bits"] = link.num_weight_bits
            if link.lag:
                d["lag"] = link.lag
            if link.conv is not None:  # a kernel is enough to rebuild the matrices
                put_int(f"link{i}.weight", link.conv["weight"])
                if float_weights:
                    arrays[f"link{i}.f_weight"] = fmt.pack_float(link.conv["f_weight"])
                d["conv"] = {k: list(v) if isinstance(v, tuple) else v for k, v in link.conv.items()
                             if k not in ("weight", "f_weight")}
            elif link.matrix is not None:
                d["matrix"] = put_matrix(f"link{i}.m", link.matrix, True)
                if float_weights:
                    d["f_matrix"] = put_matrix(f"link{i}.f", link.f_matrix, False)
            header["links"].append(d)
        return header, arrays

    def save(self, path: str | os.PathLike | IO[bytes], *, float_weights: bool = False) -> Path | None:
        """Write the plan (``encoded``) as one ``.npz``: atomically to a path, or into an open file."""
        header, arrays = self.encoded(float_weights)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        if not isinstance(path, (str, os.PathLike)):
            np.savez(path, **arrays)
            return None
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path

    def same_network(self, other: "DeploymentPlan", floats: bool = True) -> str | None:
        """None if ``other`` is the same network — every field and array an artefact holds, its
        metadata aside (and the neurons' float parameters, unless ``floats``); else the first
        difference, in words."""
        def parts(plan: DeploymentPlan):
            header, arrays = plan.encoded()
            if not floats:
                header["populations"] = [{k: v for k, v in d.items() if not k.startswith("f_")}
                                         for d in header["populations"]]
                arrays = {k: v for k, v in arrays.items() if not k.endswith(".f_bias")}
            return header, arrays

        (ha, aa), (hb, ab) = parts(self), parts(other)
        for key in ("input_shape", "input_scale", "int_shift", "populations", "links"):
            if ha[key] != hb[key]:
                return f"{key} differ"
        diff = next((k for k in sorted(set(aa) | set(ab)) if k not in aa or k not in ab
                     or aa[k].dtype != ab[k].dtype or not np.array_equal(aa[k], ab[k])), None)
        return None if diff is None else f"array {diff} differs"


POP_ARRAYS = ("bias_mant", "f_bias")


def load_plan(source: str | os.PathLike | IO[bytes]) -> DeploymentPlan:
    """Read a plan written by ``DeploymentPlan.save`` (a path or an open file); ValueError on
    anything unexpected (``hw.artefact_check.read_plan`` checks every field of a file handed in)."""
    with fmt.Members(source) as members:
        header = json.loads(fmt.read_header_bytes(members).decode())
        if header.get("format") != fmt.FORMAT:
            raise ValueError(f"format {header.get('format')!r}, expected {fmt.FORMAT!r}")
        return plan_from_members(header, members)


def plan_from_members(header: dict, arrays) -> DeploymentPlan:
    """The plan of a parsed header and its arrays (a ``Members`` of the open file, or a dict of
    stored arrays); each array is read once. ValueError / KeyError on anything unexpected."""
    shifts = header["int_shift"]

    def get_int(name: str) -> np.ndarray:
        return fmt.unpack_int(arrays[name], shifts.get(name, 0))

    pops = {}
    for i, d in enumerate(header["populations"]):
        pops[d["name"]] = Population(**d, bias_mant=get_int(f"pop{i}.bias_mant"), f_bias=arrays[f"pop{i}.f_bias"])
    links = []
    for i, d in enumerate(header["links"]):
        mats = {}
        for key, prefix, integer in (("matrix", f"link{i}.m", True), ("f_matrix", f"link{i}.f", False)):
            if key in d:
                values = fmt.matrix_members(prefix, d[key]["layout"])[0]
                mats[key] = fmt.unpack_matrix(arrays, prefix, d[key], shifts.get(values, 0), integer)
        conv = None
        if "conv" in d:
            conv = {k: tuple(v) if isinstance(v, list) else v for k, v in d["conv"].items()}
            conv["weight"] = get_int(f"link{i}.weight")
            if header["float_weights"]:
                conv["f_weight"] = arrays[f"link{i}.f_weight"]
        links.append(Link(d["name"], d["src"], d["dst"], d["kind"], d["delay"], d["weight_exp"],
                          mats.get("matrix"), mats.get("f_matrix"), conv, d.get("num_weight_bits", 8),
                          d.get("lag", 0)))
    return DeploymentPlan(tuple(header["input_shape"]), header["input_scale"], pops, links, header["metadata"])


# -- linear maps as sparse matrices (torch flat order) -------------------------------------


def pool_matrix(node, in_shape) -> sp.csr_matrix:
    """Sum pooling (the avg divisor is applied by the quantiser) as a 0/1 matrix."""
    return node.matrix(in_shape)


def lava_perm(shape: tuple[int, ...]) -> np.ndarray:
    """``perm[i]`` = torch flat index of Lava flat index ``i`` (Lava lays (C,H,W) out as (W,H,C))."""
    if len(shape) != 3:  # (N,) and (C, L) populations keep torch's flat order
        return np.arange(int(np.prod(shape)))
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(2, 1, 0).reshape(-1)


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)


# -- building the plan ---------------------------------------------------------------------


def _pool_map(graph: StudentGraph, source: str, chain: list[str]) -> sp.csr_matrix:
    """The composed 0/1 map of the pools/flatten in ``chain`` (torch flat order)."""
    n = int(np.prod(graph.shapes[source]))
    m = sp.identity(n, dtype=np.int64, format="csr")
    prev = source
    for name in chain:
        m = graph.nodes[name].matrix(graph.shapes[prev]).astype(np.int64) @ m
        prev = name
    return m.tocsr()


def _compose_pools(graph: StudentGraph, chain: list[str], spec: dict) -> dict | None:
    """Fold the non-overlapping pools of ``chain`` (nearest the kernel first) into the kernel:
    a ``kp``-pool then a ``k``-conv with stride ``s``, padding ``p`` (dilation 1) is one conv with
    each tap repeated ``kp×kp`` times, kernel ``k·kp``, stride ``s·kp``, padding ``p·kp``. None if a
    pool overlaps or pads, or the kernel is dilated (the caller composes matrices instead)."""
    for name in reversed(chain):
        kp = graph.nodes[name].kernel_repeat()
        if kp is None or tuple(spec["dilation"]) != (1, 1):
            return None
        spec = {**spec,
                "weight": np.repeat(np.repeat(spec["weight"], kp[0], axis=2), kp[1], axis=3),
                "f_weight": np.repeat(np.repeat(spec["f_weight"], kp[0], axis=2), kp[1], axis=3),
                "stride": (spec["stride"][0] * kp[0], spec["stride"][1] * kp[1]),
                "padding": (spec["padding"][0] * kp[0], spec["padding"][1] * kp[1])}
    return spec


def _conv_out_shape(spec: dict, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    kh, kw = spec["weight"].shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = spec["stride"], spec["padding"], spec["dilation"]
    return (spec["weight"].shape[0], (in_shape[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (in_shape[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def _float_gain(node) -> float:
    """Float weights in the Lava float LIF's units (SJ's decay_input divides the input by τ; the
    readout's current gets β·r)."""
    return 1.0 / node.loihi().input_divisor


def plan_from_quantized(q: QuantizedGraph) -> DeploymentPlan:
    """The deployment plan of a quantised student; ValueError naming the node if it cannot run."""
    from htakl_deploy.export.graph import TARGETS
    from htakl_deploy.hw.lif_ref import READOUT_VTH, effective_weights

    g = q.graph
    pops: dict[str, Population] = {}
    links: list[Link] = []
    for name, node in g.nodes.items():
        if node.ROLE not in TARGETS:
            continue
        t = q.targets[name]
        fgain = _float_gain(node)
        incoming = []  # (connection, weighted node, source node, source population, pools/flatten, divisor)
        for conn in (c for c in q.connections if c.target == name):
            wnode = g.nodes[conn.node]
            source, chain, divisor = conn.path.source, list(conn.path.via), conn.path.divisor
            src_pop = INPUT if g.role(source) == "input" else source
            if src_pop != INPUT and src_pop not in pops and src_pop != name:
                raise ValueError(f"node {name!r}: source {source!r} is not a deployed population")
            incoming.append((conn, wnode, source, src_pop, chain, divisor))
        # a recurrent link (the population's own spikes) has no extra delay: its one-step hop brings step
        # t − 1's spikes to step t, the graph's recurrence; the others line up on the deepest
        depth = max(0 if inc[3] == INPUT else pops[inc[3]].depth + 1 for inc in incoming if inc[3] != name)
        depths = [depth if inc[3] == name else 0 if inc[3] == INPUT else pops[inc[3]].depth + 1 for inc in incoming]
        for (conn, wnode, source, src_pop, chain, divisor), d_src in zip(incoming, depths):
            delay = depth - d_src  # extra steps on top of the link's own one-step hop
            if src_pop == INPUT and delay:
                raise ValueError(f"node {name!r}: the input feeds a population that also has deeper inputs")
            link_name = conn.node if not conn.identity else f"{conn.node}->{name}"
            if src_pop == INPUT and conn.identity and getattr(node, "bias_input", False):
                links.append(Link(link_name, INPUT, name, "bias", 0, 0))  # a netx input layer: x is its bias
                continue
            if src_pop == INPUT and conn.identity and getattr(node, "input_current", False):
                eye = sp.identity(int(np.prod(g.shapes[name])), dtype=np.int64, format="csr")  # x into its a_in
                links.append(Link(link_name, INPUT, name, "input", 0, 0, eye, eye.astype(np.float64)))
                continue
            spec = None
            if not conn.identity:  # the synapse's kernel, if it is a convolution (None: a matrix)
                spec = wnode.kernel(conn.weight_mant, np.asarray(wnode.weight, dtype=np.float64) * fgain)
            lag = int(q.metadata.get("input_lag", 0)) if src_pop == INPUT else 0
            if spec is not None and src_pop == INPUT:
                if not chain:
                    links.append(Link(link_name, INPUT, name, "input", 0, conn.weight_exp, conv=spec, lag=lag))
                    continue
                spec = None  # pools on the input: their matrix composed into the input link's (below)
            elif conn.identity and len(g.shapes[source]) == 3:  # a depthwise identity kernel
                c = g.shapes[source][0]
                spec = {"weight": np.full((c, 1, 1, 1), int(conn.weight_mant), np.int64),
                        "f_weight": np.full((c, 1, 1, 1), fgain), "stride": (1, 1), "padding": (0, 0),
                        "dilation": (1, 1), "groups": c}
            if src_pop == INPUT and conn.identity:
                raise ValueError(f"node {name!r}: an identity skip from the input is not deployable (the input "
                                 "must feed one conv/dense layer)")
            if spec is not None:
                spec = _compose_pools(g, chain, spec)
                if spec is not None and _conv_out_shape(spec, g.shapes[source]) != g.shapes[name]:
                    spec = None
            if spec is not None:
                spec["f_weight"] = spec["f_weight"] / divisor
                sum_abs = np.abs(spec["weight"]).reshape(len(spec["weight"]), -1).sum(1).max()
                fits_conv = not conn.identity and sum_abs < CONV_SUM_LIMIT
                kind = "conv" if conn.weight_exp == 0 and delay == 0 and fits_conv else "sparse"
                links.append(Link(link_name, src_pop, name, kind, delay, conn.weight_exp if kind == "sparse" else 0,
                                  conv=spec, num_weight_bits=conn.weight_bits))
                continue
            # no kernel: compose matrices (dense layers; overlapping/padded pools)
            pmap = _pool_map(g, source, chain)
            if not conn.identity:  # the synapse's matrix after the routes' (pools, flatten)
                in_shape = g.shapes[chain[-1]] if chain else g.shapes[source]
                m = wnode.matrix(conn.weight_mant, in_shape).astype(np.int64) @ pmap
                f_m = (wnode.matrix(np.asarray(wnode.weight, dtype=np.float64) * fgain, in_shape)
                       @ pmap.astype(np.float64) / divisor)
                kind = "dense" if wnode.LAVA_DENSE and delay == 0 else "sparse"
            else:  # identity skip of flat spikes, or through a pool that cannot be a kernel
                m = pmap * int(conn.weight_mant)
                f_m = pmap.astype(np.float64) * (fgain / divisor)
                kind = "sparse"
            m, f_m = sp.csr_matrix(m, dtype=np.int64), sp.csr_matrix(f_m, dtype=np.float64)
            m.eliminate_zeros()
            if m.nnz and not np.array_equal(effective_weights(m.data[None, :], conn.weight_bits)[0], m.data):
                raise ValueError(f"link {link_name!r}: overlapping pooling makes weights beyond 8 bits")
            if src_pop == INPUT:  # a dense first layer: its matrix, computed off-chip like the first conv
                kind = "input"
            links.append(Link(link_name, src_pop, name, kind, delay, conn.weight_exp, m, f_m,
                              num_weight_bits=conn.weight_bits, lag=lag if kind == "input" else 0))
        b_float = _bias_float(g, name)
        neuron = node.loihi()
        read = getattr(node, "read", None)
        kind = getattr(node, "neuron_model", "lif")  # a sigma-delta family names its model
        bits = getattr(node, "MESSAGE_BITS", 0)
        if read is not None:  # a netx last layer: a full neuron, read as its v, its spikes or its sigma
            pop = Population(name, g.shapes[name], depth, True, t.scale, du=t.du, dv=t.dv, vth=t.vth,
                             bias_mant=t.bias_mant, bias_exp=t.bias_exp, f_du=neuron.f_du, f_dv=neuron.f_dv,
                             f_vth=neuron.v_threshold, f_bias=b_float, ref_delay=node.ref_delay, read=read,
                             neuron=kind, message_bits=bits)
        elif node.ROLE == "output":  # the readout: its current u is read, it never spikes
            pop = Population(name, g.shapes[name], depth, True, t.scale, du=t.du, dv=4095, vth=READOUT_VTH,
                             bias_mant=t.bias_mant, bias_exp=t.bias_exp, f_du=neuron.f_du, f_dv=1.0, f_vth=1e30,
                             f_bias=b_float * fgain / neuron.f_du)
        else:
            own = getattr(node, "OWN_BIAS", False)  # a netx neuron's bias is on v already, in float units
            pop = Population(name, g.shapes[name], depth, False, t.scale, du=t.du, dv=t.dv, vth=t.vth,
                             bias_mant=t.bias_mant, bias_exp=t.bias_exp, f_du=neuron.f_du, f_dv=neuron.f_dv,
                             f_vth=neuron.v_threshold, f_bias=b_float if own else b_float * fgain / neuron.f_du,
                             ref_delay=getattr(node, "ref_delay", 1), neuron=kind, message_bits=bits,
                             reset=getattr(node, "reset", "zero"))
        pops[name] = pop
    check_recurrent_start(pops, links)
    return DeploymentPlan(g.shapes[g.input_name], q.input_scale, pops, links, dict(q.metadata))


def check_recurrent_start(pops: dict[str, Population], links: list[Link]) -> None:
    """ValueError naming the layer if a recurrent population could spike before its first step.

    A population at depth ``d`` runs ``d`` Lava steps before a sample's first step reaches it; there a
    bias (its own, or one upstream that makes the populations feeding it spike) can make it spike, and a
    spike at the last of those steps would enter its first step through its recurrent link (samples of a
    recurrent network run side by side, never back to back, so only the start matters). Without a bias
    on the way nothing spikes before the input arrives: exact."""
    active: set[str] = set()  # populations that can spike during their warm-up steps
    for name, pop in pops.items():
        feeds = {k.src for k in links if k.dst == name and k.src not in (INPUT, name)}
        if np.any(pop.bias_mant) or feeds & active:
            active.add(name)
        if pop.depth > 0 and name in active and any(k.src == k.dst == name for k in links):
            raise ValueError(f"node {name!r}: a recurrent layer {pop.depth} synapse hops from the input must have "
                             "no bias on the way (its own or upstream): on Lava the bias makes it spike before the "
                             "sample reaches it, and that spike would enter its first step through the recurrent "
                             "connection")


def _bias_float(g: StudentGraph, target: str) -> np.ndarray:
    node = g.nodes[target]
    if getattr(node, "OWN_BIAS", False):  # a netx neuron holds its bias itself (export/nodes/loihi_cuba.py)
        return np.broadcast_to(node.bias, (g.shapes[target][0],)).astype(np.float64)
    total = np.zeros(g.shapes[target][0])
    for src in g.predecessors(target):
        if g.role(src) == "synapse":
            total = total + np.asarray(g.nodes[src].bias, dtype=np.float64)
    return total
