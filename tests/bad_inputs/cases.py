"""The bad-input table: every case is one user mistake (or one hostile file) and the words the
one error line must contain. Grouped by subcommand; ``CASES`` is the whole list."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np

from .harness import MARKER, Case, tmpfs

# cheap settings so that a case wrongly accepted trains for seconds, not minutes
QUICK = ("--no-progress", "--epochs", "1", "--teacher-epochs", "1", "--limit-train", "64", "--limit-test", "8",
         "--batch-size", "32", "--out-dir", "runs")
RANDOM = bytes(random.Random(16).randrange(256) for _ in range(4096))


# ------------------------------------------------------------------ file planting helpers
def put(name: str, data: bytes | str):
    def setup(ws: Path) -> None:
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def mkdir(name: str):
    return lambda ws: (ws / name).mkdir(parents=True, exist_ok=True)


def chain(*setups):
    def setup(ws: Path) -> None:
        for s in setups:
            s(ws)
    return setup


class Payload:
    """Unpickling this creates ws/PAYLOAD_RAN: proof that data ran code."""

    def __init__(self, ws: Path) -> None:
        self.target = str(ws / MARKER)

    def __reduce__(self):
        return (open, (self.target, "w"))


def pickle_file(name: str, make):
    def setup(ws: Path) -> None:
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(pickle.dumps(make(ws), protocol=2))
    return setup


def truncated(src: str, name: str, frac: float = 0.5):
    def setup(ws: Path) -> None:
        data = (ws / src).read_bytes()
        (ws / name).write_bytes(data[: int(len(data) * frac)])
    return setup


def ckpt_edit(src: str, name: str, edit):
    """Load the fixture checkpoint ``src`` (safely), change it, save it as ``name``."""
    def setup(ws: Path) -> None:
        import torch

        ck = torch.load(ws / src, map_location="cpu", weights_only=True)
        edit(ck, ws)
        torch.save(ck, ws / name)
    return setup


def nan_first_weight(value):
    def edit(ck, ws):
        key = next(k for k in ck["model"] if k.endswith("weight"))
        ck["model"][key] = ck["model"][key].clone()
        ck["model"][key].view(-1)[0] = value
    return edit


def npz_edit(edit, name: str = "run/export/student.lava.npz", compressed: bool = False):
    """Rewrite the fixture's Lava artefact: ``edit(header, arrays)`` changes it in place."""
    def setup(ws: Path) -> None:
        path = ws / "run/export/student.lava.npz"
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("header").tobytes())
        edit(header, arrays, ws)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        out = ws / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return setup


def npz_member(member: str, make, claim_bytes: int | None = None):
    """Rewrite one ``.npy`` member of the fixture's artefact byte for byte (``make(old bytes)``),
    or make the zip's central directory claim ``claim_bytes`` for it (a size past the file's end)."""
    import struct
    import zipfile

    def setup(ws: Path) -> None:
        path = ws / "run/export/student.lava.npz"
        name = f"{member}.npy"
        if make is not None:
            with zipfile.ZipFile(path) as z:
                items = {i.filename: z.read(i) for i in z.infolist()}
            items[name] = make(items[name])
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
                for n, b in items.items():
                    z.writestr(n, b)
        if claim_bytes is not None:  # the central directory entry: sizes at +20 (compressed), +24
            data = bytearray(path.read_bytes())
            at = data.index(b"PK\x01\x02")
            while data[at + 46:at + 46 + len(name)] != name.encode():
                at = data.index(b"PK\x01\x02", at + 4)
            data[at + 20:at + 28] = struct.pack("<II", claim_bytes, claim_bytes)
            path.write_bytes(bytes(data))
    return setup


def _npy_claiming(old: bytes, shape: tuple) -> bytes:
    """An ``.npy`` member whose header declares ``shape`` over the old member's data."""
    import io

    from numpy.lib import format as npy

    from htakl_deploy.readers import npy_header

    _, _, dtype, offset = npy_header(io.BytesIO(old))
    head = io.BytesIO()
    npy.write_array_header_1_0(head, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return head.getvalue() + old[offset:]  # the header written with its magic


def _set_first(a: np.ndarray, value) -> np.ndarray:
    a.reshape(-1)[0] = value
    return a


def _as_csr(h: dict, a: dict, i: int) -> dict:
    """Link ``i``'s matrix stored as CSR (the layout a sparse matrix gets); returns ``a``."""
    import scipy.sparse as sp

    m = h["links"][i]["matrix"]
    if m["layout"] == "dense":
        csr = sp.csr_matrix(a.pop(f"link{i}.m"))
        shift = h["int_shift"].pop(f"link{i}.m", None)
        a[f"link{i}.m.data"], a[f"link{i}.m.indices"], a[f"link{i}.m.indptr"] = csr.data, csr.indices, csr.indptr
        if shift:
            h["int_shift"][f"link{i}.m.data"] = shift
        m["layout"] = "csr"
    return a


def _with_float_weights(h: dict, a: dict) -> dict:
    """The artefact with float weights (as the Lava worker's floating_pt channel writes them); returns ``a``."""
    h["float_weights"] = True
    for i, link in enumerate(h["links"]):
        if "conv" in link:
            a[f"link{i}.f_weight"] = a[f"link{i}.weight"].astype(np.float64)
        else:
            _as_csr(h, a, i)
            link["f_matrix"] = dict(link["matrix"])
            for part in ("data", "indices", "indptr"):
                a[f"link{i}.f.{part}"] = a[f"link{i}.m.{part}"].astype(np.float64 if part == "data" else np.int32)
    return a


def h5_edit(path: str, edit):
    def setup(ws: Path) -> None:
        import h5py

        with h5py.File(ws / path, "r+") as f:
            edit(f, ws)
    return setup


def cfg_edit(edit):
    """Change the embedded training config of the Lava artefact."""
    return npz_edit(lambda h, a, ws: edit(h["metadata"]["config"], ws))


def json_edit(path: str, edit):
    def setup(ws: Path) -> None:
        p = ws / path
        d = json.loads(p.read_text())
        edit(d, ws)
        p.write_text(json.dumps(d))
    return setup


def cifar_tree(batch_content, bad: str = "data_batch_1", folder: str = "cifar-10-batches-py"):
    """A CIFAR python-version folder of tiny valid batches, with ``bad`` replaced."""
    def setup(ws: Path) -> None:
        root = ws / "cifar" / folder
        root.mkdir(parents=True, exist_ok=True)
        label_key = b"labels" if "10" in folder.split("-")[1] else b"fine_labels"
        good = {b"data": np.zeros((4, 3072), np.uint8), label_key: [0, 1, 2, 3]}
        names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if label_key == b"labels"
                 else ["train", "test"])
        for name in names:
            obj = batch_content(ws) if name == bad else good
            data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            (root / name).write_bytes(data)
    return setup


def fashion_tree(folder: str):
    """A valid Fashion-MNIST folder (``test_data.make_fashion``: the four idx files, 28×28 images),
    for a case that needs the data set there whether or not this machine has it installed."""
    def setup(ws: Path) -> None:
        from test_data import make_fashion

        (ws / folder).mkdir(parents=True, exist_ok=True)
        make_fashion(ws / folder, n_train=128, n_test=4)  # more training images than the run's batch size
    return setup


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def image_folder(classes: dict[str, int], ext: str = ".png", content: bytes | None = None):
    def setup(ws: Path) -> None:
        from PIL import Image

        for cls, n in classes.items():
            d = ws / "imgs" / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if content is None:
                    Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(d / f"{i}{ext}")
                else:
                    (d / f"{i}{ext}").write_bytes(content)
    return setup


# ------------------------------------------------------------------ distill / train-teacher / run
#: train-teacher's own spelling of QUICK (its --epochs is the teacher's; it has no --teacher-epochs)
TEACHER_QUICK = tuple(a for i, a in enumerate(QUICK) if "--teacher-epochs" not in QUICK[max(i - 1, 0):i + 1])


def distill(*args, cmd="distill"):
    return (cmd, *(TEACHER_QUICK if cmd == "train-teacher" else QUICK), *args)


INT_FLAGS = ("timesteps", "epochs", "teacher-epochs", "batch-size", "limit-train", "limit-test", "seed",
             "checkpoint-every")
FLOAT_FLAGS = ("lr", "momentum", "weight-decay", "neuron-tau", "v-threshold", "temperature", "alpha", "delta",
               "head-weight", "nld-lambda", "nld-temperature", "samd-temperature", "ckdsnn-beta", "ckdsnn-gamma",
               "seal-alpha", "seal-beta", "seal-temperature", "kdsnn-feature-weight")
CHOICE_FLAGS = {"data": "mnist", "model": "resnet50", "method": "hinton", "encoding": "latency",
                "schedule": "step", "student-average": "median", "samd-cam-class": "random",
                "device": "tpu"}

CASES: list[Case] = []


def add(id_, argv, expect, setup=None):
    needs_run = setup is not None or any("{" in a for a in argv)  # pure flag cases need no files
    CASES.append(Case(id_, tuple(argv), expect, setup, needs_run))


# flags of the wrong type (argparse) and out of range (the config dataclass)
for f in INT_FLAGS:
    add(f"distill-{f}-not-int", distill(f"--{f}", "1.5"), f"--{f}")
    add(f"distill-{f}-word", distill(f"--{f}", "many"), f"--{f}")
for f in FLOAT_FLAGS:
    add(f"distill-{f}-nan", distill(f"--{f}", "nan"), f"--{f}")
    add(f"distill-{f}-inf", distill(f"--{f}", "inf"), f"--{f}")
    add(f"distill-{f}-negative", distill(f"--{f}", "-1"), f"--{f}")
    add(f"distill-{f}-word", distill(f"--{f}", "high"), f"--{f}")
for f, v in CHOICE_FLAGS.items():
    add(f"distill-{f}-unknown", distill(f"--{f}", v), f"--{f}")
for f in ("timesteps", "epochs", "teacher-epochs", "batch-size", "limit-train", "limit-test"):
    add(f"distill-{f}-zero", distill(f"--{f}", "0"), f"--{f}")
