"""Data loaders (on small files written here in the real formats), augmentation, encoding."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from htakl_deploy.distill.data import (
    DATASETS,
    ENCODINGS,
    ArrayDataset,
    AugmentSpec,
    augment_batch,
    encode,
    load_dataset,
)
from htakl_deploy.errors import UserError


# ---------------------------------------------------------------- helpers (real formats)

def write_idx(path: Path, arr: np.ndarray, magic: int, compress: bool = True) -> None:
    raw = struct.pack(">i", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fashion(root: Path, n_train: int = 12, n_test: int = 5, compress: bool = True):
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", imgs, 2051, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 2049, compress)
        out[prefix] = (imgs, labels)
    return out


def write_cifar_batch(path: Path, n: int, label_key: bytes, num_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", label_key: labels, b"data": data,
                     b"filenames": [b"f"] * n}, f)
    return data, labels


def write_pngs(folder: Path, classes: dict[str, int], size=(6, 5), start_seed=0) -> None:
    """``classes``: name -> image count; images are size (W, H) random RGB."""
    rng = np.random.default_rng(start_seed)
    for cls, count in classes.items():
        (folder / cls).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr, "RGB").save(folder / cls / f"img{i:02d}.png")


# ---------------------------------------------------------------- ArrayDataset / specs

def test_augment_spec_validation():
    with pytest.raises(ValueError, match="crop_padding"):
        AugmentSpec(crop_padding=-1)
    with pytest.raises(ValueError, match="hflip"):
        AugmentSpec(hflip=1)


def test_array_dataset_validation_and_batch():
    imgs = torch.arange(2 * 1 * 2 * 2, dtype=torch.uint8).reshape(2, 1, 2, 2) * 30
    ds = ArrayDataset("t", imgs, torch.tensor([0, 1]), 2, AugmentSpec())
    x, y = ds.batch(torch.tensor([1, 0]))
    assert x.dtype == torch.float32
    assert torch.equal(x, imgs[[1, 0]].float() / 255)
    assert y.tolist() == [1, 0]
    assert ds.in_shape == (1, 2, 2) and len(ds) == 2 and len(ds.subset(1)) == 1
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset("t", imgs, torch.tensor([0, 2]), 2, AugmentSpec())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ArrayDataset("t", imgs.float(), torch.tensor([0, 1]), 2, AugmentSpec())
    with pytest.raises(ValueError, match="dtype"):
        ArrayDataset("t", imgs.double() / 255, torch.tensor([0, 1]), 2, AugmentSpec())


def _labels_dataset(labels) -> ArrayDataset:
    labels = torch.tensor(labels, dtype=torch.int64)
    images = torch.arange(len(labels), dtype=torch.float32).div(len(labels)).reshape(-1, 1, 1, 1)
    return ArrayDataset("t", images, labels, int(labels.max()) + 1, AugmentSpec())


def test_subset_is_stratified_nested_and_independent_of_class_order():
    """``--limit-test``/``--samples`` subsets: every class in proportion (never a class-sorted
    split's first N); a smaller subset is the beginning of a larger one; the same images of each
    class whatever order the classes' blocks are stored in."""
    sorted_split = _labels_dataset([0] * 60 + [1] * 30 + [2] * 10)
    sub = sorted_split.subset(10)
    assert Counter(sub.labels.tolist()) == {0: 6, 1: 3, 2: 1}
    ids = lambda ds: (ds.images.flatten() * 100).round().long().tolist()  # noqa: E731 (which stored sample)
    whole = sorted_split.subset(100)
    assert sorted(ids(whole)) == list(range(100)) and sorted_split.subset(1000).labels.tolist() == whole.labels.tolist()
    for n in range(1, 100):
        part = sorted_split.subset(n)
        counts = Counter(part.labels.tolist())
        assert len(part) == n and ids(part) == ids(whole)[:n]
        for k, c in ((0, 60), (1, 30), (2, 10)):
            assert abs(counts.get(k, 0) - n * c / 100) <= 1, (n, counts)
    # the classes' blocks in another order: the same images of each class are chosen
    reordered = _labels_dataset([2] * 10 + [0] * 60 + [1] * 30)
    assert Counter(reordered.subset(17).labels.tolist()) == Counter(sorted_split.subset(17).labels.tolist())
    # a mixed split (digits'): proportional too
    _, test = load_dataset("digits")
    counts = Counter(test.subset(50).labels.tolist())
    assert sorted(counts) == list(range(10)) and max(counts.values()) - min(counts.values()) <= 1


def test_subset_of_a_class_sorted_image_folder_holds_every_class(tmp_path):
    write_pngs(tmp_path, {"a": 40, "b": 40})
    train, test = load_dataset("image-folder", str(tmp_path))
    assert train.labels[:36].tolist() == [0] * 36  # the folder is read class by class
    assert sorted(set(train.subset(36).labels.tolist())) == [0, 1]
    assert Counter(test.subset(4).labels.tolist()) == {0: 2, 1: 2}


def test_unknown_dataset_and_option():
    with pytest.raises(UserError, match="digits"):
        load_dataset("mnist-nope")
    with pytest.raises(UserError, match="grayscale"):
        load_dataset("image-folder", "/nonexistent", colour=True)
    assert set(DATASETS) == {"digits", "fashion-mnist", "cifar10", "cifar100", "image-folder"}


# ---------------------------------------------------------------- digits

def test_digits_shapes_split_deterministic_disjoint():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits")
    assert (len(train), len(test)) == (1437, 360)
    assert train.in_shape == (1, 8, 8) and train.images.dtype == torch.float32
    assert float(train.images.max()) == 1.0 and float(train.images.min()) == 0.0
    assert train.num_classes == 10 and train.augment == AugmentSpec(1, False)
    # stratified: every class in the test split with its share (+-1)
    counts = torch.bincount(test.labels, minlength=10)
    full = np.bincount(load_digits().target)
    assert np.all(np.abs(counts.numpy() - full * 0.2) <= 1)
    train2, test2 = load_dataset("digits")
    assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
    # together exactly the original images, each once (compared as a multiset of rows,
    # since digits holds a few duplicate images)
    raw = (load_digits().data.astype(np.float32) / 16).reshape(-1, 64)
    def keys(arr):
        return Counter(r.tobytes() for r in arr.reshape(len(arr), 64))
    assert keys(train.images.numpy()) + keys(test.images.numpy()) == keys(raw)
    with pytest.raises(UserError, match="data-root"):
        load_dataset("digits", "/tmp")


# ---------------------------------------------------------------- fashion-mnist

@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx(tmp_path, compress):
    ref = make_fashion(tmp_path, compress=compress)
    train, test = load_dataset("fashion-mnist", str(tmp_path))
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (5, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert np.array_equal(train.images[:, 0].numpy(), ref["train"][0])
    assert np.array_equal(test.labels.numpy(), ref["t10k"][1].astype(np.int64))
    assert train.augment == AugmentSpec(2, True)


def test_fashion_mnist_truncated(tmp_path):
    make_fashion(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-10]))  # valid gzip, idx body short
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", str(tmp_path))
    p.write_bytes(gzip.compress(raw)[:-20])  # gzip stream cut
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_fashion_mnist_bad_magic_and_count(tmp_path):
    make_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8), 2051)
    with pytest.raises(UserError, match="magic"):
        load_dataset("fashion-mnist", str(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), 2049)
    with pytest.raises(UserError, match="4 labels"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_fashion_mnist_missing(tmp_path):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist", str(tmp_path))
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and "--data-root" in str(e.value)


# ---------------------------------------------------------------- cifar

def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    parts = [write_cifar_batch(folder / f"data_batch_{i}", 3, b"labels", 10, i)
             for i in range(1, 6)]
    test_data, test_labels = write_cifar_batch(folder / "test_batch", 4, b"labels", 10, 9)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f)
    for root in (tmp_path, folder):  # parent or the folder itself
        train, test = load_dataset("cifar10", str(root))
        assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
        assert train.num_classes == 10 and train.augment == AugmentSpec(4, True)
        # channel planes: row 0's first 1024 bytes are the red plane of image 0
        assert np.array_equal(train.images[0, 0].numpy().ravel(), parts[0][0][0, :1024])
        assert np.array_equal(train.images[14, 2].numpy().ravel(), parts[4][0][2, 2048:])
        assert train.labels.tolist() == sum((p[1] for p in parts), [])
        assert test.labels.tolist() == test_labels


