"""edge-train and edge-eval end to end on tiny runs; the labelled-data pools; augmentation."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_blob_voc

from edge import contract
from edge.datasets import DatasetWriter, ObjectLabel, load_dataset
from train import data as D
from train import evaluate
from train.cli import main as train_main

pytestmark = pytest.mark.slow


def test_edge_train_tiny_synthetic_run_then_edge_eval_loads_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.jpg"), np.full((96, 128, 3), 60 + 80 * i, np.uint8))
    monkeypatch.chdir(tmp_path)  # the photos given relative to here
    rc = train_main(
        [
            "--out",
            str(out),
            "--backgrounds",
            "photos",
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
    # recorded absolute: edge-convert, run from another folder, takes the same photos
    assert config["backgrounds"] == str(photos) and config["out"] == str(out)
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [3, 6]
    data = write_blob_voc(tmp_path / "voc", 12, 1)
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
    data = write_blob_voc(tmp_path / "voc", 30, 2)
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
            "--ema",
            "0.99",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["ema"] == 0.99
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
    data = write_blob_voc(tmp_path / "voc", 9, 3)
    ds = load_dataset(data)
    plain = D.labelled_pool(ds, ("stamp",), 0, copies=0)
    assert len(plain) == 9 and plain.presence.sum() == 6
    aug = D.labelled_pool(ds, ("stamp",), 0, copies=5)
    assert len(aug) == 45
    for i in np.flatnonzero(aug.presence):
        x0, y0, x1, y1 = (aug.boxes[i] * contract.INPUT_WIDTH).round().astype(int)
        patch = aug.images[i, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].astype(int)
        # the bright square (RGB ~ 250, 230, 40 before jitter) fills the box it is labelled with;
        # random erasing may hide up to half of it, never more
        assert patch.size and ((patch[..., 0] - patch[..., 2]) > 60).mean() > 0.45
    # the erased rectangles are there (flat colour or noise), and the same seed gives the same pool
    assert not np.array_equal(aug.images, D.labelled_pool(ds, ("stamp",), 1, copies=5).images)
    assert np.array_equal(aug.images, D.labelled_pool(ds, ("stamp",), 0, copies=5).images)


def test_weight_average_follows_the_weights_and_gives_them_back():
    import keras

    from train.loop import WeightAverage

    v = keras.Variable(np.zeros(3, np.float32))
    ema = WeightAverage([v], 0.5)
    expected = 0.0
    for n, value in enumerate([10.0, 20.0, 20.0, -4.0], start=1):
        v.assign(np.full(3, value, np.float32))
        ema.update()
        rate = 1 - min(0.5, (1 + n) / (10 + n))  # the decay warms up: 2/11, 3/12, then 0.5
        expected += rate * (value - expected)
    with ema.applied():
        assert np.allclose(v.numpy(), expected, atol=1e-5) and not np.isclose(expected, -4.0)
    assert np.allclose(v.numpy(), -4.0)  # training goes on from its own weights


def test_checkpoints_that_tie_on_a_saturated_validation_set_are_told_apart_by_centre_error():
    from train.loop import score_of

    def m(within, err, iou=float("nan"), pres=1.0):
        return {
            "center_within_0_05": within,
            "center_error_mean": err,
            "iou_mean": iou,
            "presence_accuracy": pres,
        }

    # ten photos: every checkpoint from step 800 on has all ten within 0.05 and presence 1.0
    early, later = m(1.0, 0.021), m(1.0, 0.009)
    assert score_of("center", later) > score_of("center", early)
    # the tie-break never outweighs the criterion itself: one more photo within 0.05 wins
    assert score_of("center", m(1.0, 0.04)) > score_of("center", m(0.9, 0.005))
    assert score_of("center", m(1.0, 0.04)) > score_of("center", m(1.0, 0.005, pres=0.9))
    assert score_of("box", m(0.5, 0.2, iou=0.81)) > score_of("box", m(1.0, 0.001, iou=0.80))
    # no centre measured at all (nothing detected) ranks below any measured one
    assert score_of("center", m(0.0, float("nan"))) < score_of("center", m(0.0, 0.9))


def test_random_erasing_never_hides_more_than_half_of_the_object():
    obj = np.array([0.3, 0.4, 0.5, 0.6])  # normalised xyxy: 25 x 25 pixels of a 128 x 128 input
    x0, y0, x1, y1 = (obj * 128).astype(int)
    erased = 0
    for seed in range(300):
        out = D._erase(np.full((128, 128, 3), 7, np.uint8), obj, np.random.default_rng(seed))
        changed = (out != 7).any(axis=-1)
        erased += changed.any()
        # one pixel of rounding at the rectangle's edges
        assert changed[y0:y1, x0:x1].mean() <= 0.5 + 2 * 25 / (25 * 25)
    assert erased > 250  # it does erase (10 tries to place a rectangle; flat colour may be 7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent/labels"], "nonexistent"),
        (["--subset", "x.txt"], "--subset needs --data"),
        (["--stamp", "/nonexistent/stamp.png"], "stamp.png"),
        (["--weak"], "--weak needs labelled photos"),
        (["--weak", "--kind", "box"], "--weak trains a cam model"),
        (
            ["--data", "{tmp}/kept", "--out", "{tmp}/kept/run"],
            "--out {tmp}/kept/run: inside --data {tmp}/kept",
        ),
        (  # a data set's folder not given as --data: its model would land among the photos
            ["--out", "{tmp}/kept"],
            "--out {tmp}/kept: holds images (images/a.png, ...): a data set's folder, not one for a model",
        ),
        (  # an earlier run's folder, with a contact sheet beside its model, is taken again if told
            ["--out", "{tmp}/kept/run1", "--data", "/nonexistent/labels", "--overwrite"],
            "nonexistent",
        ),
        (
            ["--out", "{tmp}/kept/run1", "--data", "/nonexistent/labels"],
            "--out {tmp}/kept/run1: holds an earlier run (model.keras); give another folder, or --overwrite",
        ),
    ],
)
def test_edge_train_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "kept" / "images").mkdir(parents=True)
    (tmp_path / "kept" / "images" / "a.png").write_bytes(b"")
    (tmp_path / "kept" / "run1").mkdir()
    for name in ("model.keras", "test_int8.png"):
        (tmp_path / "kept" / "run1" / name).write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = train_main(["--out", str(tmp_path / "runs" / "o"), "--steps", "1", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]  # no empty run folder left behind


def test_edge_train_usage_error_for_a_decay_outside_0_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--out", str(tmp_path / "o"), "--ema", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--ema: expected a decay between 0 and 1" in err


def _write_blob_centres(root, n: int, seed: int):
    """Centre-point labels (``labels.txt``, as find_phone has them): a bright disc on noise."""
    import cv2

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        img = rng.integers(30, 110, (120, 180, 3)).astype(np.uint8)
        cx, cy = int(rng.integers(15, 165)), int(rng.integers(15, 105))
        cv2.circle(img, (cx, cy), 7, (40, 230, 250), -1)
        cv2.imwrite(str(root / f"c{i:03d}.png"), img)
        lines.append(f"c{i:03d}.png {cx / 180:.4f} {cy / 120:.4f}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root / "labels.txt"


def _blob_share(rgb: np.ndarray) -> float:
    """Share of the image that is the bright disc (RGB ~ 250, 230, 40 before jitter)."""
    x = rgb.astype(int)
    return float(((x[..., 0] - x[..., 2]) > 90).mean())


def test_weak_patches_hold_the_object_or_keep_clear_of_it(tmp_path):
    ds = load_dataset(_write_blob_centres(tmp_path / "c", 8, 4))
    pool = D.weak_pool(ds, seed=0, copies=10)
    assert len(pool) > 60 and 0.3 < pool.presence.mean() < 0.7
    assert not pool.has_box.any()  # no box is ever made up from a centre
    for image, present in zip(pool.images, pool.presence, strict=True):
        share = _blob_share(image)
        assert share > 0.003 if present else share < 0.001  # a stray noise pixel may pass the colour test


def test_a_direct_centre_model_of_a_list_without_negatives_is_said_never_to_learn_absent(tmp_path, capsys):
    """A labels.txt holds only images with the object: its direct model said 'present' on
    everything (every product OK on a line, unstamped ones too), and nothing said so."""
    labels = _write_blob_centres(tmp_path / "c", 12, 3)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(labels), "--steps", "2", "--eval-every", "2"]
    assert train_main([*argv, "--batch-size", "4", "--copies", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("edge-train: WARNING: no training image is without the object") == 2, err
    model_meta = json.loads((out / "model.json").read_text())
    assert model_meta["kind"] == "center" and model_meta["provenance"]["training_negatives"] == 0


def test_cells_loss_prefers_the_cells_at_the_stamp(tmp_path):
    from train.model import GRID, cells_loss

    truth = np.array([[0.5, 0.5, 0.7, 0.7, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    at = np.full((2, GRID, GRID), -6.0, np.float32)
    at[0, 9, 9] = 6.0  # cell centre (0.59, 0.59): the box's middle
    elsewhere = np.full((2, GRID, GRID), -6.0, np.float32)
    elsewhere[0, 2, 2] = 6.0
    good = np.asarray(cells_loss(truth, at.reshape(2, -1)))
    bad = np.asarray(cells_loss(truth, elsewhere.reshape(2, -1)))
    assert good[0] < 0.5 * bad[0] and good[1] == pytest.approx(bad[1])  # the negative: same either way
    fired = np.full((1, GRID * GRID), 6.0, np.float32)  # a negative where every cell fires
    assert float(np.asarray(cells_loss(truth[1:], fired))[0]) > 10 * float(good[1])


def test_weak_cam_centre_of_a_tiny_model_lands_on_the_blob(tmp_path, capsys):
    labels = _write_blob_centres(tmp_path / "c", 48, 5)
    val = _write_blob_centres(tmp_path / "v", 16, 6)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(labels), "--val", str(val), "--weak", "--copies", "12"]
    # 240 steps of a weak model land anywhere by seed (0.0-1.0 within 0.05 over seeds 0-3, with
    # Keras's batch norm and the fused kernel alike: 1.0/0.75, 0.06/0.0, 0.94/0.88, 0.13/0.25);
    # seed 2 learns the blob with both
    rc = train_main(
        [*argv, "--steps", "240", "--eval-every", "80", "--batch-size", "32", "--seed", "2", "--quiet"]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "cam"
    assert metrics["val"]["center_within_0_05"] >= 0.8, metrics["val"]
    model_meta = json.loads((out / "model.json").read_text())
    assert model_meta["kind"] == "cam"
    assert model_meta["provenance"]["training_negatives"] > 0  # the patches clear of the blob


def _grid_model_with_a_varied_grid(kind: str):
    """An untrained grid model whose cell logits vary strongly with the image (random 1x1 kernel)."""
    from train.model import build_model

    model = build_model(kind, head="grid")
    bn = model.get_layer("fpn_pw_bn")  # untrained features are ~1e-6 in inference mode: amplify them
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([np.full_like(gamma, 1e6), beta, mean, var])
    layer = model.get_layer("cell_logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.random.default_rng(0).normal(0, 2.0, kernel.shape).astype(np.float32), bias])
    return model


@pytest.mark.parametrize("kind", ["box", "center"])
def test_the_graph_decodes_the_grid_exactly_as_the_device_does(kind, tmp_path):
    """Training's in-graph box/centre (what the loss sees) == edge.contract.decode_grid (what runs),
    for the Keras model and for its float32 TFLite conversion through the device's runtime."""
    from conftest import blob_set

    from convert.tflite import convert, embed_metadata
    from edge.runtime import CallableDetector, TFLiteDetector
    from train.model import inference_model, load_model, warm_start

    trained = _grid_model_with_a_varied_grid(kind)
    saved = inference_model(trained)
    decoded = contract.BOX if kind == "box" else contract.CENTER
    assert decoded in trained.output_names and decoded not in saved.output_names
    images = blob_set(24, 3)[0]
    graph = {k: np.asarray(v) for k, v in trained(images.astype(np.float32)).items()}
    assert np.ptp(graph[contract.CELLS]) > 2.0  # a varied grid, not a flat one
    meta = contract.ModelMetadata(kind=kind)
    keras_preds = CallableDetector(lambda x: saved(x.astype(np.float32)), meta).predict_batch(list(images))
    path = tmp_path / "m.tflite"
    path.write_bytes(embed_metadata(convert(saved, "float32"), meta))
    lite_preds = TFLiteDetector(path).predict_batch(list(images))
    want = np.clip(graph[decoded], 0, 1)
    saved.save(tmp_path / "m.keras")  # fine-tuning (--init) rebuilds the decode on the loaded model
    again, fresh, _ = warm_start(load_model(tmp_path / "m.keras"), kind, 1)
    assert fresh == []
    assert np.abs(np.asarray(again(images.astype(np.float32))[decoded]) - graph[decoded]).max() < 1e-5
    for preds in (keras_preds, lite_preds):
        got = np.array([p.box if kind == "box" else p.center for p in preds])
        assert np.abs(got - want).max() < 1e-4