add("distill-kdsnn-stage-unknown", distill("--method", "kdsnn", "--kdsnn-stage", "stage9"), "--kdsnn-stage")
add("distill-seed-negative", distill("--seed", "-1"), "--seed")
add("distill-seed-huge", distill("--seed", str(2**70)), "--seed: got 1180591620717411303424, expected an integer in 0..4294967295")
add("distill-timesteps-huge", distill("--timesteps", "1000000000"), "--timesteps")
add("distill-epochs-huge", distill("--epochs", str(10**12)), "--epochs")
add("distill-batch-huge", distill("--batch-size", str(2**40)), "--batch-size")
add("distill-checkpoint-every-negative", distill("--checkpoint-every", "-5"), "--checkpoint-every")
add("distill-alpha-above-1", distill("--alpha", "1.5"), "--alpha")
add("distill-delta-above-1", distill("--delta", "2"), "--delta")
add("distill-neuron-tau-1", distill("--neuron-tau", "1"), "--neuron-tau")
add("distill-device-cuda-bad-index", distill("--device", "cuda:x"), "--device")
add("distill-device-cuda-negative", distill("--device", "cuda:-1"), "--device")
add("distill-unknown-flag", distill("--learning-rate", "0.1"), "--learning-rate")
add("distill-stray-positional", distill("extra"), "extra")
add("distill-flag-without-value", ("distill", "--lr"), "--lr")
add("teacher-unknown-flag", ("train-teacher", "--resum", "x"), "--resum")
add("no-command", (), "command")
add("unknown-command", ("distil",), "distil")
# run names and output folders
add("distill-run-name-dotdot", distill("--run-name", "../escape"), "--run-name")
add("distill-run-name-slash", distill("--run-name", "a/b"), "--run-name")
add("distill-run-name-absolute", distill("--run-name", "/tmp/x"), "--run-name")
add("distill-run-name-empty", distill("--run-name", ""), "--run-name")
add("distill-run-name-dot", distill("--run-name", "."), "--run-name")
add("distill-run-name-dotdot-only", distill("--run-name", ".."), "--run-name")
add("distill-run-name-newline", distill("--run-name", "a\nb"), "--run-name")
add("distill-out-dir-is-file", distill("--out-dir", "afile"), "--out-dir", put("afile", "x"))
add("distill-out-dir-under-file", distill("--out-dir", "afile/sub"), "--out-dir", put("afile", "x"))
add("distill-out-dir-empty", distill("--out-dir", ""), "--out-dir")
add("distill-existing-run", distill("--run-name", "run", "--out-dir", "{ws}"), "already holds a run")
# teacher checkpoints
add("distill-teacher-missing", distill("--teacher", "nope.pt"), "nope.pt")
add("distill-teacher-empty-dir", distill("--teacher", "emptydir"), "emptydir", mkdir("emptydir"))
add("distill-teacher-text", distill("--teacher", "t.pt"), "not a readable checkpoint", put("t.pt", "hello teacher\n"))
add("distill-teacher-random-bytes", distill("--teacher", "t.pt"), "not a readable checkpoint", put("t.pt", RANDOM))
add("distill-teacher-empty-file", distill("--teacher", "t.pt"), "not a readable checkpoint", put("t.pt", b""))
add("distill-teacher-truncated", distill("--teacher", "t.pt"), "not a readable checkpoint",
    truncated("run/teacher/last.pt", "t.pt"))
add("distill-teacher-pickle-payload", distill("--teacher", "t.pt"), "not a readable checkpoint",
    pickle_file("t.pt", lambda ws: {"format": "htakl-deploy/checkpoint", "x": Payload(ws)}))
add("distill-teacher-torch-payload", distill("--teacher", "t.pt"), "not a readable checkpoint",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.update(evil=Payload(ws))))
add("distill-teacher-is-student", distill("--teacher", "{ckpt}"), "student")
add("distill-teacher-nan", distill("--teacher", "t.pt"), "NaN", ckpt_edit("run/teacher/last.pt", "t.pt",
                                                                        nan_first_weight(float("nan"))))
add("distill-teacher-inf", distill("--teacher", "t.pt"), "inf", ckpt_edit("run/teacher/last.pt", "t.pt",
                                                                        nan_first_weight(float("inf"))))
add("distill-teacher-no-header", distill("--teacher", "t.pt"), "not an htakl-deploy checkpoint",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.pop("format")))
add("distill-teacher-version-9", distill("--teacher", "t.pt"), "version",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.update(version=9)))
add("distill-teacher-version-string", distill("--teacher", "t.pt"), "version",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.update(version="1")))
add("distill-teacher-unknown-arch", distill("--teacher", "t.pt"), "t.pt",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck["model_spec"].update(arch="os.system")))
add("distill-teacher-spec-extra-key", distill("--teacher", "t.pt"), "t.pt",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck["model_spec"].update(evil=1)))
add("distill-teacher-spec-not-dict", distill("--teacher", "t.pt"), "t.pt",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.update(model_spec=[1, 2])))
add("distill-teacher-other-images", distill("--teacher", "t.pt"), "images",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck["model_spec"].update(in_shape=[1, 28, 28])))
add("distill-teacher-other-arch", distill("--teacher", "t.pt"), "t.pt",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck["model_spec"].update(arch="resnet20")))
add("distill-teacher-missing-tensor", distill("--teacher", "t.pt"), "is missing",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck["model"].pop(next(iter(ck["model"])))))
add("distill-teacher-wrong-shape", distill("--teacher", "t.pt"), "has shape",
    ckpt_edit("run/teacher/last.pt", "t.pt",
              lambda ck, ws: ck["model"].update({k: v[:1] for k, v in list(ck["model"].items())[:1]})))
add("distill-teacher-model-not-dict", distill("--teacher", "t.pt"), "t.pt",
    ckpt_edit("run/teacher/last.pt", "t.pt", lambda ck, ws: ck.update(model="weights")))
add("distill-teacher-is-npz", distill("--teacher", "{npz}"), "not a readable checkpoint")
add("distill-teacher-is-nir", distill("--teacher", "{qnir}"), "not a readable checkpoint")
add("teacher-flag-on-train-teacher", ("train-teacher", *TEACHER_QUICK, "--teacher-epochs", "0"),
    "here the teacher's epochs are set with --epochs")
add("student-flag-on-train-teacher", ("train-teacher", *TEACHER_QUICK, "--method", "kd"), "student's training")
add("student-switch-on-train-teacher", ("train-teacher", *TEACHER_QUICK, "--no-tau-squared"), "student's training")
# config files
add("config-missing", distill("--config", "nope.toml"), "nope.toml")
add("config-is-dir", distill("--config", "c.toml"), "directory", mkdir("c.toml"))
add("config-txt", distill("--config", "c.txt"), "c.txt", put("c.txt", "lr = 0.1\n"))
add("config-not-utf8", distill("--config", "c.toml"), "UTF-8", put("c.toml", b"method = '\xff\xfe'\n"))
add("config-binary", distill("--config", "c.yaml"), "c.yaml", put("c.yaml", RANDOM))
add("config-toml-syntax", distill("--config", "c.toml"), "not valid TOML", put("c.toml", "lr = = 1\n"))
add("config-yaml-syntax", distill("--config", "c.yaml"), "not valid YAML", put("c.yaml", "lr: [1,\n"))
add("config-yaml-python-tag", distill("--config", "c.yaml"), "c.yaml",
    put("c.yaml", "lr: !!python/object/apply:os.system ['touch PAYLOAD_RAN']\n"))
add("config-yaml-list", distill("--config", "c.yaml"), "table", put("c.yaml", "- lr\n- 0.1\n"))
add("config-yaml-scalar", distill("--config", "c.yaml"), "table", put("c.yaml", "hello\n"))
add("config-unknown-key", distill("--config", "c.toml"), "learning_rate", put("c.toml", "learning_rate = 0.1\n"))
add("config-bool-for-int", distill("--config", "c.toml"), "checkpoint_every", put("c.toml", "checkpoint_every = true\n"))
add("config-bool-for-float", distill("--config", "c.toml"), "lr", put("c.toml", "lr = true\n"))
add("config-float-for-int", distill("--config", "c.toml"), "timesteps", put("c.toml", "timesteps = 2.5\n"))
add("config-string-for-float", distill("--config", "c.toml"), "lr", put("c.toml", "lr = \"0.1\"\n"))
add("config-string-for-int", distill("--config", "c.toml"), "seed", put("c.toml", "seed = \"7\"\n"))
add("config-list-for-str", distill("--config", "c.toml"), "method", put("c.toml", "method = [\"kd\"]\n"))
add("config-table-for-str", distill("--config", "c.toml"), "data", put("c.toml", "[data]\nname = 'digits'\n"))
add("config-int-for-str", distill("--config", "c.toml"), "run_name", put("c.toml", "run_name = 5\n"))
add("config-int-for-data-root", distill("--config", "c.yaml"), "data_root", put("c.yaml", "data_root: 5\n"))
add("config-int-for-teacher", distill("--config", "c.yaml"), "teacher", put("c.yaml", "teacher: 5\n"))
add("config-string-for-bool", distill("--config", "c.toml"), "deterministic",
    put("c.toml", "deterministic = \"yes\"\n"))
add("config-int-for-bool", distill("--config", "c.yaml"), "tau_squared", put("c.yaml", "tau_squared: 2\n"))
add("config-null-method", distill("--config", "c.yaml"), "method", put("c.yaml", "method: null\n"))
add("config-huge-seed", distill("--config", "c.toml"), "seed", put("c.toml", f"seed = {2**63 - 1}\n"))
add("config-nan-lr", distill("--config", "c.toml"), "lr", put("c.toml", "lr = nan\n"))
add("config-inf-alpha", distill("--config", "c.toml"), "alpha", put("c.toml", "alpha = inf\n"))
add("config-negative-timesteps", distill("--config", "c.yaml"), "timesteps", put("c.yaml", "timesteps: -4\n"))
add("config-run-name-escape", distill("--config", "c.yaml"), "run_name", put("c.yaml", "run_name: ../../x\n"))
add("config-yaml-anchor-bomb", distill("--config", "c.yaml"), "method",
    put("c.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nmethod: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"))
add("config-duplicate-key-toml", distill("--config", "c.toml"), "not valid TOML", put("c.toml", "lr = 1\nlr = 2\n"))
add("config-dash-and-underscore", distill("--config", "c.yaml"), "batch",
    put("c.yaml", "batch-size: 16\nbatch_size: 32\n"))
add("config-empty-name-key", distill("--config", "c.yaml"), "c.yaml", put("c.yaml", "? [1, 2]\n: 3\n"))
# data sets
add("data-fmnist-root-missing", distill("--data", "fashion-mnist", "--data-root", "nowhere"), "nowhere")
add("data-fmnist-root-is-file", distill("--data", "fashion-mnist", "--data-root", "f"), "f", put("f", "x"))
add("data-fmnist-idx-garbage", distill("--data", "fashion-mnist", "--data-root", "fm"), "fm",
    chain(*(put(f"fm/{n}", RANDOM) for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))))
add("data-cifar-no-root", distill("--data", "cifar10"), "--data-root")
add("data-cifar-missing-files", distill("--data", "cifar10", "--data-root", "cifar"), "missing",
    mkdir("cifar/cifar-10-batches-py"))
