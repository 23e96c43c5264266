"""Node types live in one place (export/nodes/): every type offers what its role needs, the NIR
tables are built from the type list, and the callers dispatch through the nodes' methods — no
``isinstance`` ladder on node classes outside export/nodes/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from htakl_deploy.export import nir_io
from htakl_deploy.export.nodes import FAMILIES, NODE_TYPES, ROLES

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {
    "input": ("out_shape", "run_float", "nir_node", "read_nir"),
    "synapse": ("out_shape", "run_float", "nir_node", "read_nir", "apply", "kernel", "matrix", "fanout",
                "dense_ops", "KIND", "LAVA_DENSE"),
    "route": ("out_shape", "run_float", "run_int", "nir_node", "read_nir", "divisor", "FLATTENS", "matrix",
              "kernel_repeat", "reach", "overlaps"),
    "neuron": ("out_shape", "run_float", "nir_node", "read_nir", "loihi", "int_step"),
    "output": ("out_shape", "run_float", "nir_node", "read_nir", "loihi", "int_step"),
}


@pytest.mark.parametrize("node_type", NODE_TYPES, ids=lambda t: t.__name__)
def test_every_node_type_offers_what_its_role_needs(node_type):
    assert node_type.ROLE in ROLES
    missing = [m for m in NEEDS[node_type.ROLE] if not hasattr(node_type, m)]
    assert not missing, f"{node_type.__name__} ({node_type.ROLE}) lacks {missing}"
    family = getattr(node_type, "FAMILY", None)  # written as a NIR type shared with another family
    assert node_type.NIR_TYPES or family, node_type.__name__
    assert node_type in nir_io.TO_NIR
    for nt in node_type.NIR_TYPES:
        assert nir_io.FROM_NIR[nt].__self__ is node_type  # read by the type's own classmethod
    if family:  # read back by its metadata tag, by its own classmethod
        assert nir_io.FAMILY_READERS[family].__self__ is node_type
    assert set(FAMILIES) <= set(NODE_TYPES)


CALLERS = ("export/graph.py", "export/quantize.py", "export/nir_io.py", "hw/plan.py", "energy/counter.py")


@pytest.mark.parametrize("path", CALLERS)
def test_callers_do_not_dispatch_on_node_classes(path):
    names = "|".join(t.__name__ for t in NODE_TYPES) + "|NeuronNode|WEIGHTED|VIA|NEURONS"
    text = (ROOT / path).read_text()
    hits = re.findall(rf"isinstance\([^)]*\b({names})\b", text)
    assert not hits, f"{path} dispatches on node classes: {hits}"