def test_fine_tuning_a_single_stamp_model_into_variants_keeps_what_it_learned():
    """--init from a one-stamp model with three variants: every layer but the new class head
    starts from the loaded weights, so presence and box are the loaded model's to start with."""
    from conftest import blob_set

    from train.model import build_model, warm_start

    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    single = build_model("box", 1, head="dense")
    model, fresh, _ = warm_start(single, "box", 3)
    assert sorted(fresh) == ["class_logits", "class_reduce16"]
    images = blob_set(6, 5)[0].astype(np.float32)
    before, after = single(images, training=False), model(images, training=False)
    for name in (contract.PRESENCE, contract.BOX):
        assert np.abs(np.asarray(before[name]) - np.asarray(after[name])).max() < 1e-6
    probs = np.asarray(after[contract.CLASS])
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    _, fresh, _ = warm_start(single, "box", 3, head="grid")  # another head: only the backbone carries over
    assert "cell_logits" in fresh and "backbone" not in fresh
    # a model saved when the box output had a sigmoid: its box weights mean logits, so they start fresh
    single.get_layer(contract.BOX).activation = keras.activations.get("sigmoid")
    assert warm_start(single, "box", 1)[1] == [contract.BOX]


def test_warm_start_class_head_follows_the_variants_by_name_not_by_position():
    """A three-variant model fine-tuned on its variants in another order: each variant keeps its
    own class scores (copied by position, every stamp was read as another: class accuracy
    0.74 -> 0.01 in a helper's fine-tune); another set of variants starts the head fresh; a class
    head left out (one stamp from three) is named."""
    from conftest import blob_set

    from train.model import build_model, warm_start

    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(5)
    three = build_model("box", 3, head="dense")
    images = blob_set(6, 5)[0].astype(np.float32)
    before = np.asarray(three(images, training=False)[contract.CLASS])
    init_labels, labels = ["approved", "inspected", "qc-passed"], ["inspected", "qc-passed", "approved"]
    model, fresh, dropped = warm_start(three, "box", 3, labels=labels, init_labels=init_labels)
    assert fresh == [] and dropped == []
    after = np.asarray(model(images, training=False)[contract.CLASS])
    assert np.allclose(after, before[:, [1, 2, 0]], atol=1e-5)  # each label's column, by name
    _, fresh, _ = warm_start(three, "box", 3, labels=["a", "b", "c"], init_labels=init_labels)
    assert fresh == ["class_logits"]
    _, fresh, dropped = warm_start(three, "box", 1)
    assert fresh == [] and sorted(dropped) == ["class_logits", "class_reduce16"]