add("data-cifar-pickle-payload", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": Payload(ws), b"labels": [0]}))
add("data-cifar-pickle-global", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: pickle.dumps({b"data": Path("x"), b"labels": [0]}, protocol=2)))
add("data-cifar-random-bytes", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: RANDOM))
add("data-cifar-empty-file", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: b""))
add("data-cifar-truncated", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]})[:200]))
add("data-cifar-not-dict", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: [1, 2, 3]))
add("data-cifar-wrong-dtype", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": np.zeros((4, 3072), np.float64), b"labels": [0, 1, 2, 3]}))
add("data-cifar-wrong-width", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}))
add("data-cifar-label-range", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 99]}))
add("data-cifar-label-count", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}))
add("data-cifar-object-array", distill("--data", "cifar10", "--data-root", "cifar"), "data_batch_1",
    cifar_tree(lambda ws: {b"data": np.array([Payload(ws)] * 4, dtype=object), b"labels": [0, 1, 2, 3]}))
add("data-cifar100-payload", distill("--data", "cifar100", "--data-root", "cifar"), "train",
    cifar_tree(lambda ws: {b"data": Payload(ws), b"fine_labels": [0]}, bad="train", folder="cifar-100-python"))
add("data-image-folder-missing", distill("--data", "image-folder", "--data-root", "imgs"), "imgs")
add("data-image-folder-one-class", distill("--data", "image-folder", "--data-root", "imgs"), "class",
    image_folder({"only": 20}))
add("data-image-folder-no-classes", distill("--data", "image-folder", "--data-root", "imgs"), "imgs",
    mkdir("imgs"))
add("data-image-folder-empty-class", distill("--data", "image-folder", "--data-root", "imgs"), "b",
    chain(image_folder({"a": 10}), mkdir("imgs/b")))
add("data-image-folder-garbage-png", distill("--data", "image-folder", "--data-root", "imgs"), "cannot read image",
    image_folder({"a": 3, "b": 3}, content=RANDOM))
add("data-image-folder-bomb", distill("--data", "image-folder", "--data-root", "imgs"), "cannot read image",
    image_folder({"a": 3, "b": 3}, content=png_header_only(30000, 30000)))
add("data-image-folder-is-file", distill("--data", "image-folder", "--data-root", "imgs"), "imgs", put("imgs", "x"))
add("data-digits-one-class-limit", distill("--limit-train", "1", "--batch-size", "1"), "class")
add("data-root-for-digits", distill("--data-root", "somewhere"), "--data-root")
add("data-batch-bigger-than-set", distill("--batch-size", "5000", "--limit-train", "64"), "--batch-size")
add("data-model-too-big", distill("--model", "vgg16"), "vgg16")
# resume
add("resume-missing", ("distill", "--resume", "nowhere"), "nowhere")
add("resume-file", ("distill", "--resume", "{ckpt}"), "last.pt")
add("resume-no-config", ("distill", "--resume", "d"), "config.json", mkdir("d"))
add("resume-config-garbage", ("distill", "--resume", "{run}"), "config.json", put("run/config.json", "{oops"))
add("resume-config-binary", ("distill", "--resume", "{run}"), "config.json", put("run/config.json", RANDOM))
add("resume-config-list", ("distill", "--resume", "{run}"), "config.json", put("run/config.json", "[1, 2]"))
add("resume-config-unknown-key", ("distill", "--resume", "{run}"), "config.json",
    json_edit("run/config.json", lambda d, ws: d.update(evil=1)))
add("resume-config-bool-epochs", ("distill", "--resume", "{run}"), "epochs",
    json_edit("run/config.json", lambda d, ws: d.update(epochs=True)))
add("resume-config-nan-lr", ("distill", "--resume", "{run}"), "lr", put("run/config.json", json.dumps(
    {"teacher_only": False, "lr": float("nan")})))
add("resume-config-bad-method", ("distill", "--resume", "{run}"), "method",
    json_edit("run/config.json", lambda d, ws: d.update(method="evil")))
add("resume-config-run-name-escape", ("distill", "--resume", "{run}"), "run_name",
    json_edit("run/config.json", lambda d, ws: d.update(run_name="../../x")))
add("resume-with-flags", ("distill", "--resume", "{run}", "--lr", "0.5"), "--lr")
add("resume-with-config", ("distill", "--resume", "{run}", "--config", "c.toml"), "--config", put("c.toml", ""))
add("resume-last-corrupt", ("distill", "--resume", "{run}"), "last.pt",
    chain(put("run/student/last.pt", RANDOM), lambda ws: (ws / "run/student/done.json").unlink()))
# the same config checks on train-teacher and run
for cmd in ("train-teacher", "run"):
    extra = ("--no-lava",) if cmd == "run" else ()
    add(f"{cmd}-seed-negative", distill("--seed", "-1", *extra, cmd=cmd), "--seed")
    add(f"{cmd}-lr-nan", distill("--lr", "nan", *extra, cmd=cmd), "--lr")
    add(f"{cmd}-timesteps-zero", distill("--timesteps", "0", *extra, cmd=cmd), "--timesteps")
    add(f"{cmd}-run-name-escape", distill("--run-name", "../x", *extra, cmd=cmd), "--run-name")
    add(f"{cmd}-data-unknown", distill("--data", "imagenet", *extra, cmd=cmd), "--data")
    add(f"{cmd}-config-not-utf8", distill("--config", "c.yaml", *extra, cmd=cmd), "UTF-8", put("c.yaml", b"\xff\xfe"))
    add(f"{cmd}-out-dir-file", distill("--out-dir", "f", *extra, cmd=cmd), "--out-dir", put("f", "x"))
    add(f"{cmd}-resume-missing", (cmd, "--resume", "nowhere"), "nowhere")
add("run-lava-samples-zero", distill("--lava-samples", "0", cmd="run"), "--lava-samples")
add("run-lava-samples-word", distill("--lava-samples", "all", cmd="run"), "--lava-samples")
add("run-preset-unknown", distill("--preset", "tpu", "--no-lava", cmd="run"), "--preset")
add("run-preset-path", distill("--preset", "../../etc/passwd", "--no-lava", cmd="run"), "--preset")
add("run-teacher-garbage", distill("--teacher", "t.pt", "--no-lava", cmd="run"), "not a readable checkpoint",
    put("t.pt", RANDOM))

# ------------------------------------------------------------------ export
add("export-missing", ("export", "nope"), "nope")
add("export-no-positional", ("export",), "checkpoint")
add("export-dir-not-run", ("export", "d"), "d", mkdir("d"))
add("export-text", ("export", "s.pt"), "not a readable checkpoint", put("s.pt", "a student\n"))
add("export-random-bytes", ("export", "s.pt"), "not a readable checkpoint", put("s.pt", RANDOM))
add("export-empty-file", ("export", "s.pt"), "not a readable checkpoint", put("s.pt", b""))
add("export-truncated", ("export", "s.pt"), "not a readable checkpoint", truncated("run/student/last.pt", "s.pt"))
add("export-truncated-90", ("export", "s.pt"), "not a readable checkpoint",
    truncated("run/student/last.pt", "s.pt", 0.9))
add("export-pickle-payload", ("export", "s.pt"), "not a readable checkpoint",
    pickle_file("s.pt", lambda ws: Payload(ws)))
add("export-torch-payload", ("export", "s.pt"), "not a readable checkpoint",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck.update(evil=Payload(ws))))
add("export-teacher-as-student", ("export", "{teacher}"), "teacher")
add("export-nan-weight", ("export", "s.pt"), "NaN", ckpt_edit("run/student/last.pt", "s.pt",
                                                               nan_first_weight(float("nan"))))
add("export-inf-weight", ("export", "s.pt"), "inf", ckpt_edit("run/student/last.pt", "s.pt",
                                                               nan_first_weight(float("-inf"))))
add("export-no-config", ("export", "s.pt"), "config", ckpt_edit("run/student/last.pt", "s.pt",
                                                                 lambda ck, ws: ck.pop("config")))
add("export-config-bad-value", ("export", "s.pt"), "timesteps",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck["config"].update(timesteps=0)))
add("export-config-not-dict", ("export", "s.pt"), "config",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck.update(config="digits")))
add("export-config-data-root", ("export", "s.pt"), "data",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck["config"].update(
        data="image-folder", data_root=str(ws / "elsewhere"))))
add("export-spec-arch-unknown", ("export", "s.pt"), "s.pt",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck["model_spec"].update(arch="evil")))
add("export-spec-spiking-false", ("export", "s.pt"), "s.pt",
    ckpt_edit("run/student/last.pt", "s.pt", lambda ck, ws: ck["model_spec"].update(spiking=False)))
add("export-target-unknown", ("export", "{run}", "--target", "tflite"), "--target")
add("export-timesteps-zero", ("export", "{run}", "--timesteps", "0"), "--timesteps")
add("export-timesteps-huge", ("export", "{run}", "--timesteps", "1000000000"), "--timesteps")
add("export-timesteps-word", ("export", "{run}", "--timesteps", "four"), "--timesteps")
add("export-samples-zero", ("export", "{run}", "--samples", "0"), "--samples")
add("export-samples-negative", ("export", "{run}", "--samples", "-3"), "--samples")
add("export-lava-check-negative", ("export", "{run}", "--lava-check", "-1"), "--lava-check")
add("export-out-is-file", ("export", "{run}", "--out", "f"), "--out", put("f", "x"))
add("export-out-under-file", ("export", "{run}", "--out", "f/sub"), "--out", put("f", "x"))
add("export-data-root-missing", ("export", "{run}", "--data-root", "nowhere"), "--data-root")
add("export-run-student-missing", ("export", "{run}"), "student",
    lambda ws: [(ws / "run/student" / n).unlink() for n in ("last.pt", "best.pt")])
add("export-run-student-is-dir", ("export", "{run}"), "last.pt",
    lambda ws: ((ws / "run/student/last.pt").unlink(), (ws / "run/student/last.pt").mkdir()))
add("export-unknown-flag", ("export", "{run}", "--format", "nir"), "--format")

# ------------------------------------------------------------------ simulate
add("sim-missing", ("simulate", "nope"), "nope")
add("sim-no-positional", ("simulate",), "artefact")
add("sim-dir-without-artefact", ("simulate", "d"), "student.lava.npz", mkdir("d"))
add("sim-text", ("simulate", "a.npz"), "not a readable Lava artefact", put("a.npz", "text\n"))
add("sim-random-bytes", ("simulate", "a.npz"), "not a readable Lava artefact", put("a.npz", RANDOM))
add("sim-empty", ("simulate", "a.npz"), "not a readable Lava artefact", put("a.npz", b""))
add("sim-truncated", ("simulate", "a.npz"), "not a readable Lava artefact",
    truncated("run/export/student.lava.npz", "a.npz"))
add("sim-checkpoint-as-artefact", ("simulate", "{ckpt}"), "not a readable Lava artefact")
add("sim-object-array", ("simulate", "a.npz"), "a.npz",
    lambda ws: np.savez(ws / "a.npz", header=np.array([Payload(ws)], dtype=object)))
