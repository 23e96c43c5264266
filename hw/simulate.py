"""``htakl-deploy simulate``: run an exported Lava artefact on a data split, record every spike.

Backends (a table, ``BACKENDS``):

- ``lava-fixed_pt``    lava-nc's ``Loihi2SimCfg`` with the bit-accurate ``fixed_pt`` models;
- ``lava-floating_pt`` the same process graph with Lava's float models and float weights;
- ``emulator``         ``hw.emulator``: the fixed_pt integer maths, vectorised over samples;
- ``torch-float``      the float student (``student_float.nir`` next to the artefact) in
                       PyTorch float32 — the dtype it was trained in — time-step aligned: what
                       training-time tools report (float64 on request: ``float_student_spikes``;
                       bench/torch_float.py measures the two's agreement and speed).

Class decision (all backends, documented in docs/SIMULATE.md): the student's last layer has no
neuron, so there is no output spike count to read; the readout population integrates nothing
and its current ``u`` is read each step — ``logits_t = (u_t + bias)/(64·S)`` — and the class is
the argmax of the logits' mean over the T steps, as in training (``distill.train.predict``).

Outputs in ``OUT`` (default ``RUN_DIR/simulate/<backend>`` for a run's artefact in
``RUN_DIR/export/``, ``FOLDER/simulate/<backend>`` for an artefact in any other folder, e.g.
``MODEL-export/`` of ``simulate MODEL.nir``: one folder per graph; or ``simulate/what-if/…``
beside a recording made there with other settings: ``default_out``), written atomically:
``spikes.h5`` (every population's spikes ``[T, samples, ...]`` in torch layout, the 8-bit input,
labels, predictions; ``energy.spikefile`` format) and ``simulate.json`` (accuracy, wall time,
samples/s, and the agreement with the emulator — spike for spike — and with the float student).

Streaming: the samples are encoded, run, compared and appended to ``spikes.h5``
(``energy.spikefile.SpikeWriter``) ``batch_size`` at a time, so memory is bounded by the batch,
not by the number of samples. ``record`` chooses what the file keeps: "spikes" (every layer's
spikes), "counts" (per neuron and step, summed over samples: enough for the energy counts, not
for NeuroBench's per-sample counts) or a list of layers whose full spikes are kept (counts of
all). A backend is called once per batch (``batch_size``; without it ``BATCH_SIZES`` gives a
backend its own default).

The output folder is claimed (``htakl_deploy.rundir``) while it is written: a second simulate
into the same folder is refused with the first one's pid.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from htakl_deploy.atomic import check_writable_dir, write_json
from htakl_deploy.distill.config import MAX_TIMESTEPS, data_config
from htakl_deploy.distill.data import encode
from htakl_deploy.distill.data.inputfile import Inputs, from_dataset, open_inputs
from htakl_deploy.distill.recipe import load_test
from htakl_deploy.errors import UserError
from htakl_deploy.energy.spikefile import SpikeWriter, parse_record
from htakl_deploy.hw.activity import check_silence
from htakl_deploy.hw.emulator import EmulatorResult, emulate
from htakl_deploy.hw.plan import DeploymentPlan
from htakl_deploy.rundir import claim

ARTEFACT_NAME = "student.lava.npz"


def _lava(precision: str):
    def run(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress) -> EmulatorResult:
        from htakl_deploy.hw.lava_net import run_lava

        return run_lava(plan, x_tb, backend=precision, progress=progress)

    return run


def _emulator(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress, device: str | None = None) -> EmulatorResult:
    result = emulate(plan, x_tb, batch_size=max(1, x_tb.shape[1]), device=device)
    if progress is not None:
        progress(x_tb.shape[1])
    return result


def _torch_float(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress) -> EmulatorResult:
    spikes, logits = float_student_spikes(artefact, x_tb)
    if progress is not None:
        progress(x_tb.shape[1])
    return EmulatorResult(spikes, None, logits, x_tb.astype(np.float32))


BACKENDS: dict[str, Callable[[DeploymentPlan, Path, np.ndarray, Any], EmulatorResult]] = {
    "lava-fixed_pt": _lava("fixed_pt"),
    "lava-floating_pt": _lava("floating_pt"),
    "emulator": _emulator,
    "torch-float": _torch_float,
}
# Samples per backend call when simulate() is given no batch_size (a backend missing here: DEFAULT_BATCH).
# Lava builds and starts its process graph once per call (demo convnet: ~4 s, ResNet-20 ~30 s) and
# then runs the samples back to back, so its batches are large; bounded all the same, so that the
# recordings of a 10,000-image run stream through the SpikeWriter instead of being held at once.
BATCH_SIZES: dict[str, int] = {"lava-fixed_pt": 1000, "lava-floating_pt": 1000}
DEFAULT_BATCH = 64
# Without --batch-size a batch is also bounded by its size: its arrays take about BYTES_PER_NEURON_STEP
# per neuron and step (the emulator's spikes and currents, the float student's values of every node for
# the comparison; a Lava run alone 1 byte: its shared recordings, compared with the emulator and the
# float student in pieces of the emulator's size), within BATCH_BYTES. Long inputs (300-step event
# streams) then run a few samples at a time.
BYTES_PER_NEURON_STEP = 32
BATCH_BYTES = 512 << 20


def default_batch(plan: DeploymentPlan, backend: str, timesteps: int, compare: bool = True) -> int:
    """Samples per backend call without ``--batch-size``: ``BATCH_SIZES`` (else ``DEFAULT_BATCH``),
    fewer where their arrays would pass ``BATCH_BYTES`` (a Lava run's comparisons go in pieces of
    the emulator's size: ``compare=False`` sizes the run alone)."""
    neurons = sum(p.size for p in plan.populations.values())
    alone = backend.startswith("lava") and not compare
    per_sample = timesteps * neurons * (1 if alone else BYTES_PER_NEURON_STEP)
    return int(max(1, min(BATCH_SIZES.get(backend, DEFAULT_BATCH), BATCH_BYTES // max(per_sample, 1))))


def resolve_artefact(path: str | Path) -> Path:
    """A ``student.lava.npz`` file, or a run/export directory holding one."""
    p = Path(path)
    for cand in (p, p / ARTEFACT_NAME, p / "export" / ARTEFACT_NAME):
        if cand.is_file():
            return cand
    raise UserError(f"ARTEFACT {path}: no {ARTEFACT_NAME} there; create it with "
                    f"`htakl-deploy export RUN_DIR --target lava`")


def read_artefact(path: Path) -> DeploymentPlan:
    """Load a Lava artefact with every field checked (``hw.artefact_check``)."""
    from htakl_deploy.hw.artefact_check import read_plan

    return read_plan(path, "ARTEFACT")


def float_plan(path: Path, plan: DeploymentPlan) -> DeploymentPlan:
    """``plan`` (read from the artefact ``path``) with float weights, for Lava's ``floating_pt``
    models: the artefact holds the integer network only (``hw.artefact_format``), so the plan is
    rebuilt from the NIR graphs the export wrote beside it (``export.pipeline.plan_from_nir``) —
    refused unless that is the artefact's integer network."""
    from htakl_deploy.export.pipeline import plan_from_nir

    ref = plan_from_nir(path.parent)
    diff = plan.same_network(ref, floats=False)
    if diff is not None:
        raise UserError(f"ARTEFACT {path}: the NIR graphs beside it are not the network it holds ({diff}); "
                        "re-export with `htakl-deploy export RUN_DIR --target lava`")
    ref.metadata = plan.metadata
    return ref


def test_split(plan: DeploymentPlan, samples: int | None, data_root: str | None):
    """The artefact's test split (a ``distill.data`` data set, images kept as stored, e.g. uint8),
    cut to ``samples`` images, every class in proportion (``ArrayDataset.subset``; default: the
    test images the run was evaluated on)."""
    cfg_dict = plan.metadata.get("config")
    if not cfg_dict:
        raise UserError("ARTEFACT has no data set (exported from a NIR file without --data): give it inputs with "
                        "--input FILE (.npy/.npz/.h5 of [T, B, ...] event frames or [B, ...] static inputs, "
                        "labels optional) or a folder of event recordings")
    cfg = data_config(cfg_dict, "ARTEFACT's embedded config", data_root)  # never its own data folder
    test = load_test(cfg.replace(limit_test=samples or cfg.limit_test))
    if tuple(test.in_shape) != tuple(plan.input_shape):
        raise UserError(f"ARTEFACT: its network takes inputs {tuple(plan.input_shape)}, but its data set "
                        f"{cfg.data!r} has images {tuple(test.in_shape)}")
    return test


def open_samples(plan: DeploymentPlan, input_file: str | Path | None, samples: int | None, timesteps: int | None,
                 data_root: str | None) -> Inputs:
    """What ``simulate`` runs: the user's ``input_file`` (``distill.data.inputfile``; T from the data or
    ``timesteps``), else the artefact's test split (direct encoding over ``timesteps`` or the
    artefact's T); the first ``samples`` of either."""
    t_default = int(plan.metadata.get("timesteps", 4))
    if input_file is not None:
        inputs = open_inputs(input_file, plan.input_shape, timesteps=timesteps, default_timesteps=t_default)
        return inputs.head(samples) if samples else inputs
    return from_dataset(test_split(plan, samples, data_root), timesteps or t_default)


def load_images(plan: DeploymentPlan, samples: int | None, data_root: str | None) -> tuple[torch.Tensor, np.ndarray]:
    """``samples`` test images ``[N, C, H, W]`` (float32 in [0, 1]) of the artefact's data
    set (see ``test_split``) and their labels, not yet encoded."""
    test = test_split(plan, samples, data_root)
    x, y = test.batch(torch.arange(len(test)))
    return x, y.numpy()


def encode_batch(x: torch.Tensor, timesteps: int) -> np.ndarray:
    """Direct encoding ``[T, B, ...]`` float64, as every backend takes it."""
    return encode(x, timesteps, "direct").double().numpy()


def load_samples(plan: DeploymentPlan, samples: int | None, timesteps: int,
                 data_root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` test images of the artefact's data set (``test_split``; default: the test images
    the run was evaluated on), direct-encoded ``[T, B, ...]`` (all at once: small runs)."""
    x, y = load_images(plan, samples, data_root)
    return encode_batch(x, timesteps), y


NETX_FORMAT = "lava-dl-netx"  # plan.metadata['source_format'] of a network read from a netx file
READOUTS = {"current": "argmax over classes of the mean over T of (u + bias)/(64·S), u = readout current",
            "v": "argmax over outputs of the mean over T of v/64, v = the last layer's membrane (a netx network)",
            "spikes": "argmax over outputs of the spike count (the last layer's spikes, a netx network)",
            "sigma": "argmax over outputs of the mean over T of sigma (a netx SDNN network's sigma decoder)"}


def spike_agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    per_layer = {k: float((a[k] == b[k]).mean()) for k in a}
    total = sum(int((a[k] == b[k]).sum()) for k in a) / max(sum(a[k].size for k in a), 1)
    return {"all": total, **per_layer}


class Agreement:
    """``spike_agreement`` accumulated over batches (exact integer counts per layer)."""

    def __init__(self) -> None:
        self.equal: dict[str, int] = {}
        self.size: dict[str, int] = {}

    def add(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
        for k in a:
            self.equal[k] = self.equal.get(k, 0) + int((a[k] == b[k]).sum())
            self.size[k] = self.size.get(k, 0) + int(a[k].size)

    def result(self) -> dict[str, float]:
        total = sum(self.equal.values()) / max(sum(self.size.values()), 1)
        return {"all": total, **{k: self.equal[k] / self.size[k] for k in self.equal}}


def float_student_graph(artefact: Path):
    """The float student (``student_float.nir`` next to the artefact) as a StudentGraph."""
    from htakl_deploy.export.graph import StudentGraph
    from htakl_deploy.export.nir_io import from_nir, read_nir

    path = artefact.parent / "student_float.nir"
    graph = from_nir(read_nir(path)) if path.exists() else None
    if not isinstance(graph, StudentGraph):
        raise UserError(f"{path}: the float student's NIR file is missing or not a float graph; "
                        "re-export with `htakl-deploy export RUN_DIR --target lava`")
    return graph


def float_student_spikes(artefact: Path, x_tb: np.ndarray, graph=None,
                         dtype: torch.dtype = torch.float32) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Spikes and logits (float64 numpy) of the float student (``student_float.nir`` next to the
    artefact), computed in ``dtype``: float32 by default, the dtype the student trains in."""
    from htakl_deploy.export.graph import NeuronNode, run_float

    graph = float_student_graph(artefact) if graph is None else graph
    with torch.no_grad():
        out, vals = run_float(graph, torch.from_numpy(x_tb), dtype=dtype, record=True)
    spikes = {k: vals[k].numpy() > 0.5 for k, node in graph.nodes.items()
              if isinstance(node, NeuronNode) and node.ROLE == "neuron"}  # not a neuron that is the readout
    return spikes, out.numpy().astype(np.float64)


@dataclass
class Tally:
    """What a simulation counts, as exact integers: summed over batches, and over shards
    (``hw.shards``) into the same numbers one process gets."""

    samples: int = 0
    correct: int = 0
    emu_same: int = 0
    float_correct: int = 0
    float_same: int = 0
    readout_identical: bool = True
    wall_s: float = 0.0
    vs_emu: Agreement = field(default_factory=Agreement)
    vs_float: Agreement = field(default_factory=Agreement)

    def merge(self, other: "Tally") -> None:
        for k in ("samples", "correct", "emu_same", "float_correct", "float_same", "wall_s"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.readout_identical &= other.readout_identical
        for mine, theirs in ((self.vs_emu, other.vs_emu), (self.vs_float, other.vs_float)):
            for k in theirs.equal:
                mine.equal[k] = mine.equal.get(k, 0) + theirs.equal[k]
                mine.size[k] = mine.size.get(k, 0) + theirs.size[k]


@dataclass
class Simulation:
    """One simulation, checked and resolved (``prepare``): the artefact, its plan, the inputs and
    every setting; ``run_range`` runs a range of its samples. ``close()`` releases the inputs."""

    path: Path
    plan: DeploymentPlan
    inputs: Inputs
    backend: str
    batch: int
    cmp_batch: int  # samples per comparison with the emulator / float student (bounded memory)
    out: Path
    record: Any
    compare_lava: bool
    f_graph: Any
    device: str | None
    strict: bool
    shown: str  # the artefact as the command named it (files and reports say this)

    @property
    def samples(self) -> int:
        return len(self.inputs)

    @property
    def timesteps(self) -> int:
        return self.inputs.timesteps

    @property
    def readout(self) -> str:
        return READOUTS[self.plan.readout.read]

    def attrs(self, layers) -> dict[str, Any]:
        """The attributes of a spike file of ``layers`` (every shard's and the merged file's alike):
        ``message_bits`` names the recorded layers whose spikes are graded messages."""
        bits = {k: p.message_bits for k, p in self.plan.populations.items() if p.message_bits and k in layers}
        return {"backend": self.backend, "artefact": self.shown, "timesteps": self.timesteps,
                "input_scale": self.plan.input_scale, "readout": self.readout,
                **({"message_bits": json.dumps(bits)} if bits else {})}

    def close(self) -> None:
        self.inputs.close()


def prepare(artefact: str | Path, *, backend: str = "lava-fixed_pt", samples: int | None = None,
            timesteps: int | None = None, out_dir: str | Path | None = None, data_root: str | None = None,
            compare: bool = True, batch_size: int | None = None, record="spikes", device: str | None = None,
            input_file: str | Path | None = None, strict: bool = False) -> Simulation:
    """Check every argument (one ``UserError`` naming the flag) and resolve the simulation."""
    if backend not in BACKENDS:
        raise UserError(f"--backend: got {backend!r}, expected one of {', '.join(BACKENDS)}")
    if samples is not None and samples < 1:
        raise UserError(f"--samples: got {samples}, expected an integer >= 1")
    if timesteps is not None and not 1 <= timesteps <= MAX_TIMESTEPS:
        raise UserError(f"--timesteps: got {timesteps}, expected an integer in 1..{MAX_TIMESTEPS}")
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")
    if data_root is not None and not Path(data_root).is_dir():
        raise UserError(f"--data-root: {data_root} is not a folder")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size: got {batch_size}, expected an integer >= 1")
    if device not in (None, "cpu"):
        if backend != "emulator":
            raise UserError(f"--device {device}: only the emulator backend runs on a device")
        if device != "cuda" or not torch.cuda.is_available():
            raise UserError(f"--device: got {device!r}, expected 'cpu'"
                            + (" or 'cuda'" if torch.cuda.is_available() else " (torch sees no CUDA device here)"))
    path = resolve_artefact(artefact)
    plan = read_artefact(path)
    if backend == "lava-floating_pt":
        plan = float_plan(path, plan)
    names = [n for n, p in plan.populations.items() if not p.readout]
    try:
        record = parse_record(record, names)
    except ValueError as e:
        raise UserError(f"--record: {e}") from None
    inputs = open_samples(plan, input_file, samples, timesteps, data_root)  # converted batch by batch
    try:
        t = inputs.timesteps
        out = Path(out_dir) if out_dir else default_out(own_folder(path, backend), inputs, record)
        check_writable_dir(out, "--out" if out_dir else "ARTEFACT's simulate folder")
        netx = plan.metadata.get("source_format") == NETX_FORMAT  # integers only: no float student to compare with
        f_graph = (float_student_graph(path) if compare and backend != "torch-float" and not netx
                   and (path.parent / "student_float.nir").exists() else None)
    except BaseException:
        inputs.close()
        raise
    batch = batch_size or default_batch(plan, backend, t, compare=False)
    return Simulation(path, plan, inputs, backend, batch, min(batch, default_batch(plan, "emulator", t)), out, record,
                      compare and backend.startswith("lava"), f_graph, device, strict, str(path))


def default_out(own: Path, inputs: Inputs, record) -> Path:
    """``simulate``'s folder when no ``--out`` is given: the run's own recording,
    ``simulate/<backend>/``, unless a recording there was made with other settings (another
    ``--samples``, ``--timesteps``, ``--input`` or ``--record``): this what-if then goes beside it,
    ``simulate/what-if/<backend>-<N>samples-T<T>[-<hash>]/``, never over it."""
    import hashlib

    try:
        prev = json.loads((own / "simulate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return own  # nothing recorded there yet (or unreadable: the writer replaces it)
    settings = json.loads(json.dumps({"samples": len(inputs), "timesteps": inputs.timesteps,
                                      "inputs": inputs.source, "record": record}))
    if isinstance(prev, dict) and all(prev.get(k) == v for k, v in settings.items()):
        return own  # the same settings: the same recording
    name = f"{own.name}-{settings['samples']}samples-T{settings['timesteps']}"
    if isinstance(prev, dict) and (prev.get("inputs"), prev.get("record")) != (settings["inputs"], settings["record"]):
        name += "-" + hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return own.parent / "what-if" / name


def run_range(job: Simulation, start: int, stop: int, spikes_path: Path,
              progress: Callable[[int], None] | None = None) -> tuple[Tally, SpikeWriter]:
    """Samples ``start:stop`` of ``job``'s inputs, ``job.batch`` at a time (batches start at
    ``start``), into a new spike file at ``spikes_path``: the counts and the writer, still open
    (``finish`` closes it; on an error it is aborted here)."""
    plan, path, labels, cmp_batch = job.plan, job.path, job.inputs.labels, job.cmp_batch
    in_dtype = np.uint8 if job.inputs.max_value <= 1 else np.uint16  # event counts c > 1 are 255·c
    tally = Tally()
    writer = None
    try:
        for s0 in range(start, stop, job.batch):
            x_tb = job.inputs.batch(s0, min(s0 + job.batch, stop))
            y = None if labels is None else labels[s0:s0 + x_tb.shape[1]]
            t0 = time.perf_counter()
            in_batch = None if progress is None else (lambda done, s0=s0: progress(s0 - start + done))  # Lava: per chunk
            result = BACKENDS[job.backend](plan, path, x_tb, in_batch,
                                           **({"device": job.device} if job.backend == "emulator" else {}))
            tally.wall_s += time.perf_counter() - t0
            pred = result.logits.mean(0).argmax(-1)
            tally.samples += x_tb.shape[1]
            tally.correct += 0 if y is None else int((pred == y).sum())
            for c0 in range(0, x_tb.shape[1], cmp_batch) if job.compare_lava or job.f_graph is not None else ():
                part = slice(c0, c0 + cmp_batch)  # the comparisons a piece at a time: bounded memory
                got = {k: v[:, part] for k, v in result.spikes.items()}
                if job.compare_lava:
                    emu = emulate(plan, x_tb[:, part], batch_size=cmp_batch)
                    tally.vs_emu.add(got, emu.spikes)
                    tally.emu_same += int((emu.logits.mean(0).argmax(-1) == pred[part]).sum())
                    tally.readout_identical &= bool(np.array_equal(emu.readout_u, result.readout_u[:, part]))
                    del emu
                if job.f_graph is not None:
                    f_spikes, f_logits = float_student_spikes(path, x_tb[:, part], job.f_graph)
                    f_pred = f_logits.mean(0).argmax(-1)
                    tally.float_correct += 0 if y is None else int((f_pred == y[part]).sum())
                    tally.float_same += int((f_pred == pred[part]).sum())
                    tally.vs_float.add(f_spikes, got)
                    del f_spikes
            if writer is None:
                writer = SpikeWriter(spikes_path, layer_shapes={k: v.shape[2:] for k, v in result.spikes.items()},
                                     timesteps=job.timesteps, record=job.record, attrs=job.attrs(result.spikes))
            x_rec = result.input_int if job.backend == "torch-float" else result.input_int.astype(in_dtype)
            # a sigma-delta layer's graded spikes are kept as its messages (payload ≠ 0): what ops count
            layers = {k: v if v.dtype == np.bool_ else v != 0 for k, v in result.spikes.items()}
            writer.append(layers=layers, input=x_rec, labels=y, predictions=pred)
            del result, x_tb
            if progress is not None:
                progress(min(s0 + job.batch, stop) - start)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return tally, writer


def finish(job: Simulation, tally: Tally, writer: SpikeWriter, total_wall_s: float, **extra) -> dict[str, Any]:
    """Check the whole recording for silent layers (``strict``: an error, the file aborted), close
    the spike file and write ``simulate.json`` (returned) from the counts of all the samples."""
    n, labelled = tally.samples, job.inputs.labels is not None
    try:
        counts = {k: int(c.sum()) for k, c in writer.counts.items()}
        silent = check_silence(counts, f"on {n} samples of {job.inputs.source}", job.strict)  # strict: nothing kept
        writer.close()
    except BaseException:
        writer.abort()
        raise
    rep: dict[str, Any] = {
        "backend": job.backend, "artefact": job.shown, "inputs": job.inputs.source, "input_kind": job.inputs.kind,
        "samples": int(n), "timesteps": job.timesteps, "accuracy": tally.correct / n if labelled else None,
        "wall_s": tally.wall_s, "total_wall_s": total_wall_s,
        "samples_per_s": n / tally.wall_s if tally.wall_s > 0 else None, "spikes_file": "spikes.h5",
        "batch_size": job.batch, "record": job.record, "readout": job.readout,
        "firing_rate": {k: float(c.sum()) / c.size / n for k, c in writer.counts.items()},
        "spikes": counts, "warnings": silent, **extra,
    }
    if job.compare_lava:
        rep["agreement"] = {"vs": "emulator", "spike_agreement": tally.vs_emu.result(),
                            "decision_agreement": tally.emu_same / n, "readout_identical": tally.readout_identical}
    if job.f_graph is not None:
        rep["float_student"] = {"accuracy": tally.float_correct / n if labelled else None,
                                "decision_agreement": tally.float_same / n, "spike_agreement": tally.vs_float.result()}
    write_json(job.out / "simulate.json", rep)
    rep["out_dir"] = str(job.out)
    return rep


def simulate(artefact: str | Path, *, backend: str = "lava-fixed_pt", samples: int | None = None,
             timesteps: int | None = None, out_dir: str | Path | None = None, data_root: str | None = None,
             progress: Callable[[int], None] | None = None, compare: bool = True,
             batch_size: int | None = None, record="spikes", device: str | None = None,
             input_file: str | Path | None = None, strict: bool = False, shards: int | None = None,
             ray_address: str | None = None, ray_cpus: int | None = None) -> dict[str, Any]:
    """Run ``backend`` on the artefact's test split or on ``input_file`` (see the module docstring);
    returns the report also written as ``simulate.json``. A layer that never spikes is a warning in
    it (``hw.activity``); with ``strict`` an error, and nothing is written. ``shards`` > 1 splits
    the samples across Ray workers (``hw.shards``: the same files, the same numbers)."""
    if shards is not None and shards < 1:
        raise UserError(f"--shards: got {shards}, expected an integer >= 1")
    job = prepare(artefact, backend=backend, samples=samples, timesteps=timesteps, out_dir=out_dir,
                  data_root=data_root, compare=compare, batch_size=batch_size, record=record, device=device,
                  input_file=input_file, strict=strict)
    # one writer per folder (a second simulate into it is refused with this one's pid); a refused,
    # failed or interrupted run leaves no folder it made (strict silence included)
    held = None
    try:
        held = claim(job.out, "--out" if out_dir else "ARTEFACT's simulate folder").acquire()
        if callable(getattr(progress, "set_total", None)):
            progress.set_total(job.samples)  # a bar that did not know the sample count can show an ETA
        if shards is not None and shards > 1:
            from htakl_deploy.hw.shards import simulate_sharded

            report = simulate_sharded(job, shards, address=ray_address, cpus=ray_cpus, data_root=data_root,
                                      input_file=input_file, progress=progress)
        else:
            t_start = time.perf_counter()
            tally, writer = run_range(job, 0, job.samples, job.out / "spikes.h5", progress)
            report = finish(job, tally, writer, time.perf_counter() - t_start)
    except BaseException:
        if held is not None:
            held.release(failed=True)
        raise
    finally:
        job.close()
    held.release()
    return report


def own_folder(artefact: Path, backend: str) -> Path:
    """The recording's own folder: ``RUN_DIR/simulate/<backend>`` for ``RUN_DIR/export/student.lava.npz``;
    ``FOLDER/simulate/<backend>`` for an artefact in any other folder (``MODEL-export/`` of
    ``simulate MODEL.nir``: one folder per graph)."""
    folder = Path(artefact).parent
    return (folder.parent if folder.name == "export" else folder) / "simulate" / backend