def test_fused_batch_norm_trains_exactly_as_keras_own_and_saves_as_keras_own(tmp_path):
    """Training with the fused kernel gives the same weights, moving statistics and outputs as
    Keras's batch norm, step by step (a frozen layer and inference take Keras's path), and the
    saved model has Keras's own layer."""
    keras = pytest.importorskip("keras")
    from train.model import fuse_batch_norm

    def make():
        keras.utils.set_random_seed(1)
        inp = keras.Input((16, 16, 8))
        # no biases before a batch norm (as in MobileNet): their gradient is rounding noise,
        # which Adam would scale up to whole steps
        x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.8)(x))
        x = keras.layers.DepthwiseConv2D(3, use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.8, center=False, name="no_centre")(x)
        x = keras.layers.BatchNormalization(name="frozen")(keras.layers.ReLU()(x))
        model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
        model.get_layer("frozen").trainable = False
        return model

    keras_bn, fused = make(), make()
    norms = [layer for layer in fused.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [fuse_batch_norm(layer) for layer in norms] == [True, True, True]
    x = np.random.default_rng(0).normal(3, 2, (6, 16, 16, 8)).astype(np.float32)
    y = np.linspace(-1, 1, 6, dtype=np.float32)[:, None]
    for model in (keras_bn, fused):
        model.compile(keras.optimizers.Adam(0.01), "mse")
    for _ in range(4):
        losses = [model.train_on_batch(x, y) for model in (keras_bn, fused)]
        assert abs(losses[0] - losses[1]) < 1e-4 * max(1.0, abs(losses[0]))
        for a, b in zip(keras_bn.weights, fused.weights, strict=True):
            assert np.abs(a.numpy() - b.numpy()).max() < 1e-4, a.path
    moving = [w.numpy() for w in fused.weights if "moving_mean" in w.path]
    assert np.abs(moving[0]).max() > 0.1  # the statistics did move (and alike, above)
    assert np.abs(np.asarray(keras_bn(x)) - np.asarray(fused(x))).max() < 1e-4
    fused.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("frozen")) is keras.layers.BatchNormalization
    assert np.abs(np.asarray(loaded(x)) - np.asarray(fused(x))).max() < 1e-6


def _args(argv):
    from train.cli import build_parser

    return build_parser().parse_args(argv)


def test_val_subset_without_val_holds_those_images_of_data_out(tmp_path):
    from train.cli import prepare_data

    data = write_blob_voc(tmp_path / "voc", 12, 3)
    (tmp_path / "val.txt").write_text("img000.jpg\nimg001.jpg\nimg002.jpg\n")
    val = str(tmp_path / "val.txt")
    args = _args(["--out", str(tmp_path / "o"), "--data", str(data), "--val-subset", val])
    args.copies, args.quiet = 2, True
    prep = prepare_data(args)
    assert len(prep.val) == 3  # the listed images, not a 10% split
    assert len(prep.train) == (12 - 3) * 2  # the others, two crops each; none of the listed ones


def test_default_crops_per_photo_fill_a_pool_of_about_the_target_size(tmp_path, monkeypatch):
    from train.cli import prepare_data

    # 144 photos (the raccoon set's training split) get the most, a large set the fewest
    assert D.default_copies(144) == D.MAX_COPIES == 200
    assert D.default_copies(2000) == 15 and D.default_copies(10**6) == D.MIN_COPIES == 2
    monkeypatch.setattr(D, "LABELLED_POOL_TARGET", 50)
    monkeypatch.setattr(D, "MIN_COPIES", 1)
    data = write_blob_voc(tmp_path / "voc", 11, 3)
    args = _args(["--out", str(tmp_path / "o"), "--data", str(data), "--val-split", "0.1", "--quiet"])
    prep = prepare_data(args)
    assert len(prep.train) == 10 * 5  # ten training photos, ceil(50 / 10) crops each
    assert "10 labelled images from" in prep.description and "5 crops each" in prep.description
    args = _args(["--out", str(tmp_path / "o"), "--data", str(data), "--copies", "2", "--quiet"])
    assert len(prepare_data(args).train) == 10 * 2


def test_one_stamp_and_photos_of_one_class_train_one_class(tmp_path, capsys):
    import cv2

    from train.cli import prepare_data

    data = write_blob_voc(tmp_path / "voc", 6, 4)
    stamp = np.zeros((40, 40, 4), np.uint8)
    cv2.circle(stamp, (20, 20), 15, (30, 30, 200, 255), 4)
    cv2.imwrite(str(tmp_path / "my_seal.png"), stamp)
    sizes = ["--synthetic", "16", "--val-size", "8", "--copies", "1", "--workers", "2"]
    args = _args(
        ["--out", str(tmp_path / "o"), "--data", str(data), "--stamp", str(tmp_path / "my_seal.png"), *sizes]
    )
    prep = prepare_data(args)
    assert prep.labels == ("stamp",)  # not ('my_seal', 'stamp'): no class head telling real from synthetic
    assert "'my_seal' is trained as the data's label 'stamp'" in capsys.readouterr().err


