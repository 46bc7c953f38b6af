"""edge-train and edge-eval end to end on tiny runs; the labelled-data pools; augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge import contract
from edge.datasets import DatasetWriter, ObjectLabel, load_dataset
from train import data as D
from train import evaluate
from train.cli import main as train_main

pytestmark = pytest.mark.slow


def _write_blob_voc(root, n: int, seed: int):
    """A small VOC data set of bright squares on noise (negatives every third image)."""
    import cv2  # noqa: F401  (DatasetWriter writes with OpenCV)

    rng = np.random.default_rng(seed)
    with DatasetWriter(root, "voc", ["stamp"]) as w:
        for i in range(n):
            img = rng.integers(30, 110, (96, 160, 3)).astype(np.uint8)
            objects = []
            if i % 3:
                s = int(rng.integers(20, 40))
                x, y = int(rng.integers(0, 160 - s)), int(rng.integers(0, 96 - s))
                img[y : y + s, x : x + s] = (40, 230, 250)
                objects.append(ObjectLabel("stamp", (x, y, x + s, y + s)))
            w.add(f"img{i:03d}", img, objects)
    return root


def test_edge_train_tiny_synthetic_run_then_edge_eval_loads_it(tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_main(
        [
            "--out",
            str(out),
            "--synthetic",
            "256",
            "--val-size",
            "64",
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--batch-size",
            "8",
            "--workers",
            "1",
            "--seed",
            "3",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for name in ("model.keras", "config.json", "metrics.json", "history.json", "curves.png", "model.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_run"] == 6 and metrics["n_train"] == 256 and metrics["n_val"] == 64
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["kind"] == "box"
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [3, 6]
    data = _write_blob_voc(tmp_path / "voc", 12, 1)
    js = tmp_path / "eval.json"
    sheet = tmp_path / "sheet.png"
    assert (
        evaluate.main(
            [
                "--model",
                str(out / "model.keras"),
                "--data",
                str(data),
                "--json",
                str(js),
                "--sheet",
                str(sheet),
            ]
        )
        == 0
    )
    result = json.loads(js.read_text())
    for key in (
        "iou_mean",
        "iou_median",
        "presence_accuracy",
        "precision",
        "recall",
        "f1",
        "center_error_mean",
        "n_images",
        "center_within_0_05",
    ):
        assert key in result
    assert result["n_images"] == 12 and sheet.stat().st_size > 1000


def test_edge_train_on_labelled_data_with_subset_and_time_budget(tmp_path, capsys):
    data = _write_blob_voc(tmp_path / "voc", 30, 2)
    subset = tmp_path / "train.txt"
    subset.write_text("\n".join(f"img{i:03d}.jpg" for i in range(20)) + "\n")
    out = tmp_path / "run"
    rc = train_main(
        [
            "--out",
            str(out),
            "--data",
            str(data),
            "--subset",
            str(subset),
            "--copies",
            "4",
            "--steps",
            "1000",
            "--eval-every",
            "2",
            "--batch-size",
            "8",
            "--minutes",
            "0.05",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 18 * 4 + 2  # 20 listed images: 18 train x4 crops, 2 val
    assert metrics["steps_run"] < 1000 and "time budget" in metrics["stop_reason"]
    assert (out / "model.keras").exists()


def test_same_seed_same_pool(tmp_path):
    from edge.synth import Synthesizer

    synth = Synthesizer()
    a, _ = D.synthetic_pool(synth, 5, 40, workers=1)
    b, _ = D.synthetic_pool(synth, 5, 40, workers=2)
    c, _ = D.synthetic_pool(synth, 6, 40, workers=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, c.images)


def test_labelled_pool_targets_and_augmentation_keep_the_object(tmp_path):
    data = _write_blob_voc(tmp_path / "voc", 9, 3)
    ds = load_dataset(data)
    plain = D.labelled_pool(ds, ("stamp",), 0, copies=0)
    assert len(plain) == 9 and plain.presence.sum() == 6
    aug = D.labelled_pool(ds, ("stamp",), 0, copies=5)
    assert len(aug) == 45
    for i in np.flatnonzero(aug.presence):
        x0, y0, x1, y1 = (aug.boxes[i] * contract.INPUT_WIDTH).round().astype(int)
        patch = aug.images[i, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].astype(int)
        # the bright square (RGB ~ 250, 230, 40 before jitter) fills the box it is labelled with
        assert patch.size and (patch[..., 0] - patch[..., 2]).mean() > 60


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent/labels"], "nonexistent"),
        (["--subset", "x.txt"], "--subset needs --data"),
        (["--stamp", "/nonexistent/stamp.png"], "stamp.png"),
    ],
)
def test_edge_train_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    rc = train_main(["--out", str(tmp_path / "o"), "--steps", "1", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
