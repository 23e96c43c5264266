"""Bring your own data: a folder of PNGs (one sub-folder per class, read class by class) through
`distill`, `run`, `export` and `simulate` (issue 31). The folders are scikit-learn's digits written
as PNG files, so the students learn something real; the evaluation subsets hold every class."""

from __future__ import annotations

import json
from collections import Counter

import h5py

from conftest import digit_pngs
from htakl_deploy.cli import main


def _labels(spikes_h5) -> Counter:
    with h5py.File(spikes_h5, "r") as f:
        return Counter(f["labels"][:].tolist())


def test_distill_then_run_on_a_class_sorted_folder_of_537_pngs(tmp_path, capsys):
    root = digit_pngs(tmp_path / "pngs", classes=(0, 1, 2))  # 178 + 182 + 177 PNGs, 0 first
    assert sum(1 for _ in root.rglob("*.png")) == 537
    out = tmp_path / "runs"
    rc = main(["distill", "--data", "image-folder", "--data-root", str(root), "--out-dir", str(out),
               "--run-name", "r", "--batch-size", "32", "--epochs", "3", "--teacher-epochs", "2",
               "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["train_samples"], summary["test_samples"]) == (483, 54)  # 90/10 per class
    run = out / "r"
    # the rest of the pipeline on the distilled run (Lava on 6 images: two of each class)
    rc = main(["run", "--resume", str(run), "--lava-samples", "6", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    export = json.loads((run / "export" / "export_report.json").read_text())
    assert export["nir"]["accuracy"]["samples"] == 54 and export["lava"]["lava_check"]["samples"] == 4
    for backend, n in (("torch-float", 54), ("emulator", 54), ("lava-fixed_pt", 6)):
        assert json.loads((run / "simulate" / backend / "simulate.json").read_text())["samples"] == n
    assert _labels(run / "simulate" / "emulator" / "spikes.h5") == {0: 18, 1: 18, 2: 18}
    assert _labels(run / "simulate" / "lava-fixed_pt" / "spikes.h5") == {0: 2, 1: 2, 2: 2}
    lava = json.loads((run / "simulate" / "lava-fixed_pt" / "simulate.json").read_text())
    assert lava["agreement"]["spike_agreement"]["all"] == 1.0
    assert result["accuracy"]["emulator"] > 0.6  # three digits, chance 1/3: the student learnt them
    assert (run / "report.html").exists() and (run / "map" / "loihi2.json").exists()


def test_run_on_a_72_image_folder_adapts_the_batch_size(tmp_path, capsys):
    root = digit_pngs(tmp_path / "pngs", classes=(3, 7), per_class=36)  # 64 training, 8 test images
    out = tmp_path / "runs"
    rc = main(["run", "--data", "image-folder", "--data-root", str(root), "--out-dir", str(out), "--run-name", "r",
               "--epochs", "12", "--teacher-epochs", "6", "--no-lava", "--no-progress", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "--batch-size lowered from 128 to 16: the training set holds 64 images" in captured.err
    run = out / "r"
    assert json.loads((run / "config.json").read_text())["batch_size"] == 16  # what --resume continues with
    assert _labels(run / "simulate" / "emulator" / "spikes.h5") == {0: 4, 1: 4}
    assert json.loads(captured.out)["accuracy"]["emulator"] > 0.5
    # the stages by hand on the same run: export and simulate read the test images the run used
    # (from the folder the user names: a checkpoint's saved config never chooses what is read)
    data = ["--data-root", str(root)]
    assert main(["export", str(run), "--target", "nir", "--out", str(tmp_path / "exp"), *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nir"]["accuracy"]["samples"] == 8
    assert main(["simulate", str(run), "--backend", "emulator", "--samples", "4", "--out", str(tmp_path / "sim"),
                 *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4
    assert _labels(tmp_path / "sim" / "spikes.h5") == {0: 2, 1: 2}


def test_a_batch_size_the_folder_cannot_fill_is_refused_with_the_fix(tmp_path, capsys):
    root = digit_pngs(tmp_path / "pngs", classes=(3, 7), per_class=36)
    out = tmp_path / "runs"
    rc = main(["distill", "--data", "image-folder", "--data-root", str(root), "--out-dir", str(out),
               "--batch-size", "100", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "--batch-size 100 is larger than the training set (64 images" in err
    assert "give --batch-size 64 or less, e.g. 16" in err
    assert not out.exists()