def test_without_validation_images_the_lowest_loss_checkpoint_is_saved(tmp_path, capsys):
    data = write_blob_voc(tmp_path / "voc", 6, 5)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(data), "--val-split", "0", "--copies", "2"]
    rc = train_main([*argv, "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_val"] == 0 and metrics["best_step"] in (2, 4)
    assert (out / "model.keras").is_file()
    assert "WARNING: no validation images (6 labelled, --val-split 0.0)" in capsys.readouterr().err
    # fine-tuned from it: the provenance names the model it started from, by path and hash
    again = tmp_path / "again"
    argv = [
        "--out",
        str(again),
        "--data",
        str(data),
        "--val-split",
        "0",
        "--copies",
        "2",
        "--init",
        str(out / "model.keras"),
    ]
    assert train_main([*argv, "--steps", "2", "--eval-every", "2", "--batch-size", "4", "--quiet"]) == 0
    digest = hashlib.sha256((out / "model.keras").read_bytes()).hexdigest()[:12]
    assert (
        json.loads((again / "model.json").read_text())["provenance"]["init"]
        == f"{out / 'model.keras'} (sha256 {digest})"
    )
    # a command repeated from the shell's history does not replace a run without being told to,
    # and a run never writes over the model it starts from
    capsys.readouterr()
    short = ["--steps", "2", "--eval-every", "2", "--batch-size", "4", "--quiet"]
    assert train_main([*argv, *short]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"edge-train: error: --out {again}: holds an earlier run (model.keras, model.json, config.json); "
        "give another folder, or --overwrite to replace it"
    )
    at_out = [*argv[:1], str(out), *argv[2:]]  # --init out/model.keras --out out
    assert train_main([*at_out, *short, "--overwrite"]) == 2
    assert "the model this run writes over in --out" in capsys.readouterr().err
    assert hashlib.sha256((out / "model.keras").read_bytes()).hexdigest()[:12] == digest
    # the earlier model's conversion beside the new model is kept, and said to be stale (before
    # training and again at its end, where an engineer reads on to deploy)
    (again / "model_int8.tflite").write_bytes(b"the earlier model, converted")
    assert train_main([*argv, *short, "--overwrite"]) == 0
    stale = [line for line in capsys.readouterr().err.splitlines() if "model_int8.tflite" in line]
    assert len(stale) == 2 and stale[0] == stale[1], stale
    assert "converted from the earlier model" in stale[0] and "edge-convert" in stale[0]
    assert (again / "model_int8.tflite").read_bytes() == b"the earlier model, converted"


def test_labelled_photos_without_a_single_object_are_refused(tmp_path, capsys):
    with DatasetWriter(tmp_path / "voc", "voc", ["stamp"]) as w:
        for i in range(3):
            w.add(f"n{i}", np.full((40, 60, 3), 50 * i, np.uint8), [])
    argv = ["--out", str(tmp_path / "o"), "--data", str(tmp_path / "voc"), "--steps", "1"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "voc: none of its 3 images has a labelled object" in err[0], err


def test_a_validation_split_that_holds_out_every_photo_is_refused(tmp_path, capsys):
    with DatasetWriter(tmp_path / "voc", "voc", ["stamp"]) as w:
        for i in range(3):
            w.add(f"t{i}", np.full((40, 60, 3), 50 * i, np.uint8), [ObjectLabel("stamp", (5, 5, 20, 20))])
    argv = ["--out", str(tmp_path / "o"), "--data", str(tmp_path / "voc"), "--steps", "1", "--val-split", "1"]
    assert train_main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"edge-train: error: --val-split 1: holds out all 3 images of {tmp_path / 'voc'}; none left to "
        "train on (expected a share below 1)"
    ]
    assert not (tmp_path / "o").exists()


def test_a_validation_set_labelled_with_other_variants_is_refused(tmp_path, capsys):
    """Variants trained on and a --val set that names others: its class accuracy could not be
    measured, and checkpoints would be chosen without it."""
    with DatasetWriter(tmp_path / "train", "voc", ["round", "square"]) as w:
        for i in range(4):
            w.add(
                f"t{i}",
                np.full((40, 60, 3), 50 * i, np.uint8),
                [ObjectLabel(["round", "square"][i % 2], (5, 5, 20, 20))],
            )
    with DatasetWriter(tmp_path / "val", "voc", ["stamp"]) as w:
        w.add("v0", np.full((40, 60, 3), 90, np.uint8), [ObjectLabel("stamp", (5, 5, 20, 20))])
    argv = ["--out", str(tmp_path / "o"), "--data", str(tmp_path / "train"), "--val", str(tmp_path / "val")]
    assert train_main([*argv, "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"edge-train: error: --val {tmp_path / 'val'}: its labels ['stamp'] are not among the variants "
        "trained on ['round', 'square']; expected a validation set labelled with the same names"
    ]


def test_weights_that_are_not_weights_are_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "garbage.h5").write_bytes(b"not an HDF5 file")
    argv = ["--out", str(tmp_path / "o"), "--synthetic", "8", "--steps", "1"]
    assert train_main([*argv, "--weights", str(tmp_path / "garbage.h5")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"edge-train: error: --weights {tmp_path / 'garbage.h5'}: not a Keras model file "
        "(expected an HDF5 .h5 file)"
    ]
    (tmp_path / "white.jpg").write_bytes(b"\xff\xd8")  # a stamp picture given by mistake
    assert train_main([*argv, "--weights", str(tmp_path / "white.jpg")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"edge-train: error: --weights {tmp_path / 'white.jpg'}: expected a Keras model (.keras) or "
        "weights (.h5) file"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "nan"], "argument --lr: expected a finite number"),
        (["--lr", "-0.1"], "argument --lr: expected a number > 0"),
        (["--minutes", "0"], "argument --minutes: expected a number > 0"),
        (["--batch-size", "0"], "argument --batch-size: expected a number > 0"),
    ],
)
def test_edge_train_usage_errors_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err