def test_cifar100_and_errors(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr_data, tr_labels = write_cifar_batch(folder / "train", 6, b"fine_labels", 100, 0)
    write_cifar_batch(folder / "test", 2, b"fine_labels", 100, 1)
    train, test = load_dataset("cifar100", str(tmp_path))
    assert train.num_classes == 100 and train.labels.tolist() == tr_labels
    assert np.array_equal(train.images.reshape(6, -1).numpy(), tr_data)
    assert len(test) == 2
    with pytest.raises(UserError, match="data-root"):
        load_dataset("cifar100", None)
    with pytest.raises(UserError, match="data_batch_1"):
        load_dataset("cifar10", str(tmp_path))
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test"):
        load_dataset("cifar100", str(folder))


# ---------------------------------------------------------------- image folder

def test_image_folder_auto_split(tmp_path):
    write_pngs(tmp_path, {"b_cat": 10, "a_dog": 5})
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(tmp_path / "a_dog" / "zz_big.png")
    train, test = load_dataset("image-folder", str(tmp_path))
    assert train.num_classes == 2
    assert len(train) + len(test) == 16
    # 10% per class, at least one: a_dog 6 images -> 1 test, b_cat 10 -> 1 test
    assert sorted(test.labels.tolist()) == [0, 1]
    assert train.in_shape == (3, 5, 6)  # size of the first image (a_dog/img00.png), H=5 W=6
    first = np.asarray(Image.open(tmp_path / "a_dog" / "img00.png"))
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), first)
    assert train.augment == AugmentSpec(0, True)  # 5 // 8
    train2, test2 = load_dataset("image-folder", str(tmp_path))
    assert torch.equal(test.images, test2.images) and torch.equal(train.labels, train2.labels)
    g_train, _ = load_dataset("image-folder", str(tmp_path), image_size=16, grayscale=True)
    assert g_train.in_shape == (1, 16, 16) and g_train.augment.crop_padding == 2