add("sim-no-header", ("simulate", "a.npz"), "header", lambda ws: np.savez(ws / "a.npz", x=np.zeros(3)))
add("sim-header-not-json", ("simulate", "a.npz"), "header",
    lambda ws: np.savez(ws / "a.npz", header=np.frombuffer(b"{not json", np.uint8)))
add("sim-header-not-utf8", ("simulate", "a.npz"), "header",
    lambda ws: np.savez(ws / "a.npz", header=np.frombuffer(b"\xff\xfe\xfd", np.uint8)))
add("sim-header-list", ("simulate", "a.npz"), "header",
    lambda ws: np.savez(ws / "a.npz", header=np.frombuffer(b"[1, 2]", np.uint8)))
add("sim-format-other", ("simulate", "{run}"), "format", npz_edit(lambda h, a, ws: h.update(format="evil/1")))
add("sim-missing-populations", ("simulate", "{run}"), "populations", npz_edit(lambda h, a, ws: h.pop("populations")))
add("sim-missing-links", ("simulate", "{run}", "--backend", "emulator"), "links", npz_edit(lambda h, a, ws: h.pop("links")))
add("sim-extra-field", ("simulate", "{run}", "--backend", "emulator"), "evil", npz_edit(lambda h, a, ws: h.update(evil=1)))
add("sim-extra-pop-field", ("simulate", "{run}", "--backend", "emulator"), "evil",
    npz_edit(lambda h, a, ws: h["populations"][0].update(evil=1)))
add("sim-missing-pop-field", ("simulate", "{run}", "--backend", "emulator"), "vth", npz_edit(lambda h, a, ws: h["populations"][0].pop("vth")))
add("sim-missing-link-field", ("simulate", "{run}", "--backend", "emulator"), "delay", npz_edit(lambda h, a, ws: h["links"][1].pop("delay")))
add("sim-missing-array", ("simulate", "{run}", "--backend", "emulator"), "pop0.bias_mant", npz_edit(lambda h, a, ws: a.pop("pop0.bias_mant")))
add("sim-bias-wrong-length", ("simulate", "{run}", "--backend", "emulator"), "bias",
    npz_edit(lambda h, a, ws: a.update({"pop0.bias_mant": a["pop0.bias_mant"][:3]})))