def test_edge_train_refuses_an_out_file_and_an_init_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert train_main(["--out", str(tmp_path / "file"), "--steps", "1"]) == 2
    assert "is a file (expected a folder" in capsys.readouterr().err
    data = write_blob_voc(tmp_path / "voc", 6, 6)
    (tmp_path / "junk.keras").write_text("not a model")
    argv = ["--out", str(tmp_path / "o"), "--data", str(data), "--copies", "1", "--steps", "1"]
    assert train_main([*argv, "--init", str(tmp_path / "junk.keras"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "junk.keras: not a Keras model file" in err and "Traceback" not in err
    # a zip archive that is not a Keras model (a KeyError traceback from keras, after the data
    # were prepared) is refused before anything else is done
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as z:
        z.writestr("weights.h5", "x")
    assert train_main([*argv, "--init", str(tmp_path / "zip.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"edge-train: error: --init {tmp_path / 'zip.keras'}: not a Keras model file "
        "(a zip archive without the config.json of a .keras model)"
    ], err


def test_synthetic_workers_start_after_opencv_ran_threads_in_this_process(tmp_path):
    """Forked workers hung for good in OpenCV once the parent had run its thread pool (here by
    writing a large product photo), as edge-train did with a folder of 12-megapixel photos."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import sys, cv2, numpy as np\n"
        "from edge.synth import Backgrounds, Synthesizer\n"
        "from train import data as D\n"
        "folder = sys.argv[1]\n"
        "big = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)\n"
        "cv2.imwrite(folder + '/big.jpg', big)\n"
        "pool, _ = D.synthetic_pool(Synthesizer(None, Backgrounds(folder)), 0, 16, 2, progress=False)\n"
        "print(len(pool))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers too can be killed if they hang
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the synthetic workers hung")
    assert proc.returncode == 0 and out.strip() == "16", err[-2000:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sheet", "{tmp}/sheet.xyz"], "--sheet {tmp}/sheet.xyz: expected an image file"),
        (["--sheet", "{tmp}"], "is a folder (expected a file for the contact sheet)"),
        (["--json", "/proc/no-such/m.json"], "cannot make its folder /proc/no-such"),
        (["--per-image", "{tmp}/rows.txt"], "--per-image {tmp}/rows.txt: expected a .csv file"),
        (["--json", "{tmp}/voc/m.json"], "--json {tmp}/voc/m.json: inside --data {tmp}/voc"),
        (["--json", "{tmp}/none.tflite"], "--json {tmp}/none.tflite: the same as --model"),
        (["--json", "{tmp}/none.json"], "--json {tmp}/none.json: the same as the model's record"),
        (
            ["--json", "{tmp}/r.csv", "--per-image", "{tmp}/r.csv"],
            "--per-image {tmp}/r.csv: the same as --json",
        ),
        (["--sheet-order", "worst"], "--sheet-order worst: needs --sheet FILE.png"),
        (["--threads", "0"], "argument --threads: expected a number > 0"),
        (["--threads", "99999"], "argument --threads: expected at most 64 threads, got 99999"),
        (["--model", "{tmp}/junk.keras"], "junk.keras: not a Keras model file"),
        (
            ["--model", "{tmp}/junk.keras", "--runtime", "ai_edge_litert"],
            "--runtime ai_edge_litert: chooses the interpreter of a .tflite model",
        ),
    ],
)
def test_edge_eval_refuses_outputs_it_cannot_write_before_it_runs(tmp_path, capsys, extra, message):
    data = write_blob_voc(tmp_path / "voc", 3, 7)
    (tmp_path / "junk.keras").write_text("not a model")
    (tmp_path / "none.json").write_text("{}")  # a record beside the model, as the bundled one has
    argv = ["--model", str(tmp_path / "none.tflite"), "--data", str(data)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    try:
        rc = evaluate.main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message.replace("{tmp}", str(tmp_path)) in err[0], err


def test_edge_eval_keeps_its_outputs_out_of_a_voc_set_given_by_its_annotations_folder(tmp_path, capsys):
    """--data named a VOC set's annotations/ folder: a sheet went among its photos, and was read as
    an unlabelled image from then on. (Beside a label file given as --data, outputs are fine: the
    set reads what its label file names; see the CSV test below.)"""
    voc = write_blob_voc(tmp_path / "voc", 3, 7)
    argv = ["--model", str(tmp_path / "none.tflite"), "--data", str(voc / "annotations")]
    assert evaluate.main([*argv, "--sheet", str(voc / "images" / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"inside the data set's folder {voc} (write it outside the data)" in err[0], err


def test_edge_eval_says_what_its_class_figures_and_sheet_leave_out(tmp_path, capsys):
    from edge.cli.synth import main as synth_main

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "66", "--seed", "3"]) == 0  # labelled 'stamp'
    capsys.readouterr()
    model = Path(__file__).parent / "fixtures" / "variants_int8.tflite"  # approved, inspected, qc-passed
    js = tmp_path / "m.json"
    argv = ["--model", str(model), "--data", str(data), "--json", str(js), "--sheet", str(tmp_path / "s.png")]
    assert evaluate.main(argv) == 0
    said = capsys.readouterr()
    assert "the data's labels ['stamp'] are not among the model's" in said.err
    assert "the sheet shows the first 64 of 66 images" in said.out
    result = json.loads(js.read_text())
    assert result["class_accuracy"] is None  # not 0: no object carries one of the model's labels
    assert result["n_positive"] == result["true_positives"] + result["false_negatives"]


def test_edge_eval_breaks_its_figures_down_by_variant(tmp_path, capsys):
    from edge.cli.synth import main as synth_main

    data = tmp_path / "d"
    assert synth_main(["--variants", "3", "--out", str(data), "--n", "48", "--seed", "5"]) == 0
    capsys.readouterr()
    model = Path(__file__).parent / "fixtures" / "variants_int8.tflite"
    js = tmp_path / "m.json"
    argv = ["--model", str(model), "--data", str(data), "--json", str(js), "--refine", "off"]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads(js.read_text())
    labels = result["by_label"]
    assert sorted(labels) == ["approved", "inspected", "qc-passed"]
    assert sum(m["n_positive"] for m in labels.values()) == result["n_positive"]
    found = sum(round(m["recall"] * m["n_positive"]) for m in labels.values())
    assert found == result["true_positives"]
    ious = sum(m["iou_mean"] * m["n_positive"] for m in labels.values()) / result["n_positive"]
    assert ious == pytest.approx(result["iou_mean"], abs=1e-9)
    right = sum(m["class_accuracy"] * m["n_positive"] for m in labels.values()) / result["n_positive"]
    assert right == pytest.approx(result["class_accuracy"], abs=1e-9)
    # the printed table: a heading, then one row per label with its image count and recall
    start = out.index("by label (the images with an object of that label):")
    assert out[start + 1].split()[:3] == ["label", "images", "found"]
    for row, (name, m) in zip(out[start + 2 : start + 5], sorted(labels.items()), strict=True):
        cells = row.split()
        assert cells[0] == name and int(cells[1]) == m["n_positive"]
        assert float(cells[2]) == pytest.approx(m["recall"], abs=1e-4)


def test_edge_eval_writes_a_row_per_image_and_a_sheet_of_the_worst(tmp_path, capsys):
    import csv

    from edge.cli.synth import main as synth_main
    from edge.runtime import BUNDLED_MODEL

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "70", "--seed", "11"]) == 0
    capsys.readouterr()
    js, rows_csv, sheet = tmp_path / "m.json", tmp_path / "rows.csv", tmp_path / "worst.png"
    argv = ["--model", str(BUNDLED_MODEL), "--data", str(data), "--json", str(js), "--refine", "off"]
    argv += ["--per-image", str(rows_csv), "--sheet", str(sheet), "--sheet-order", "worst"]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out
    assert "the sheet shows the worst 64 of 70 images" in out and sheet.stat().st_size > 0
    result = json.loads(js.read_text())
    with rows_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluate.PER_IMAGE_COLUMNS) and len(rows) == 70
    assert sorted(r["image"] for r in rows) == sorted(p.name for p in (data / "images").iterdir())
    outcomes = [r["outcome"] for r in rows]
    assert outcomes.count("false") == result["false_positives"]
    assert outcomes.count("missed") == result["false_negatives"]
    assert outcomes.count("hit") == result["true_positives"]
    ious = [float(r["iou"]) for r in rows if r["iou"]]
    assert len(ious) == result["n_positive"] and abs(np.mean(ious) - result["iou_mean"]) < 1e-3
    assert all(r["iou"] == "" for r in rows if r["present"] == "0")
    low = [r["iou"] != "" and float(r["iou"]) < 0.5 for r in rows]
    wrong = sum(r["outcome"] in ("missed", "false") or bad for r, bad in zip(rows, low, strict=True))
    assert 0 < wrong < 70
    assert f"edge-eval: {wrong} of 70 images wrong" in out
    assert [r["wrong"] == "1" for r in rows] == [
        r["outcome"] in ("missed", "false") or bad for r, bad in zip(rows, low, strict=True)
    ]


@pytest.mark.parametrize(
    ("scores", "progress", "stopped_at"),
    [
        # never better after the first: patience 2 runs out at the third, but waits for half-way
        ([1, 1, 1, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 4),
        ([1, 1, 1, 1], [0.6, 0.7, 0.8, 0.9], 2),  # past half-way: the third validation stops it
        ([1, 0.5, 2, 1.5, 3, 2.5, 4], [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95], None),  # better in time
        ([1, 0.5, 2, 1, 1], [0.5, 0.6, 0.7, 0.8, 0.9], 4),  # a better one starts it again
    ],
)
def test_early_stopping_waits_for_half_the_schedule_and_patience_starts_again_on_a_better_score(
    scores, progress, stopped_at
):
    """Validation figures that do not improve stop a run after --patience validations, only once
    half of it is done: before that the learning rate is high and a plateau says little."""
    from train.loop import Patience

    rule = Patience(2, from_progress=0.5)
    stops = []
    for score, at in zip(scores, progress, strict=True):
        rule.better((score, 0.0))
        stops.append(rule.stop(at))
    assert (stops.index(True) if True in stops else None) == stopped_at
    assert Patience(2).from_progress == 0.5  # the loop's rule: half the schedule


def test_a_training_stops_early_only_past_half_its_steps(tmp_path, capsys):
    """Through edge-train: --patience 1 on a run of 20 steps validated every 2 (a real training's
    figures): whatever they are, the run goes on to step 10 at least, and an early stop comes on a
    validation that did not beat the best one."""
    out = tmp_path / "run"
    argv = ["--out", str(out), "--synthetic", "64", "--val-size", "16", "--steps", "20", "--eval-every", "2"]
    argv += ["--patience", "1", "--batch-size", "8", "--workers", "1", "--seed", "1", "--quiet"]
    assert train_main(argv) == 0, capsys.readouterr().err
    result = json.loads((out / "metrics.json").read_text())
    assert result["steps_run"] >= 10 and result["best_step"] <= result["steps_run"]
    if result["stop_reason"] == "no improvement in 1 validations":
        assert result["best_step"] < result["steps_run"] < 20
    else:
        assert result["stop_reason"] == "steps done" and result["steps_run"] == 20


def test_same_seed_same_model_without_a_time_budget(tmp_path, capsys):
    def run(name: str, seed: int) -> list[np.ndarray]:
        import keras

        out = tmp_path / name
        argv = ["--out", str(out), "--synthetic", "64", "--val-size", "16", "--steps", "4"]
        argv += ["--eval-every", "4", "--batch-size", "8", "--workers", "1", "--seed", str(seed), "--quiet"]
        assert train_main(argv) == 0, capsys.readouterr().err
        return keras.models.load_model(out / "model.keras", compile=False).get_weights()

    first, again, other = run("a", 5), run("b", 5), run("c", 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(first, other, strict=True))


def test_the_contact_sheet_draws_truth_green_prediction_red_and_names_a_wrong_variant():
    from edge.metrics import Truth
    from edge.types import Prediction

    images = [np.full((120, 160, 3), 255, np.uint8) for _ in range(2)]
    truths = [Truth(True, (0.25, 0.25, 0.75, 0.75), label="approved")] * 2
    box = (0.3, 0.3, 0.7, 0.7)
    plain = [Prediction(0.9, box=box)] * 2
    variant = [
        Prediction(0.9, box=box, label="approved", class_scores=(0.1, 0.9)),
        Prediction(0.9, box=box, label="inspected", class_scores=(0.8, 0.2)),
    ]
    cell = 192
    sheet = evaluate.contact_sheet(images, plain, truths, 0.5, cell=cell, cols=2)
    assert sheet.shape == (cell, 2 * cell, 3)
    tile = sheet[:, :cell]
    green = (tile[:, :, 1] >= 180) & (tile[:, :, 0] < 60) & (tile[:, :, 2] < 60)
    red = (tile[:, :, 2] >= 200) & (tile[:, :, 0] < 60) & (tile[:, :, 1] < 60)
    ys, xs = np.nonzero(green)
    assert abs(xs.min() - 0.25 * cell) <= 3 and abs(ys.max() - 0.75 * 144) <= 3  # 160x120 -> 192x144
    ys, xs = np.nonzero(red[40:])  # below the score's text: the predicted box
    assert abs(xs.min() - 0.3 * cell) <= 3
    labelled = evaluate.contact_sheet(images, variant, truths, 0.5, cell=cell, cols=2)
    band = slice(18, 33)  # the second line of text, where the variant is named (above the boxes)
    assert not (sheet[band] == labelled[band]).all()
    right, wrong = labelled[band, :cell], labelled[band, cell:]
    assert ((right[:, :, 1] > 100) & (right[:, :, 2] < 60)).any()  # the right variant in green
    assert ((wrong[:, :, 2] > 200) & (wrong[:, :, 1] < 60)).any()  # a wrong one in red
    assert not ((wrong[:, :, 1] > 100) & (wrong[:, :, 2] < 60) & (wrong[:, :, 0] < 60)).any()
    # a true centre under the score's words (near the top-left corner) is drawn over them
    corner = [Truth(True, center=(0.19, 0.11))]
    tile = evaluate.contact_sheet(images[:1], [Prediction(0.0)], corner, 0.5, cell=cell, cols=1)
    green = (tile[:, :, 1] >= 180) & (tile[:, :, 0] < 60) & (tile[:, :, 2] < 60)
    ys, xs = np.nonzero(green)
    assert len(xs) > 20 and abs(xs.mean() - 0.19 * cell) <= 2 and abs(ys.mean() - 0.11 * 144) <= 2


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_keeps_the_best_checkpoint_with_its_model_json_and_reports(tmp_path, stop):
    """Ctrl-C, or SIGTERM (timeout, kill: it ended the training with nothing but the checkpoint,
    no reports, and a model.json of that step at best)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    (out).mkdir()
    # a folder reused from another run: its metadata must not survive next to the new checkpoint
    (out / "model.json").write_text(json.dumps({"kind": "center", "labels": ["a", "b", "c"]}))
    argv = [sys.executable, "-m", "train.cli", "--out", str(out), "--overwrite", "--synthetic", "128"]
    argv += ["--val-size", "16"]
    argv += ["--steps", "100000", "--eval-every", "2", "--batch-size", "4", "--workers", "1", "--quiet"]
    argv += ["--patience", "100000"]  # no early stop before the Ctrl-C (a fast machine got there first)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 240
        while not (out / "model.keras").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert (out / "model.keras").exists(), (
            proc.stderr.read() if proc.poll() is not None else "no checkpoint"
        )
        time.sleep(1.0)
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "kept the best checkpoint so far" in err, err
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "box" and meta["labels"] == ["stamp"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stop_reason"] == "interrupted" and metrics["best_step"] >= 2
    assert meta["provenance"]["steps"] == metrics["best_step"]
    assert not list(out.glob(".model.partial*"))


def test_edge_eval_names_the_grey_images_among_colour_ones(tmp_path, capsys):
    """A model trained on colour misses stamps in grey photos: even a few of them are said."""
    import cv2

    from edge.cli.synth import main as synth_main
    from edge.runtime import BUNDLED_MODEL

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "8", "--seed", "5"]) == 0
    capsys.readouterr()
    photos = sorted((data / "images").iterdir())
    for p in photos[2:4]:
        cv2.imwrite(str(p), cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
    assert evaluate.main(["--model", str(BUNDLED_MODEL), "--data", str(data), "--refine", "off"]) == 0
    err = capsys.readouterr().err
    named = f"{photos[2].name}, {photos[3].name}"
    assert f"edge-eval: WARNING: 2 of 8 images have no colour ({named}); a model trained on colour" in err


def test_edge_eval_of_a_set_of_several_classes_scores_the_models_objects_only(tmp_path, capsys):
    """A COCO export with a barcode box over most of each photo beside the stamp: the largest box,
    the barcode's, was taken for the stamp (IoU 0.10 instead of 0.93, with no word); the objects
    of classes the model does not know are left out, and said."""
    from edge.cli.synth import main as synth_main
    from edge.runtime import BUNDLED_MODEL

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "12", "--seed", "5", "--format", "coco"]) == 0
    plain = evaluate.main(
        ["--model", str(BUNDLED_MODEL), "--data", str(data), "--json", str(tmp_path / "a.json")]
    )
    doc_path = data / "annotations.json"
    doc = json.loads(doc_path.read_text())
    doc["categories"].append({"id": 99, "name": "barcode"})
    for image in doc["images"]:
        w, h = image["width"], image["height"]
        doc["annotations"].append(
            {
                "id": 1000 + image["id"],
                "image_id": image["id"],
                "category_id": 99,
                "bbox": [0, 0, w * 0.95, h * 0.95],
            }
        )
    doc_path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert plain == 0
    assert (
        evaluate.main(
            ["--model", str(BUNDLED_MODEL), "--data", str(data), "--json", str(tmp_path / "b.json")]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "the data's labels ['barcode'] are not the model's ['stamp']: their objects are left out" in err
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert b["n_positive"] == a["n_positive"] < 12 and b["iou_mean"] == pytest.approx(a["iou_mean"])
    assert a["runtime"].startswith(("ai_edge_litert ", "tflite_runtime ")), a["runtime"]  # which one ran
    # how many images the left-out objects turned into negatives is said
    assert f"the {12 - a['n_positive']} image(s) with only those count as negatives" in err


def test_edge_eval_outputs_written_into_a_csv_data_set_leave_it_loadable(tmp_path, capsys):
    """A metrics JSON and a per-image CSV saved beside labels.csv are not taken for label files."""
    from edge.cli.synth import main as synth_main
    from edge.datasets import DatasetError, load_dataset

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "6", "--seed", "4", "--format", "csv"]) == 0
    before = [r.image_path.name for r in load_dataset(data).records]
    model = Path(__file__).parent / "fixtures" / "variants_int8.tflite"
    argv = ["--model", str(model), "--data", str(data / "labels.csv")]
    argv += ["--json", str(data / "metrics.json"), "--per-image", str(data / "outcomes.csv")]
    assert evaluate.main(argv) == 0
    capsys.readouterr()
    assert {"metrics.json", "outcomes.csv", "labels.csv"} <= {p.name for p in data.iterdir()}
    ds = load_dataset(data)
    assert ds.format == "csv" and [r.image_path.name for r in ds.records] == before
    # a second real label file still makes the folder ambiguous
    (data / "more.json").write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DatasetError, match=r"several label files \(labels\.csv, more\.json\)"):
        load_dataset(data)


def test_edge_eval_keeps_tiles_not_photos_and_a_chunk_size_changes_nothing(tmp_path, monkeypatch):
    """A set of 12-megapixel photos was held whole in memory (36 MB a photo)."""
    import cv2

    from edge.cli.synth import main as synth_main
    from edge.datasets import load_dataset
    from edge.runtime import TFLiteDetector

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "7", "--seed", "21", "--format", "centers"]) == 0
    for p in data.glob("*.jpg"):  # as a phone's photos: large
        cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p)), (1600, 1200), interpolation=cv2.INTER_LINEAR))
    ds = load_dataset(data)
    det = TFLiteDetector()
    whole = evaluate.look_at(ds, det, "zoom-flip", thumbs=True)
    monkeypatch.setattr(evaluate, "EVAL_CHUNK", 3)
    chunked = evaluate.look_at(ds, det, "zoom-flip", thumbs=False)
    assert [p.presence for p in chunked.preds] == [p.presence for p in whole.preds]
    assert [p.box for p in chunked.preds] == [p.box for p in whole.preds] and chunked.thumbs == []
    assert [t.shape for t in whole.thumbs] == [(144, 192, 3)] * 7  # the sheet's tile, not the photo