def test_image_folder_train_test(tmp_path):
    write_pngs(tmp_path / "train", {"x": 3, "y": 2})
    write_pngs(tmp_path / "test", {"x": 1, "y": 1}, start_seed=5)
    train, test = load_dataset("image-folder", str(tmp_path))
    assert (len(train), len(test)) == (5, 2)
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and test.labels.tolist() == [0, 1]
    (tmp_path / "test" / "z").mkdir()
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "test" / "z" / "a.png")
    with pytest.raises(UserError, match="different class"):
        load_dataset("image-folder", str(tmp_path))


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no class"):
        load_dataset("image-folder", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        load_dataset("image-folder", str(tmp_path))
    write_pngs(tmp_path / "other", {"k": 2})
    (tmp_path / "empty").rmdir()
    bad = tmp_path / "other" / "k" / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.jpg"):
        load_dataset("image-folder", str(tmp_path / "other"))


# ---------------------------------------------------------------- augmentation

def slow_augment(x, p, dy, dx, flip):
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    out = []
    for b in range(x.shape[0]):
        crop = xp[b, :, dy[b]:dy[b] + h, dx[b]:dx[b] + w]
        out.append(crop.flip(-1) if flip[b] else crop)
    return torch.stack(out)


def test_augment_identity_and_determinism():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert augment_batch(x, AugmentSpec(), torch.Generator()) is x
    spec = AugmentSpec(2, True)
    a = augment_batch(x, spec, torch.Generator().manual_seed(7))
    b = augment_batch(x, spec, torch.Generator().manual_seed(7))
    c = augment_batch(x, spec, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape


@pytest.mark.parametrize("p,hflip", [(1, False), (3, True), (0, True)])
def test_augment_matches_slow_reference(p, hflip):
    x = torch.rand(32, 2, 7, 9, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, AugmentSpec(p, hflip), torch.Generator().manual_seed(11))
    # Draw the same numbers in the documented order: dy [B], dx [B], flip [B].
    g = torch.Generator().manual_seed(11)
    dy = torch.randint(0, 2 * p + 1, (32,), generator=g)
    dx = torch.randint(0, 2 * p + 1, (32,), generator=g)
    flip = torch.rand(32, generator=g) < 0.5 if hflip else torch.zeros(32, dtype=torch.bool)
    assert torch.equal(out, slow_augment(x, p, dy.tolist(), dx.tolist(), flip.tolist()))
    if p:
        assert len(set(dy.tolist())) > 1  # offsets really vary
    if hflip:
        assert 0 < int(flip.sum()) < 32


def test_augment_flip_only_is_exact_mirror():
    x = torch.arange(64 * 1 * 2 * 3, dtype=torch.float32).reshape(64, 1, 2, 3)
    out = augment_batch(x, AugmentSpec(0, True), torch.Generator().manual_seed(1))
    flipped = torch.all((out == x.flip(-1)).reshape(64, -1), dim=1)
    same = torch.all((out == x).reshape(64, -1), dim=1)
    assert torch.all(flipped ^ same)  # each sample is either mirrored or untouched
    assert 15 < int(flipped.sum()) < 49


def test_augment_crop_keeps_content_shifted():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1.0
    for seed in range(10):
        out = augment_batch(x, AugmentSpec(1, False), torch.Generator().manual_seed(seed))
        # the single bright pixel moves by at most 1 in each direction, or leaves the frame
        pos = torch.nonzero(out[0, 0])
        assert pos.shape[0] <= 1
        if pos.shape[0]:
            assert abs(int(pos[0, 0]) - 1) <= 1 and abs(int(pos[0, 1]) - 2) <= 1


# ---------------------------------------------------------------- encoding

def test_encode_direct_and_shapes():
    assert ENCODINGS == ("direct", "poisson")
    x = torch.rand(3, 1, 4, 5)
    d = encode(x, 6, "direct")
    assert d.shape == (6, 3, 1, 4, 5) and d.is_contiguous()
    assert torch.equal(d, x.unsqueeze(0).repeat(6, 1, 1, 1, 1))
    p = encode(x, 6, "poisson", torch.Generator().manual_seed(0))
    assert p.shape == (6, 3, 1, 4, 5) and set(p.unique().tolist()) <= {0.0, 1.0}


def test_encode_poisson_rate_and_determinism():
    x = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    s = encode(x, 4000, "poisson", torch.Generator().manual_seed(2))
    rate = s.mean(dim=0).reshape(-1)
    assert torch.allclose(rate, x.reshape(-1), atol=0.03)
    assert rate[0] == 0 and rate[-1] == 1
    s2 = encode(x, 4000, "poisson", torch.Generator().manual_seed(2))
    assert torch.equal(s, s2)


def test_encode_errors():
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ValueError, match="timesteps"):
        encode(x, 0, "direct")
    with pytest.raises(ValueError, match="poisson"):
        encode(x, 2, "rate")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode(x * 2, 2, "poisson", torch.Generator())