add("sim-weight-wrong-shape", ("simulate", "{run}", "--backend", "emulator"), "stage2.conv",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": a["link1.weight"][:, :3]})))
add("sim-dense-wrong-shape", ("simulate", "{run}", "--backend", "emulator"), "fc",
    npz_edit(lambda h, a, ws: h["links"][2]["matrix"].update(shape=[10, 999])))
add("sim-float-weight-nan", ("simulate", "{run}", "--backend", "emulator"), "NaN",
    npz_edit(lambda h, a, ws: _with_float_weights(h, a)["link1.f_weight"].reshape(-1).__setitem__(0, np.nan)))
add("sim-float-bias-inf", ("simulate", "{run}", "--backend", "emulator"), "inf",
    npz_edit(lambda h, a, ws: a["pop1.f_bias"].__setitem__(0, np.inf)))
add("sim-int-weight-float", ("simulate", "{run}", "--backend", "emulator"), "stage2.conv",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": a["link1.weight"].astype(np.float64) + 0.5})))
add("sim-weight-mantissa-range", ("simulate", "{run}", "--backend", "emulator"), "stage2.conv",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": _set_first(a["link1.weight"].astype(np.int32), 2**30)})))
# the compact format (hw/artefact_format.py): old formats, types, sizes that lie, values out of range
add("sim-old-format", ("simulate", "{run}", "--backend", "emulator"), "re-export",
    npz_edit(lambda h, a, ws: h.update(format="htakl-lava-plan/1")))
add("map-old-format", ("map", "{npz}"), "re-export", npz_edit(lambda h, a, ws: h.update(format="htakl-lava-plan/1")))
add("sim-weight-float32", ("simulate", "{run}", "--backend", "emulator"), "must hold integers",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": a["link1.weight"].astype(np.float32)})))
add("sim-weight-big-endian", ("simulate", "{run}", "--backend", "emulator"), "link1.weight",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": a["link1.weight"].astype(">i2")})))
add("sim-weight-fortran-order", ("simulate", "{run}", "--backend", "emulator"), "Fortran",
    npz_edit(lambda h, a, ws: a.update({"link1.weight": np.asfortranarray(a["link1.weight"])})))
add("sim-bias-complex", ("simulate", "{run}", "--backend", "emulator"), "pop1.f_bias",
    npz_edit(lambda h, a, ws: a.update({"pop1.f_bias": a["pop1.f_bias"].astype(np.complex128)})))
add("sim-index-float", ("simulate", "{run}", "--backend", "emulator"), "indices",
    npz_edit(lambda h, a, ws: _as_csr(h, a, 2).update({"link2.m.indices": a["link2.m.indices"].astype(np.float64)})))
add("sim-csr-index-out-of-range", ("simulate", "{run}", "--backend", "emulator"), "fc",
    npz_edit(lambda h, a, ws: _as_csr(h, a, 2).update(
        {"link2.m.indices": _set_first(a["link2.m.indices"].astype(np.int32), 10**6)})))
add("sim-array-lying-size", ("simulate", "{run}", "--backend", "emulator"), "declares",
    npz_member("link1.weight", lambda old: _npy_claiming(old, (2**40,))))
add("sim-array-past-file-end", ("simulate", "{run}", "--backend", "emulator"), "past the end",
    npz_member("link1.weight", None, claim_bytes=2**31))
add("sim-compressed-members", ("simulate", "{run}", "--backend", "emulator"), "compressed",
    npz_edit(lambda h, a, ws: None, compressed=True))
add("sim-int-shift-huge", ("simulate", "{run}", "--backend", "emulator"), "int_shift",
    npz_edit(lambda h, a, ws: h["int_shift"].update({"link1.weight": 40})))
add("sim-int-shift-on-floats", ("simulate", "{run}", "--backend", "emulator"), "int_shift",
    npz_edit(lambda h, a, ws: h["int_shift"].update({"pop1.f_bias": 1})))
add("sim-int-shift-beyond-24-bit", ("simulate", "{run}", "--backend", "emulator"), "24-bit",
    npz_edit(lambda h, a, ws: h["int_shift"].update({"link1.weight": 24})))
add("sim-bias-mant-beyond-13-bit", ("simulate", "{run}", "--backend", "emulator"), "13 bits",
    npz_edit(lambda h, a, ws: a.update({"pop1.bias_mant": _set_first(a["pop1.bias_mant"].astype(np.int16), 5000)})))
add("sim-matrix-layout-unknown", ("simulate", "{run}", "--backend", "emulator"), "layout",
    npz_edit(lambda h, a, ws: h["links"][2]["matrix"].update(layout="coo")))
add("sim-float-weights-missing", ("simulate", "{run}", "--backend", "emulator"), "f_weight",
    npz_edit(lambda h, a, ws: h.update(float_weights=True)))
add("sim-unknown-src", ("simulate", "{run}", "--backend", "emulator"), "nowhere", npz_edit(lambda h, a, ws: h["links"][1].update(src="nowhere")))
add("sim-cycle", ("simulate", "{run}"), "cycle", npz_edit(lambda h, a, ws: _back_link(h, a)))
add("sim-self-loop", ("simulate", "{run}", "--backend", "emulator"), "does not take", npz_edit(
    lambda h, a, ws: h["links"][1].update(src="stage2.act", dst="stage2.act")))  # recurrent, but the kernel misfits
add("sim-self-loop-readout", ("simulate", "{run}", "--backend", "emulator"), "recurrent link", npz_edit(
    lambda h, a, ws: h["links"][-1].update(src=h["links"][-1]["dst"])))
add("sim-two-readouts", ("simulate", "{run}"), "readout",
    npz_edit(lambda h, a, ws: h["populations"][0].update(readout=True)))
add("sim-no-input-link", ("simulate", "{run}", "--backend", "emulator"), "input", npz_edit(lambda h, a, ws: h["links"][0].update(kind="sparse")))
add("sim-link-kind-unknown", ("simulate", "{run}", "--backend", "emulator"), "kind", npz_edit(lambda h, a, ws: h["links"][1].update(kind="evil")))
add("sim-delay-huge", ("simulate", "{run}", "--backend", "emulator"), "delay", npz_edit(lambda h, a, ws: h["links"][2].update(delay=10**6)))
add("sim-depth-negative", ("simulate", "{run}", "--backend", "emulator"), "depth",
    npz_edit(lambda h, a, ws: h["populations"][1].update(depth=-1)))
add("sim-depth-inconsistent", ("simulate", "{run}", "--backend", "emulator"), "depth",
    npz_edit(lambda h, a, ws: h["populations"][2].update(depth=7)))
add("sim-shape-string", ("simulate", "{run}", "--backend", "emulator"), "shape",
    npz_edit(lambda h, a, ws: h["populations"][1].update(shape="64x4x4")))
add("sim-shape-zero", ("simulate", "{run}", "--backend", "emulator"), "shape",
    npz_edit(lambda h, a, ws: h["populations"][1].update(shape=[0, 4, 4])))
add("sim-input-shape-wrong", ("simulate", "{run}", "--backend", "emulator"), "input",
    npz_edit(lambda h, a, ws: h.update(input_shape=[3, 32, 32])))
add("sim-input-scale-nan", ("simulate", "{run}", "--backend", "emulator"), "input_scale",
    npz_edit(lambda h, a, ws: h.update(input_scale=float("nan"))))
add("sim-vth-zero", ("simulate", "{run}", "--backend", "emulator"), "vth", npz_edit(lambda h, a, ws: h["populations"][0].update(vth=0)))
add("sim-du-range", ("simulate", "{run}", "--backend", "emulator"), "du", npz_edit(lambda h, a, ws: h["populations"][0].update(du=10**9)))
add("sim-vth-bool", ("simulate", "{run}", "--backend", "emulator"), "vth", npz_edit(lambda h, a, ws: h["populations"][0].update(vth=True)))
add("sim-timesteps-zero-meta", ("simulate", "{run}", "--backend", "emulator"), "timesteps",
    npz_edit(lambda h, a, ws: h["metadata"].update(timesteps=0)))
add("sim-timesteps-string-meta", ("simulate", "{run}", "--backend", "emulator"), "timesteps",
    npz_edit(lambda h, a, ws: h["metadata"].update(timesteps="four")))
add("sim-metadata-list", ("simulate", "{run}", "--backend", "emulator"), "metadata", npz_edit(lambda h, a, ws: h.update(metadata=[1])))
add("sim-no-config", ("simulate", "{run}", "--backend", "emulator"), "--input FILE", npz_edit(lambda h, a, ws: h["metadata"].pop("config")))
add("sim-config-bad-value", ("simulate", "{run}", "--backend", "emulator"), "batch_size",
    cfg_edit(lambda c, ws: c.update(batch_size=-1)))
add("sim-config-unknown-key", ("simulate", "{run}", "--backend", "emulator"), "evil", cfg_edit(lambda c, ws: c.update(evil=1)))
add("sim-config-data-root-elsewhere", ("simulate", "{run}", "--backend", "emulator"), "data",
    cfg_edit(lambda c, ws: c.update(data="image-folder", data_root=str(ws / "malicious"))))
add("sim-config-data-root-payload", ("simulate", "{run}"), "data", chain(
    cifar_tree(lambda ws: {b"data": Payload(ws), b"labels": [0]}),
    cfg_edit(lambda c, ws: c.update(data="cifar10", data_root=str(ws / "cifar")))))
add("sim-config-other-data", ("simulate", "{run}", "--backend", "emulator", "--data-root", "fm"), "input",
    chain(cfg_edit(lambda c, ws: c.update(data="fashion-mnist")), fashion_tree("fm")))
add("sim-backend-unknown", ("simulate", "{run}", "--backend", "loihi3"), "--backend")
add("sim-samples-zero", ("simulate", "{run}", "--samples", "0"), "--samples")
add("sim-samples-negative", ("simulate", "{run}", "--samples", "-1"), "--samples")
add("sim-samples-word", ("simulate", "{run}", "--samples", "ten"), "--samples")
add("sim-timesteps-zero", ("simulate", "{run}", "--timesteps", "0", "--backend", "emulator"), "--timesteps")
add("sim-timesteps-huge", ("simulate", "{run}", "--timesteps", "1000000000", "--backend", "emulator"), "--timesteps")
add("sim-out-is-file", ("simulate", "{run}", "--backend", "emulator", "--out", "f"), "--out", put("f", "x"))
add("sim-out-under-file", ("simulate", "{run}", "--backend", "emulator", "--out", "f/x"), "--out", put("f", "x"))
add("sim-data-root-missing-dir", ("simulate", "{run}", "--backend", "emulator", "--data-root", "nowhere"),
    "--data-root")
add("sim-float-nir-missing", ("simulate", "{run}", "--backend", "torch-float"), "student_float.nir",
    lambda ws: (ws / "run/export/student_float.nir").unlink())
add("sim-float-nir-garbage", ("simulate", "{run}", "--backend", "torch-float"), "student_float.nir",
    put("run/export/student_float.nir", RANDOM))

# ------------------------------------------------------------------ energy
E = ("energy", "{h5}", "--graph", "{qnir}")
add("energy-spikes-missing", ("energy", "nope.h5", "--graph", "{qnir}"), "nope.h5")
add("energy-spikes-dir", ("energy", "d", "--graph", "{qnir}"), "directory", mkdir("d"))
add("energy-spikes-text", ("energy", "s.h5", "--graph", "{qnir}"), "s.h5", put("s.h5", "text"))
add("energy-spikes-random", ("energy", "s.h5", "--graph", "{qnir}"), "s.h5", put("s.h5", RANDOM))
add("energy-spikes-truncated", ("energy", "s.h5", "--graph", "{qnir}"), "s.h5",
    truncated("run/simulate/emulator/spikes.h5", "s.h5"))
add("energy-spikes-is-nir", ("energy", "{qnir}", "--graph", "{qnir}"), "not a spike recording")
add("energy-spikes-no-format", ("energy", "{h5}", "--graph", "{qnir}"), "format",
    h5_edit("run/simulate/emulator/spikes.h5", lambda f, ws: f.attrs.__delitem__("format")))
add("energy-spikes-float-layer", ("energy", "{h5}", "--graph", "{qnir}"), "stage1.act", h5_edit(
    "run/simulate/emulator/spikes.h5",
    lambda f, ws: (f["layers"].__delitem__("stage1.act"),
                   f["layers"].create_dataset("stage1.act", data=np.full((4, 8, 32, 8, 8), 0.5)))))
add("energy-spikes-value-2", ("energy", "{h5}", "--graph", "{qnir}"), "stage1.act", h5_edit(
    "run/simulate/emulator/spikes.h5",
    lambda f, ws: (f["layers"].__delitem__("stage1.act"),
                   f["layers"].create_dataset("stage1.act", data=np.full((4, 8, 32, 8, 8), 2, np.uint8)))))
add("energy-spikes-wrong-shape", ("energy", "{h5}", "--graph", "{qnir}"), "stage2.act", h5_edit(
    "run/simulate/emulator/spikes.h5",
    lambda f, ws: (f["layers"].__delitem__("stage2.act"),
                   f["layers"].create_dataset("stage2.act", data=np.zeros((4, 8, 3, 3, 3), np.uint8)))))
add("energy-spikes-missing-layer", ("energy", "{h5}", "--graph", "{qnir}"), "stage2.act", h5_edit(
    "run/simulate/emulator/spikes.h5", lambda f, ws: f["layers"].__delitem__("stage2.act")))
add("energy-spikes-attrs-garbage", ("energy", "{h5}", "--graph", "{qnir}"), "not a readable", h5_edit(
    "run/simulate/emulator/spikes.h5", lambda f, ws: f.attrs.__setitem__("attrs_json", "{nope")))
add("energy-spikes-external-link", ("energy", "{h5}", "--graph", "{qnir}"), "link", h5_edit(
    "run/simulate/emulator/spikes.h5", lambda f, ws: f.__setitem__(
        "labels_ext", __import__("h5py").ExternalLink(str(ws / "run/export/student_quant.nir"), "/node"))))
add("energy-spikes-external-storage", ("energy", "s.h5", "--graph", "{qnir}"), "external", lambda ws: _h5_external(ws))
add("energy-graph-missing", ("energy", "{h5}", "--graph", "nope.nir"), "nope.nir")
add("energy-graph-dir", ("energy", "{h5}", "--graph", "d"), "directory", mkdir("d"))
add("energy-graph-random", ("energy", "{h5}", "--graph", "g.nir"), "g.nir", put("g.nir", RANDOM))
add("energy-graph-text", ("energy", "{h5}", "--graph", "g.nir"), "g.nir", put("g.nir", "graph\n"))
add("energy-graph-is-spikes", ("energy", "{h5}", "--graph", "{h5}"), "spikes.h5")
add("energy-graph-truncated", ("energy", "{h5}", "--graph", "g.nir"), "g.nir",
    truncated("run/export/student_quant.nir", "g.nir"))
add("energy-graph-nan-weight", ("energy", "{h5}", "--graph", "{fnir}"), "NaN", h5_edit(
    "run/export/student_float.nir", lambda f, ws: f["node/nodes/fc/weight"].__setitem__((0, 0), np.nan)))
add("energy-graph-inf-weight", ("energy", "{h5}", "--graph", "{fnir}"), "inf", h5_edit(
    "run/export/student_float.nir", lambda f, ws: f["node/nodes/stage2.conv/weight"].__setitem__(
        (0, 0, 0, 0), np.inf)))
add("energy-graph-unknown-node", ("energy", "{h5}", "--graph", "{qnir}"), "type", h5_edit(
    "run/export/student_quant.nir", lambda f, ws: (f["node/nodes/flatten"].__delitem__("type"),
                                                    f["node/nodes/flatten"].create_dataset("type", data=b"Evil"))))
add("energy-graph-cycle", ("energy", "{h5}", "--graph", "{qnir}"), "cycle", h5_edit(
    "run/export/student_quant.nir", lambda f, ws: _add_edge(f, "fc", "stage1.conv")))
add("energy-graph-dangling-edge", ("energy", "{h5}", "--graph", "{qnir}"), "nowhere", h5_edit(
    "run/export/student_quant.nir", lambda f, ws: _add_edge(f, "fc", "nowhere")))
add("energy-graph-external-link", ("energy", "{h5}", "--graph", "{qnir}"), "link", h5_edit(
    "run/export/student_quant.nir", lambda f, ws: f["node/nodes"].__setitem__(
        "ext", __import__("h5py").ExternalLink(str(ws / "run/simulate/emulator/spikes.h5"), "/layers"))))
add("energy-preset-unknown", (*E, "--preset", "tpu"), "--preset")
add("energy-preset-path", (*E, "--preset", "../presets/paper-45nm"), "--preset")
add("energy-preset-and-model", (*E, "--preset", "loihi1", "--energy-model", "m.toml"), "--energy-model",
    put("m.toml", "source='x'\ne_ac_pj=1\ne_mac_pj=1\n"))
add("energy-model-missing", (*E, "--energy-model", "m.toml"), "m.toml")
add("energy-model-dir", (*E, "--energy-model", "m.toml"), "directory", mkdir("m.toml"))
add("energy-model-yaml", (*E, "--energy-model", "m.yaml"), "m.yaml", put("m.yaml", "e_ac_pj: 1\n"))
add("energy-model-not-utf8", (*E, "--energy-model", "m.toml"), "UTF-8", put("m.toml", b"source = '\xff'\n"))
add("energy-model-bad-toml", (*E, "--energy-model", "m.toml"), "not valid TOML", put("m.toml", "e_ac_pj = \n"))
add("energy-model-bad-json", (*E, "--energy-model", "m.json"), "not valid JSON", put("m.json", "{'a': 1}"))
add("energy-model-json-list", (*E, "--energy-model", "m.json"), "table", put("m.json", "[1, 2]"))
add("energy-model-json-infinity", (*E, "--energy-model", "m.json"), "e_ac_pj",
    put("m.json", '{"source": "x", "e_ac_pj": Infinity, "e_mac_pj": 1}'))
add("energy-model-json-nan", (*E, "--energy-model", "m.json"), "e_mac_pj",
    put("m.json", '{"source": "x", "e_ac_pj": 1, "e_mac_pj": NaN}'))
add("energy-model-toml-inf", (*E, "--energy-model", "m.toml"), "e_ac_pj", put("m.toml", "source='x'\ne_ac_pj=inf\ne_mac_pj=1\n"))
add("energy-model-toml-nan", (*E, "--energy-model", "m.toml"), "e_spike_pj",
    put("m.toml", "source='x'\ne_ac_pj=1\ne_mac_pj=1\ne_spike_pj=nan\n"))
add("energy-model-negative", (*E, "--energy-model", "m.toml"), "e_ac_pj", put("m.toml", "source='x'\ne_ac_pj=-1\ne_mac_pj=1\n"))
add("energy-model-absurd", (*E, "--energy-model", "m.toml"), "e_mac_pj",
    put("m.toml", "source='x'\ne_ac_pj=1\ne_mac_pj=1e300\n"))
add("energy-model-string", (*E, "--energy-model", "m.toml"), "e_ac_pj", put("m.toml", "source='x'\ne_ac_pj='1'\ne_mac_pj=1\n"))
add("energy-model-bool", (*E, "--energy-model", "m.toml"), "e_ac_pj", put("m.toml", "source='x'\ne_ac_pj=true\ne_mac_pj=1\n"))
add("energy-model-missing-key", (*E, "--energy-model", "m.toml"), "e_mac_pj", put("m.toml", "source='x'\ne_ac_pj=1\n"))
add("energy-model-unknown-key", (*E, "--energy-model", "m.toml"), "e_sram_pj",
    put("m.toml", "source='x'\ne_ac_pj=1\ne_mac_pj=1\ne_sram_pj=3\n"))
add("energy-model-no-source", (*E, "--energy-model", "m.toml"), "source", put("m.toml", "e_ac_pj=1\ne_mac_pj=1\n"))
add("energy-model-empty-source", (*E, "--energy-model", "m.toml"), "source",
    put("m.toml", "source=''\ne_ac_pj=1\ne_mac_pj=1\n"))
add("energy-model-nested", (*E, "--energy-model", "m.toml"), "m.toml", put("m.toml", "[chip]\nsource='x'\n"))
add("energy-json-out-dir", (*E, "--json-out", "d"), "directory", mkdir("d"))
add("energy-json-under-file", (*E, "--json-out", "f/e.json"), "f", put("f", "x"))
add("energy-json-old-spelling", (*E, "--json", "e.json"), "give --json-out e.json")
add("energy-neurobench-samples-zero", (*E, "--neurobench-samples", "0"), "--neurobench-samples")
add("energy-neurobench-samples-and-off", (*E, "--neurobench-samples", "5", "--no-neurobench"), "not allowed with")
add("energy-no-graph", ("energy", "{h5}"), "--graph")
add("energy-graph-mismatch", ("energy", "{h5}", "--graph", "{qnir}"), "stage1.act", h5_edit(
    "run/simulate/emulator/spikes.h5",
    lambda f, ws: (f["layers"].__delitem__("stage1.act"),
                   f["layers"].create_dataset("stage1.act", data=np.zeros((4, 8, 16, 8, 8), np.uint8)))))

# ------------------------------------------------------------------ report
add("report-missing", ("report", "nowhere"), "nowhere")
add("report-file", ("report", "{ckpt}"), "last.pt")
add("report-no-config", ("report", "d"), "config.json", mkdir("d"))
add("report-config-garbage", ("report", "{run}"), "config.json", put("run/config.json", "{oops"))
add("report-config-binary", ("report", "{run}"), "config.json", put("run/config.json", RANDOM))
add("report-config-list", ("report", "{run}"), "config.json", put("run/config.json", "[]"))
add("report-extra-arg", ("report", "{run}", "{run}"), "unrecognized")


def _back_link(h: dict, a: dict) -> None:
    """A sparse link from the readout back into the first population: a cycle."""
    import scipy.sparse as sp

    m = sp.csr_matrix(np.zeros((2048, 10), np.int64))
    i = len(h["links"])
    h["links"].append({"name": "back", "src": "output", "dst": "stage1.act", "kind": "sparse", "delay": 0,
                       "weight_exp": 0, "matrix": {"layout": "csr", "shape": [2048, 10]}})
    a[f"link{i}.m.data"], a[f"link{i}.m.indices"], a[f"link{i}.m.indptr"] = m.data, m.indices, m.indptr


def _add_edge(f, a: str, b: str) -> None:
    import h5py

    edges = f["node/edges"][()]
    del f["node/edges"]
    new = np.concatenate([edges, np.array([[a.encode(), b.encode()]], dtype=object)])
    f["node"].create_dataset("edges", data=new, dtype=h5py.string_dtype())


def _h5_external(ws: Path) -> None:
    """A spike file whose 'input' dataset stores its bytes in another file (HDF5 external storage)."""
    import h5py
    import shutil

    shutil.copy(ws / "run/simulate/emulator/spikes.h5", ws / "s.h5")
    (ws / "secret.bin").write_bytes(bytes(range(256)) * 8)
    with h5py.File(ws / "s.h5", "r+") as f:
        shape, dtype = f["input"].shape, f["input"].dtype
        del f["input"]
        f.create_dataset("input", shape=shape, dtype=dtype, external=[(str(ws / "secret.bin"), 0, h5py.h5f.UNLIMITED)])


# ------------------------------------------------------------------ flags and commands added later
add("sim-batch-size-zero", ("simulate", "{run}", "--backend", "emulator", "--batch-size", "0"), "--batch-size")
add("sim-record-unknown", ("simulate", "{run}", "--backend", "emulator", "--record", "voltages"), "--record")
add("sim-record-unknown-layer", ("simulate", "{run}", "--backend", "emulator", "--record", "stage9.act"), "--record")
add("sim-device-tpu", ("simulate", "{run}", "--backend", "emulator", "--device", "tpu"), "--device")
add("sim-device-on-lava", ("simulate", "{run}", "--device", "cuda"), "--device")
add("sim-data-with-artefact", ("simulate", "{run}", "--backend", "emulator", "--data", "digits"), "--data")
add("sim-nir-without-data", ("simulate", "{fnir}", "--backend", "emulator"), "--data")
add("export-data-with-checkpoint", ("export", "{run}", "--data", "digits"), "--data")
add("export-dt-with-checkpoint", ("export", "{run}", "--dt", "0.001"), "--dt")
add("export-nir-garbage", ("export", "g.nir", "--data", "digits"), "g.nir", put("g.nir", RANDOM))
add("export-nir-unknown-data", ("export", "{fnir}", "--data", "imagenet"), "imagenet")
add("run-backends-unknown", distill("--backends", "loihi", cmd="run"), "--backends")
add("run-lava-check-negative", distill("--lava-check", "-2", cmd="run"), "--lava-check")
add("run-export-targets-unknown", distill("--export-targets", "tflite", cmd="run"), "--export-targets")
add("run-map-target-unknown", distill("--map-target", "tpu", "--no-lava", cmd="run"), "tpu")
add("map-missing", ("map", "nowhere"), "nowhere")
add("map-no-positional", ("map",), "RUN_DIR")
add("map-random-artefact", ("map", "a.npz"), "a.npz", put("a.npz", RANDOM))
add("map-tampered-artefact", ("map", "{npz}"), "link",
    npz_edit(lambda h, a, ws: h["links"][1].update(src="nowhere")))
add("map-target-unknown", ("map", "{run}", "--target", "tpu"), "tpu")
add("map-target-file-garbage", ("map", "{run}", "--target", "t.toml"), "t.toml", put("t.toml", "cores = = 3\n"))
add("map-target-file-not-utf8", ("map", "{run}", "--target", "t.toml"), "t.toml", put("t.toml", b"x = '\xff'\n"))
add("map-strategy-unknown", ("map", "{run}", "--strategy", "greedy"), "greedy")
add("map-target-calibration-negative", ("map", "{run}", "--target", "t.toml"), "calibration", put(
    "t.toml", __import__("re").sub(r"(?m)^step_ns = .*$", "step_ns = -1", (
        Path(__file__).parents[2] / "hw/targets/loihi2.toml").read_text(encoding="utf-8"))))
add("map-target-format-negative", ("map", "{run}", "--target", "t.toml"), "conv_x_stride_bits", put(
    "t.toml", (Path(__file__).parents[2] / "hw/targets/loihi2.toml").read_text(encoding="utf-8")
    .replace("conv_x_stride_bits = 1", "conv_x_stride_bits = -1")))
add("map-set-unknown-key", ("map", "{run}", "--set", "warp_drive=1"), "warp_drive")
add("map-set-not-number", ("map", "{run}", "--set", "e_synop_pj=lots"), "e_synop_pj")
add("map-set-nan", ("map", "{run}", "--set", "e_synop_pj=nan"), "e_synop_pj")
add("map-set-no-equals", ("map", "{run}", "--set", "e_synop_pj"), "--set")
add("map-spikes-garbage", ("map", "{run}", "--spikes", "s.h5"), "s.h5", put("s.h5", RANDOM))
add("map-spikes-external-link", ("map", "{run}", "--spikes", "{h5}"), "link", h5_edit(
    "run/simulate/emulator/spikes.h5", lambda f, ws: f.__setitem__(
        "labels_ext", __import__("h5py").ExternalLink(str(ws / "run/export/student_quant.nir"), "/node"))))
add("map-json-is-dir", ("map", "{run}", "--json-out", "d"), "d", mkdir("d"))
add("map-json-old-spelling", ("map", "{run}", "--json", "m.json"), "give --json-out m.json")
add("compare-missing", ("compare", "nowhere"), "nowhere")
add("compare-no-positional", ("compare",), "RUN_DIR")
add("compare-not-a-run", ("compare", "d"), "d", mkdir("d"))
add("compare-config-garbage", ("compare", "{run}"), "config.json", put("run/config.json", RANDOM))
add("compare-html-is-dir", ("compare", "{run}", "--html", "d"), "d", mkdir("d"))
add("export-refused-part-way", ("export", "{run}", "--out", "new", "--data-root", "d"), "root", mkdir("d"))
add("export-refused-part-way-into-run", ("export", "{run}", "--data-root", "d"), "root",
    chain(mkdir("d"), lambda ws: __import__("shutil").rmtree(ws / "run/export")))
add("sim-data-root-for-digits", ("simulate", "{run}", "--backend", "emulator", "--data-root", "d"), "root", mkdir("d"))


# ------------------------------------------------------------------ --input FILE (distill.data.inputfile)
def npy(name: str, value, allow_pickle: bool = False):
    def setup(ws: Path) -> None:
        np.save(ws / name, value, allow_pickle=allow_pickle)
    return setup


def _h5_inputs_external(ws: Path) -> None:
    import h5py

    (ws / "secret.bin").write_bytes(bytes(256) * 8)
    with h5py.File(ws / "in.h5", "w") as f:
        f.create_dataset("inputs", shape=(2, 1, 8, 8), dtype="u1", external=[(str(ws / "secret.bin"), 0, 128)])


SIM_IN = ("simulate", "{run}", "--backend", "emulator", "--input")
add("input-missing", (*SIM_IN, "nope.npy"), "no such input file")
add("input-suffix", (*SIM_IN, "x.csv"), "expected a .npy", put("x.csv", "1,2\n"))
add("input-pickle-payload", (*SIM_IN, "x.npy"), "not a readable input array",
    lambda ws: np.save(ws / "x.npy", np.array([Payload(ws)], dtype=object), allow_pickle=True))
add("input-shape", (*SIM_IN, "x.npy"), "the network's input is (1, 8, 8)", npy("x.npy", np.zeros((3, 2, 8, 8))))
add("input-ndim", (*SIM_IN, "x.npy"), "expected [T, B, 1, 8, 8]", npy("x.npy", np.zeros((8, 8))))
add("input-nan", (*SIM_IN, "x.npy"), "NaN", npy("x.npy", np.full((2, 3, 1, 8, 8), np.nan)))
add("input-negative", (*SIM_IN, "x.npy"), "negative", npy("x.npy", np.full((3, 1, 8, 8), -1.0)))
add("input-fractional-above-1", (*SIM_IN, "x.npy"), "expected analog values in [0, 1]", npy("x.npy", np.full((3, 1, 8, 8), 1.5)))
add("input-count-too-high", (*SIM_IN, "x.npy"), "bin the events more finely", npy("x.npy", np.full((2, 3, 1, 8, 8), 1000)))
add("input-empty", (*SIM_IN, "x.npy"), "no inputs", npy("x.npy", np.zeros((0, 1, 8, 8))))
add("input-timesteps-mismatch", (*SIM_IN, "x.npy", "--timesteps", "3"), "T comes from the data",
    npy("x.npy", np.zeros((5, 2, 1, 8, 8))))
add("input-labels-length", (*SIM_IN, "x.npz"), "labels have shape",
    lambda ws: np.savez(ws / "x.npz", inputs=np.zeros((2, 1, 8, 8)), labels=np.zeros(5)))
add("input-labels-negative", (*SIM_IN, "x.npz"), "labels must be whole numbers",
    lambda ws: np.savez(ws / "x.npz", inputs=np.zeros((2, 1, 8, 8)), labels=np.array([-1, 0])))
add("input-npz-two-arrays", (*SIM_IN, "x.npz"), "expected one array of inputs",
    lambda ws: np.savez(ws / "x.npz", a=np.zeros((2, 1, 8, 8)), b=np.zeros((2, 1, 8, 8))))
add("input-h5-external-storage", (*SIM_IN, "in.h5"), "external", _h5_inputs_external)
add("input-h5-junk", (*SIM_IN, "in.h5"), "not a readable input array", put("in.h5", RANDOM))
add("input-folder-empty", (*SIM_IN, "ev"), "no event recordings", mkdir("ev"))
add("input-folder-wrong-network", (*SIM_IN, "ev"), "(2, 34, 34)", put("ev/3/a.bin", bytes(10)))
add("input-with-data", ("simulate", "m.nir", "--data", "digits", "--input", "x.npy"), "give one",
    chain(put("m.nir", b""), npy("x.npy", np.zeros((2, 1, 8, 8)))))
add("export-input-checkpoint", ("export", "{run}", "--input", "x.npy"), "apply to a NIR file",
    npy("x.npy", np.zeros((2, 1, 8, 8))))
add("run-input-without-from-nir", ("run", "--input", "x.npy", *QUICK), "applies to --from-nir only",
    npy("x.npy", np.zeros((2, 1, 8, 8))))


# ------------------------------------------------------------------ lava-dl netx files (export/netx_in.py)
def netx_file(name: str, edit=None):
    """A tiny valid netx network on digits' 1×8×8 images (a bias-driven CUBA input layer, flatten, a
    dense readout that never fires), as lava-dl writes them; ``edit(f)`` spoils it."""
    def setup(ws: Path) -> None:
        import h5py

        def neuron(g, vth=64):
            for k, v in (("iDecay", 4096), ("vDecay", 1024), ("vThMant", vth), ("refDelay", 1)):
                g.create_dataset(f"neuron/{k}", data=np.int64(v))
            g.create_dataset("neuron/type", data=b"CUBA")

        with h5py.File(ws / name, "w") as f:
            g = f.create_group("layer/0")
            g.create_dataset("type", (1,), "S10", [b"input"])
            g.create_dataset("shape", data=np.array([1, 8, 8]))
            neuron(g)
            g = f.create_group("layer/1")
            g.create_dataset("type", (1,), "S10", [b"flatten"])
            g.create_dataset("shape", data=np.array([64, 1, 1]))
            g = f.create_group("layer/2")
            g.create_dataset("type", (1,), "S10", [b"dense"])
            g.create_dataset("shape", data=np.array([10]))
            g.create_dataset("weight", data=np.arange(640, dtype=np.float32).reshape(10, 64) % 7 - 3)
            neuron(g, 1 << 17)
            if edit is not None:
                edit(f, ws)
    return setup


add("netx-unknown-layer", ("export", "m.net", "--target", "lava", "--lava-check", "0"),
    "layer 2 (convT): layer type 'convT' is not supported",
    netx_file("m.net", lambda f, ws: f["layer/2/type"].__setitem__(0, b"convT")))
add("netx-unknown-neuron", ("map", "m.net", "--no-spikes"), "layer 2 (dense): neuron type 'RF'",
    netx_file("m.net", lambda f, ws: f["layer/2/neuron/type"].__setitem__((), b"RF")))
add("netx-nan-weight", ("energy", "{h5}", "--graph", "m.net"), "'weight' holds NaN",
    netx_file("m.net", lambda f, ws: f["layer/2/weight"].__setitem__((0, 0), np.nan)))
add("netx-garbage", ("export", "m.net", "--target", "lava"), "not a readable netx", put("m.net", RANDOM))
add("netx-no-layers", ("map", "m.net"), "no 'layer' group",
    netx_file("m.net", lambda f, ws: f.__delitem__("layer")))
add("netx-external-link", ("export", "m.net", "--target", "nir"), "external link",
    netx_file("m.net", lambda f, ws: f["layer/2"].__setitem__(
        "bias", __import__("h5py").ExternalLink(str(ws / "run/export/student_quant.nir"), "/node"))))
add("netx-shape-wrong", ("simulate", "m.net", "--data", "digits", "--backend", "emulator"), "does not follow",
    netx_file("m.net", lambda f, ws: f["layer/2/shape"].__setitem__(0, 11)))
add("netx-bias-13-bit", ("export", "m.net", "--target", "lava"), "fits no 13-bit mantissa",
    netx_file("m.net", lambda f, ws: f["layer/2"].create_dataset("bias", data=np.full(10, 5001.0))))


def _netx_lying_weight(f, ws) -> None:
    """The dense layer's weight replaced by one declaring 10 x 10^8 float32 (4 GB) and holding none."""
    del f["layer/2/weight"]
    f["layer/2"].create_dataset("weight", shape=(10, 100_000_000), dtype="f4", chunks=(1, 1 << 20),
                                compression="gzip")


add("netx-lying-size-map", ("map", "m.net", "--no-spikes"), "lies about its size", netx_file("m.net", _netx_lying_weight))
add("netx-lying-size-export", ("export", "m.net", "--target", "lava"), "lies about its size",
    netx_file("m.net", _netx_lying_weight))

# ------------------------------------------------------------------ --reset, --strict (issue 26)
add("export-reset-mode", ("export", "{fnir}", "--target", "nir", "--reset", "sideways", "--out", "o"), "mode 'sideways'")
add("export-reset-layer", ("export", "{fnir}", "--target", "nir", "--reset", "nope=subtract", "--out", "o"),
    "no neuron layer 'nope'")
add("export-reset-checkpoint", ("export", "{run}", "--reset", "subtract"), "apply to a NIR file")
add("export-strict-checkpoint", ("export", "{run}", "--strict"), "apply to a NIR file")
add("simulate-reset-artefact", ("simulate", "{run}", "--backend", "emulator", "--reset", "subtract"),
    "apply to a NIR file")
add("run-reset-without-from-nir", ("run", "--reset", "subtract", *QUICK), "applies to --from-nir only")
# ------------------------------------------------------------------ Ray: grids and shards (issue 28)
GRID = "data = 'digits'\nepochs = 1\n[grid]\nmethod = ['kd', 'ce']\n"
add("run-ray-address-without-grid", distill("--ray-address", "auto", cmd="run"), "--ray-address")
add("run-ray-cpus-without-grid", distill("--ray-cpus", "2", cmd="run"), "--ray-cpus")
add("run-cell-cpus-without-grid", distill("--cell-cpus", "1", cmd="run"), "--cell-cpus")
add("run-grid-ray-cpus-zero", ("run", "--config", "g.toml", "--out-dir", "runs", "--ray-cpus", "0"), "--ray-cpus",
    put("g.toml", GRID))
add("run-grid-cell-cpus-zero", ("run", "--config", "g.toml", "--out-dir", "runs", "--cell-cpus", "0"), "--cell-cpus",
    put("g.toml", GRID))
add("run-grid-ray-cpus-and-address", ("run", "--config", "g.toml", "--out-dir", "runs", "--ray-cpus", "2",
                                      "--ray-address", "auto"), "--ray-cpus", put("g.toml", GRID))
add("run-grid-cuda-n", ("run", "--config", "g.toml", "--out-dir", "runs", "--device", "cuda:1"), "cuda",
    put("g.toml", GRID))
add("sim-shards-zero", ("simulate", "{run}", "--backend", "emulator", "--shards", "0"), "--shards")
add("sim-shards-word", ("simulate", "{run}", "--backend", "emulator", "--shards", "two"), "--shards")
add("sim-ray-address-without-shards", ("simulate", "{run}", "--backend", "emulator", "--ray-address", "auto"),
    "--ray-address")
add("energy-shards-zero", (*E, "--shards", "0"), "--shards")
add("energy-ray-cpus-without-shards", (*E, "--ray-cpus", "2"), "--ray-cpus")
add("run-grid-cuda-without-gpu", ("run", "--config", "g.toml", "--out-dir", "runs", "--device", "cuda"), "CUDA",
    put("g.toml", GRID))


# ------------------------------------------------------------------ a full disk (issue 29): a real tmpfs
# Each case mounts a small tmpfs at ws/full (``tmpfs``; the case runs in a private mount namespace)
# and writes there: one line naming the file and the space left, exit 2, no crash inside libhdf5,
# no temporary file left, and an earlier complete output untouched (the snapshot covers ws/full).
FULL = "No space left on device"


def full(id_, argv, setup, expect=FULL):
    CASES.append(Case(id_, tuple(argv), expect, setup, True, isolate=True))


EMPTY_64K = tmpfs("full", 64)
RUN_ON_FULL_DISK = tmpfs("full", 8192, copy={"run": "run"}, free_kib=4)  # the run, then 4 KiB left
full("full-disk-simulate", ("simulate", "{run}", "--backend", "emulator", "--samples", "64", "--out", "full/sim"),
     EMPTY_64K)
full("full-disk-simulate-over-earlier", ("simulate", "full/run", "--backend", "emulator", "--samples", "4"),
     RUN_ON_FULL_DISK)
full("full-disk-export-nir", ("export", "{run}", "--target", "nir", "--no-eval", "--out", "full/exp"), EMPTY_64K)
full("full-disk-export-lava", ("export", "{run}", "--target", "lava", "--lava-check", "0", "--no-eval",
                               "--out", "full/exp"),  # the NIR files there already: the artefact does not fit
     tmpfs("full", 1024, copy={"exp": "run/export"}, free_kib=8))
full("full-disk-export-onnx", ("export", "{run}", "--target", "onnx", "--no-eval", "--out", "full/exp"), EMPTY_64K)
full("full-disk-export-netx", ("export", "{run}", "--target", "netx", "--no-eval", "--out", "full/exp"),
     tmpfs("full", 1024, copy={"exp": "run/export"}, free_kib=4))  # the NIR files there already
full("full-disk-export-over-earlier", ("export", "full/run", "--target", "nir", "lava", "--lava-check", "0",
                                       "--no-eval"), RUN_ON_FULL_DISK)
full("full-disk-export-nir-file", ("export", "full/g.nir", "--target", "nir", "lava", "--lava-check", "0"),
     tmpfs("full", 512, copy={"g.nir": "run/export/student_float.nir"}, free_kib=16))
full("full-disk-distill", distill("--out-dir", "full/runs"), EMPTY_64K)
full("full-disk-train-teacher", distill("--out-dir", "full/runs", cmd="train-teacher"), EMPTY_64K)
full("full-disk-run", distill("--out-dir", "full/runs", "--no-lava", cmd="run"), EMPTY_64K)
full("full-disk-energy-json", ("energy", "{h5}", "--graph", "{qnir}", "--json-out", "full/e.json"),
     tmpfs("full", 64, free_kib=0))
full("full-disk-map-json", ("map", "{run}", "--json-out", "full/m.json"), tmpfs("full", 64, free_kib=0))
full("full-disk-report", ("report", "full/run"), RUN_ON_FULL_DISK)
full("full-disk-compare-html", ("compare", "{run}", "--html", "full/c.html"), tmpfs("full", 64, free_kib=0))
full("full-disk-simulate-whatif", ("simulate", "full/run", "--backend", "emulator", "--samples", "8"),
     RUN_ON_FULL_DISK)


# ------------------------------------------------------------------ sizes that lie (issue 29)
# Every reader checks what a file declares against what it holds before allocating: a dataset or
# array that claims more than its bytes (or more than deflate's 1032:1 of them) is refused by name.
LIES = "lies about its size"


def lying_dataset(path: str, dataset: str, shape, dtype="float32"):
    """Replace ``dataset`` of the HDF5 file ``path`` by one that declares ``shape`` but holds nothing
    (gzip-chunked, no chunk written: HDF5 would read 'fill values' for all of it)."""
    def edit(f, ws):
        del f[dataset]
        f.create_dataset(dataset, shape=shape, dtype=dtype, chunks=(1,) * (len(shape) - 1) + (min(shape[-1], 1 << 20),),
                         compression="gzip")
    return h5_edit(path, edit)


def lying_npy(name: str, shape, dtype="<f4", zipped_as: str | None = None):
    """A ``.npy`` (or, with ``zipped_as``, an ``.npz`` member) whose header declares ``shape`` over 64 bytes."""
    def setup(ws: Path) -> None:
        import io
        import zipfile

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
        data = buf.getvalue() + b"\0" * 64
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if zipped_as is None:
            p.write_bytes(data)
            return
        with np.load(ws / "run/export/student.lava.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with zipfile.ZipFile(p, "w") as zf:
            for k, a in arrays.items():
                if k == zipped_as:
                    zf.writestr(k + ".npy", data)
                else:
                    with zf.open(k + ".npy", "w") as fh:
                        np.lib.format.write_array(fh, a, allow_pickle=False)
    return setup


def _npz_lying(path: Path) -> None:
    """An ``--input`` .npz whose one array's header declares 10⁹ 8×8 images over 64 bytes."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1, 8, 8)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inputs.npy", buf.getvalue() + b"\0" * 64)


def zip_bomb_member(name: str):
    """The artefact with one member whose zip entry claims 4 GiB uncompressed from a few bytes."""
    def setup(ws: Path) -> None:
        import shutil
        import struct

        shutil.copy(ws / "run/export/student.lava.npz", ws / name)
        data = bytearray((ws / name).read_bytes())
        at = data.rfind(b"PK\x01\x02")  # the last central-directory entry: its uncompressed size field
        data[at + 10:at + 12] = struct.pack("<H", 8)  # "deflated"
        data[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)
        (ws / name).write_bytes(bytes(data))
    return setup


add("nir-lying-size-export", ("export", "g.nir", "--data", "digits"), LIES,
    chain(lambda ws: __import__("shutil").copy(ws / "run/export/student_float.nir", ws / "g.nir"),
          lying_dataset("g.nir", "node/nodes/fc/weight", (10, 100_000_000))))
add("nir-lying-size-energy-graph", ("energy", "{h5}", "--graph", "{qnir}"), LIES,
    lying_dataset("run/export/student_quant.nir", "node/nodes/fc/weight", (10, 100_000_000), "int64"))
add("nir-lying-size-simulate", ("simulate", "g.nir", "--data", "digits", "--backend", "emulator"), LIES,
    chain(lambda ws: __import__("shutil").copy(ws / "run/export/student_float.nir", ws / "g.nir"),
          lying_dataset("g.nir", "node/nodes/stage1.conv/weight", (32, 1, 3, 100_000_000))))
add("spikes-lying-size-counts", ("energy", "{h5}", "--graph", "{qnir}"), LIES,
    lying_dataset("run/simulate/emulator/spikes.h5", "counts/stage1.act", (4, 32, 8, 100_000_000), "int64"))
add("spikes-lying-size-labels", ("energy", "{h5}", "--graph", "{qnir}"), LIES,
    lying_dataset("run/simulate/emulator/spikes.h5", "labels", (1_000_000_000,), "int64"))
add("spikes-lying-layer-shapes", ("energy", "{h5}", "--graph", "{qnir}"), "layer_shapes",
    h5_edit("run/simulate/emulator/spikes.h5", lambda f, ws: f.attrs.__setitem__(
        "layer_shapes", json.dumps({**json.loads(f.attrs["layer_shapes"]), "stage1.act": [32, 8, 100_000_000]}))))
add("spikes-lying-size-map", ("map", "{run}", "--spikes", "{h5}"), LIES,
    lying_dataset("run/simulate/emulator/spikes.h5", "counts/stage2.act", (4, 10**9), "int64"))
add("npz-lying-array-simulate", ("simulate", "a.npz", "--backend", "emulator"), "declares shape (1000000000,)",
    lying_npy("a.npz", (1_000_000_000,), "<i8", zipped_as="link0.weight"))
add("npz-lying-array-map", ("map", "a.npz"), "declares shape (1000000000,)", lying_npy("a.npz", (1_000_000_000,), "<i8", zipped_as="header"))
add("npz-zip-bomb-member", ("map", "a.npz"), "is compressed", zip_bomb_member("a.npz"))
add("input-npy-lying-size", ("simulate", "{run}", "--backend", "emulator", "--input", "x.npy"), LIES,
    lying_npy("x.npy", (10**9, 1, 8, 8)))
add("input-npz-lying-size", ("simulate", "{run}", "--backend", "emulator", "--input", "x.npz"), LIES,
    lambda ws: __import__("zipfile").ZipFile(ws / "x.npz", "w").close() or _npz_lying(ws / "x.npz"))
add("input-h5-lying-size", ("simulate", "{run}", "--backend", "emulator", "--input", "x.h5"), LIES,
    lambda ws: __import__("h5py").File(ws / "x.h5", "w").create_dataset(
        "inputs", shape=(10**9, 1, 8, 8), dtype="f4", chunks=(1024, 1, 8, 8), compression="gzip").file.close())
add("npy-lying-calibration", ("export", "{fnir}", "--calibration", "c.npy", "--out", "e"), LIES,
    lying_npy("c.npy", (1000, 1_000_000, 64)))
add("h5-lying-calibration", ("export", "{fnir}", "--calibration", "c.h5", "--out", "e"), LIES,
    lambda ws: __import__("h5py").File(ws / "c.h5", "w").create_dataset(
        "inputs", shape=(1000, 1, 1, 8, 8_000_000), dtype="f4", chunks=(1, 1, 1, 8, 1 << 20), compression="gzip").file.close())
add("config-huge-file", distill("--config", "c.toml"), "over the 16.0 MiB limit for config files",
    put("c.toml", "# padding\n" * 1_700_000))
add("energy-model-huge-file", (*E, "--energy-model", "m.toml"), "limit for energy model files",
    put("m.toml", "# padding\n" * 1_700_000))
add("map-target-huge-file", ("map", "{run}", "--target", "t.toml"), "limit for target files",
    put("t.toml", "# padding\n" * 1_700_000))
add("report-config-huge-file", ("report", "{run}"), "config.json", put("run/config.json", "{" + " " * (17 << 20) + "}"))
# numeric overrides: range-checked, and the message says what kind of number
add("map-set-limit-1e30", ("map", "{run}", "--set", "neurons_per_core=1e30"), "expected an integer in 1..2^40")
add("map-set-limit-10-to-30", ("map", "{run}", "--set", f"neurons_per_core={10**30}"), "1..2^40")
add("map-set-limit-fraction", ("map", "{run}", "--set", "neurons_per_core=1.5"), "got 1.5, expected an integer")
add("map-set-limit-zero", ("map", "{run}", "--set", "neurons_per_core=0"), "1..2^40")
add("map-set-cost-absurd", ("map", "{run}", "--set", "e_synop_pj=1e300"), "0..1e9")
add("map-set-cost-negative", ("map", "{run}", "--set", "t_synop_ns=-1"), "0..1e9")


# ------------------------------------------------------------------ messages that misled (issue 29)
def _drop_neuron(f, ws) -> None:
    """A quantised graph with a LIF node removed and its conv wired straight on: not deployable."""
    import h5py

    edges = [tuple(e) for e in f["node/edges"][()] if b"stage2.act" not in tuple(e)] + [(b"stage2.conv", b"flatten")]
    del f["node/nodes/stage2.act"], f["node/edges"]
    f["node"].create_dataset("edges", data=np.array(edges, dtype=object), dtype=h5py.string_dtype())


def _text_for(field: str, node: str = "fc"):
    def edit(f, ws) -> None:
        import h5py

        g = f[f"node/nodes/{node}"]
        del g[field]
        g.create_dataset(field, data="0.5", dtype=h5py.string_dtype())
    return edit


add("energy-graph-missing-neuron", ("energy", "{h5}", "--graph", "{qnir}"), "'stage2.conv' (Conv2dNode): only pooling",
    h5_edit("run/export/student_quant.nir", _drop_neuron))
add("nir-text-for-weight", ("export", "{fnir}", "--data", "digits", "--out", "e"),
    "NIR node 'fc' (Affine): field 'weight' holds text, expected an array of numbers",
    h5_edit("run/export/student_float.nir", _text_for("weight")))
add("nir-text-for-tau-energy", ("energy", "{h5}", "--graph", "{qnir}"), "'stage1.act' (LIF): field 'tau' holds text",
    h5_edit("run/export/student_quant.nir", _text_for("tau", "stage1.act")))