def test_edge_eval_read_through_a_pipe_closed_early_ends_without_a_traceback(tmp_path):
    from edge.cli.synth import main as synth_main
    from edge.runtime import BUNDLED_MODEL

    data = tmp_path / "d"
    assert synth_main(["--out", str(data), "--n", "4", "--seed", "2"]) == 0
    code = "import sys; from train.evaluate import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--model", str(BUNDLED_MODEL), "--data", str(data), "--refine", "off"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the report is printed (| head -0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "Broken pipe" not in err, err


def test_edge_eval_names_photos_sharing_a_file_name_by_their_path(tmp_path, capsys):
    import csv

    import cv2

    from edge.runtime import BUNDLED_MODEL

    data = tmp_path / "dup"
    for cam, label in (("cam1", "0 0.5 0.5 0.6 0.7\n"), ("cam2", "")):
        (data / "images" / cam).mkdir(parents=True)
        (data / "labels" / cam).mkdir(parents=True)
        cv2.imwrite(str(data / "images" / cam / "0001.jpg"), np.full((96, 128, 3), (40, 90, 140), np.uint8))
        (data / "labels" / cam / "0001.txt").write_text(label)
    (data / "classes.txt").write_text("stamp\n")
    rows_csv = tmp_path / "rows.csv"
    argv = ["--model", str(BUNDLED_MODEL), "--data", str(data), "--refine", "off"]
    assert evaluate.main([*argv, "--per-image", str(rows_csv)]) == 0, capsys.readouterr().err
    with rows_csv.open(newline="") as f:
        names = sorted(r["image"] for r in csv.DictReader(f))
    assert names == ["images/cam1/0001.jpg", "images/cam2/0001.jpg"]


def test_edge_eval_refuses_a_keras_model_edge_convert_refuses(tmp_path, capsys):
    """Keras models that are not Stampline's, or whose model.json does not fit them: one line and
    status 2, as edge-convert says it (each was a traceback: a shape error from inside Keras, an
    AttributeError, an IndexError, a JSONDecodeError)."""
    import keras

    def build(folder, side=128, named=True, classes=0, sidecar=None):
        inp = keras.Input((side, side, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=4)(inp))
        outs = {"presence": keras.layers.Dense(1, activation="sigmoid", name="presence")(x)}
        outs["box"] = keras.layers.Dense(4, activation="sigmoid", name="box")(x)
        if classes:
            outs["class"] = keras.layers.Dense(classes, activation="softmax", name="class")(x)
        folder.mkdir()
        keras.Model(inp, outs if named else list(outs.values())).save(folder / "model.keras")
        if sidecar is not None:
            (folder / "model.json").write_text(sidecar)
        return folder / "model.keras"

    data = write_blob_voc(tmp_path / "voc", 3, 7)
    cases = [
        (build(tmp_path / "wide", side=224), "input (224, 224, 3) != expected (128, 128, 3)"),
        (build(tmp_path / "unnamed", named=False), "model outputs unnamed lack 'presence'"),
        (
            build(tmp_path / "classes", classes=3, sidecar='{"kind": "box", "labels": ["a", "b"]}'),
            "class output has 3 labels, model.json lists 2",
        ),
        (build(tmp_path / "sidecar", sidecar="{not json"), "model.json: not valid JSON"),
        # a model.json that does not fit its model, or holds a key of the wrong form: edge-convert
        # wrote the first into a .tflite that every edge-run refused, the others were tracebacks
        (
            build(tmp_path / "headless", sidecar='{"kind": "box", "labels": ["qc-passed", "inspected"]}'),
            "model.json lists 2 labels (qc-passed, inspected), but the model has no 'class' output",
        ),
        (build(tmp_path / "letters", sidecar='{"labels": "stamp"}'), "model.json: labels: labels must be"),
        (
            build(tmp_path / "high", sidecar='{"threshold": "high"}'),
            "model.json: threshold: expected a number",
        ),
        (build(tmp_path / "prov", sidecar='{"provenance": [1, 2]}'), "model.json: provenance: expected an"),
        (build(tmp_path / "kind", sidecar='{"kind": "center"}'), "model.json says kind 'center', but the"),
    ]
    plain = tmp_path / "sequential"  # a Sequential model never called: no output to name (an AttributeError)
    plain.mkdir()
    layers = [
        keras.layers.Conv2D(4, 3),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, name="presence"),
    ]
    keras.Sequential([keras.Input((128, 128, 3)), *layers]).save(plain / "model.keras")
    cases.append((plain / "model.keras", "model outputs unnamed lack 'presence'"))
    for model, message in cases:
        assert evaluate.main(["--model", str(model), "--data", str(data)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    from convert import cli as convert_cli

    for model, message in cases[4:]:  # what edge-convert refuses alike (before converting)
        out = model.with_suffix(".tflite")
        argv = [str(model), "--out", str(out), "--quiet", "--no-verify", "--calibration", str(data)]
        assert convert_cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()


def test_edge_eval_reads_photos_in_runs_bounded_by_their_decoded_size():
    """300 phone photos (12 MP, 36 MB each decoded) peaked at 2.4 GB: two runs of 32 were held at
    once. A run now also stops at EVAL_CHUNK_BYTES of pixels; small images still go 32 at a time."""
    from edge.datasets import Record

    phone = [Record(Path(f"p{i}.jpg"), (), 4032, 3024) for i in range(20)]
    small = [Record(Path(f"s{i}.jpg"), (), 640, 480) for i in range(70)]
    runs = list(evaluate._chunks([*phone, *small]))
    assert [r for part in runs for r in part] == [*phone, *small]  # every photo, in order, once
    for part in runs:
        pixels = sum(3 * r.width * r.height for r in part)
        assert len(part) <= evaluate.EVAL_CHUNK
        assert len(part) == 1 or pixels <= evaluate.EVAL_CHUNK_BYTES
    most_phones = max(sum(r.width == 4032 for r in p) for p in runs)
    assert most_phones == evaluate.EVAL_CHUNK_BYTES // (3 * 4032 * 3024) < evaluate.EVAL_CHUNK
    assert max(len(p) for p in runs) == evaluate.EVAL_CHUNK
    huge = Record(Path("h.tif"), (), 20000, 20000)  # bigger than a run alone: a run of its own
    assert [len(p) for p in evaluate._chunks([huge, *small[:2]])] == [1, 2]


def test_without_tensorflow_the_training_tools_say_what_to_install_before_any_work(
    tmp_path, monkeypatch, capsys
):
    """On a device's install (no TensorFlow) edge-train made its synthetic data for two minutes,
    then gave a traceback (exit 1), and left an empty --out; edge-convert and edge-eval of a .keras
    model gave tracebacks too. One line naming the extra now, status 2, nothing made."""
    import sys
    import zipfile

    from convert.cli import main as convert_main
    from train.cli import main as train_main_

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what the import system says without it
    model = tmp_path / "model.keras"
    with zipfile.ZipFile(model, "w") as archive:  # a .keras archive, as far as can be told without Keras
        archive.writestr("config.json", "{}")
    voc = write_blob_voc(tmp_path / "voc", 3, 7)
    runs = {
        "edge-train": lambda: train_main_(["--out", str(tmp_path / "run"), "--minutes", "1"]),
        "edge-convert": lambda: convert_main([str(model), "--out", str(tmp_path / "m.tflite")]),
        "edge-eval": lambda: evaluate.main(["--model", str(model), "--data", str(voc)]),
    }
    for prog, run in runs.items():
        assert run() == 2, prog
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"{prog}: error: ") and "needs TensorFlow, which is not installed" in line
        assert line.endswith("pip install 'stampline[train]'"), line
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.tflite").exists()


def test_a_training_that_diverges_says_to_lower_the_learning_rate(tmp_path, capsys):
    """--lr 1e20: the loss turns NaN at once; it was a "Prediction.presence: expected a
    probability, got nan" error from deep inside validation."""
    out = tmp_path / "run"
    argv = ["--out", str(out), "--synthetic", "64", "--val-size", "16", "--steps", "6", "--eval-every", "3"]
    argv += ["--batch-size", "8", "--workers", "1", "--quiet", "--init", "none", "--lr", "1e20"]
    assert train_main(argv) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert line.startswith("edge-train: error: training diverged by step ")
    assert "lower --lr (it was 1e+20)" in line


def test_labels_choose_the_stamp_classes_of_a_set_that_labels_others_too(tmp_path, capsys):
    """A set that also boxes a barcode: every class became a variant, and the barcode's larger
    box was taken for the stamp; --labels keeps the stamps' objects, and an image with only a
    barcode is a negative."""
    rng = np.random.default_rng(3)
    with DatasetWriter(tmp_path / "d", "voc", ["stamp", "barcode"]) as w:
        for i in range(12):
            img = rng.integers(30, 110, (96, 160, 3)).astype(np.uint8)
            objects = [ObjectLabel("barcode", (10, 10, 150, 60))]  # larger than any stamp
            if i % 3:
                img[65:90, 20:45] = (40, 230, 250)
                objects.append(ObjectLabel("stamp", (20, 65, 45, 90)))
            w.add(f"img{i:03d}", img, objects)
    data = load_dataset(tmp_path / "d")
    stamps, turned = data.only(["stamp"])
    assert stamps.labels == ("stamp",) and turned == 4 and stamps.negatives == 4
    assert all(o.label == "stamp" for r in stamps.records for o in r.objects)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(tmp_path / "d"), "--steps", "2", "--eval-every", "2"]
    argv += ["--batch-size", "4", "--copies", "1", "--init", "none"]
    assert train_main([*argv, "--labels", "stamp"]) == 0
    err = capsys.readouterr().err
    assert "--labels stamp: the other classes' objects are left out; 4 image(s) with only those" in err
    assert json.loads((out / "model.json").read_text())["labels"] == ["stamp"]
    assert train_main([*argv, "--overwrite", "--quiet", "--labels", "stamp,qr"]) == 2
    assert "--labels: 'qr': expected names of the classes of" in capsys.readouterr().err
