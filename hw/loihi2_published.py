"""Intel's published Loihi 2 compiles (hw/targets/published/loihi2_compiles.toml) next to ours.

``published_plan(name)`` builds a deployment plan with a published network's layer shapes and, per
layer, random weights at the synaptic precision netx gives that layer (so no Intel file is
needed); ``compare(mapping, name)`` puts our per-core figures beside the compiler's table, row by
row, in the table's own terms: for a convolution the tile's neurons, for a split dense layer the
mean per core rounded down (the compiler prints 8 neurons and 7,253 synapse words for 100 neurons
on 12 cores), synapse words per core (the mean, rounded down), axons in (the most on a core) and
axon-map entries per core (the mean, rounded down).
"""

from __future__ import annotations

import tomllib
from importlib import resources

import numpy as np
import scipy.sparse as sp

from htakl_deploy.hw.plan import INPUT, DeploymentPlan, Link, Population

COLUMNS = ("cores", "neurons", "synapses", "axon_in", "axon_map")


def load_published() -> dict:
    path = resources.files("htakl_deploy.hw") / "targets" / "published" / "loihi2_compiles.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


def weights_at_precision(shape, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Even mixed-sign integer weights whose netx precision is exactly ``bits`` (the largest
    positive value present, one odd half-value so no common power of two)."""
    half = 2 ** (bits - 1)
    v = rng.integers(-half, half, size=shape)
    flat = v.reshape(-1)
    flat[0], flat[1 % flat.size] = half - 1, -1  # the top of the range, and an odd value
    return 2 * v


def _population(name: str, shape, depth: int, readout: bool) -> Population:
    c = shape[0]
    return Population(name, tuple(shape), depth, readout, 1, 4095, 4095, 1, np.zeros(c, np.int64), 0,
                      1.0, 1.0, 1.0, np.zeros(c))


def published_plan(name: str, seed: int = 0) -> DeploymentPlan:
    """The published network ``name`` as a deployment plan (see the module docstring). A network
    without an input layer gets one fed off-chip, as our plans do: the first published layer's
    source (``input_shape``, or the layer before it) becomes a population of its own."""
    net = load_published()[name]
    rng = np.random.default_rng(seed)
    layers = net["layers"]
    pops: dict[str, Population] = {}
    links: list[Link] = []
    if layers[0]["kind"] == "input":
        src, src_shape = "L0", tuple(layers[0]["shape"])
        first = 1
    else:  # the network's input arrives as spikes: an off-chip fed source population, not compared
        src, src_shape = "source", tuple(net["input_shape"])
        first = 0
    pops[src] = _population(src, src_shape, 0, False)
    c = src_shape[0]
    if len(src_shape) == 3:  # identity currents from off-chip, as the plan's encoding link
        eye = np.eye(c, dtype=np.int64).reshape(c, c, 1, 1) * 2
        links.append(Link("enc", INPUT, src, "input", 0, 0, conv={
            "weight": eye, "f_weight": eye.astype(float), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
            "groups": 1}))
    else:
        eye = sp.identity(c, dtype=np.int64, format="csr") * 2
        links.append(Link("enc", INPUT, src, "input", 0, 0, eye, eye.astype(float)))
    for i, layer in enumerate(layers[first:], start=first):
        name_i, shape = f"L{i}", tuple(layer["shape"])
        readout = i == len(layers) - 1
        if layer["kind"] == "conv":
            k = layer["kernel"]
            w = weights_at_precision((shape[0], src_shape[0], k, k), layer["weight_bits"], rng)
            spec = {"weight": w, "f_weight": w.astype(float), "stride": tuple(layer["stride_xy"][::-1]),
                    "padding": tuple(layer["padding_xy"][::-1]), "dilation": (1, 1), "groups": 1}
            links.append(Link(f"{src}->{name_i}", src, name_i, "conv", 0, 0, conv=spec))
        else:
            m = sp.csr_matrix(weights_at_precision((shape[0], int(np.prod(src_shape))), layer["weight_bits"], rng))
            links.append(Link(f"{src}->{name_i}", src, name_i, "dense", 0, 0, m, m.astype(float)))
        pops[name_i] = _population(name_i, shape, i + 1 - first, readout)
        src, src_shape = name_i, shape
    return DeploymentPlan(tuple(pops[next(iter(pops))].shape), 1.0, pops, links)


def ours(lm, t) -> dict:
    """One of our layers in the table's terms (module docstring)."""
    s = lm.stats
    conv = len(lm.shape) == 3
    return {"cores": lm.cores,
            "neurons": int(s["allocated_neurons"].max()) if conv else int(s["neurons"].mean()),
            "synapses": int(s["bits"].mean() // t.synapse_word_bits),
            "axon_in": int(s["input_axons"].max(initial=0)),
            "axon_map": int(s["output_axons"].mean()),
            "tile": [lm.tiling.cols, lm.tiling.rows, lm.tiling.channels] if conv else None}


def compare(mapping, name: str) -> list[dict]:
    """Per published layer: Intel's table row and ours (same order, input to output)."""
    net = load_published()[name]
    layers = [lm for lm in mapping.layers.values() if lm.name != "source"]
    return [{"layer": lm.name, "kind": pub["kind"], "shape": pub["shape"], "intel": pub["table"],
             "ours": ours(lm, mapping.target)} for pub, lm in zip(net["layers"], layers)]
