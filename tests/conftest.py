"""Shared fixtures: a tiny Keras model trained in seconds on an easy task, and its conversions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def pytest_collection_modifyitems(items: list) -> None:
    """Tests marked ``fresh_process`` first: they look at AMX's permission in child processes,
    which inherit the refusal (a seccomp filter) of this process once it has built an interpreter."""
    items.sort(key=lambda item: item.get_closest_marker("fresh_process") is None)


@pytest.fixture(autouse=True)
def _source_warnings_said_afresh():
    """Each test starts as a new process would: no source warning given yet
    (``edge.sources`` says each once a process)."""
    import sys

    if "edge.sources" in sys.modules:
        sys.modules["edge.sources"]._said.clear()


def blob_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy grey images, half of them with one bright square: an easy, learnable stand-in task."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 120, (n, 128, 128, 3)).astype(np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    presence = (np.arange(n) % 2 == 0).astype(np.float32)
    for i in np.flatnonzero(presence):
        s = int(rng.integers(24, 56))
        x, y = (int(v) for v in rng.integers(0, 128 - s, 2))
        images[i, y : y + s, x : x + s] = (250, 240, 60)
        boxes[i] = (x / 128, y / 128, (x + s) / 128, (y + s) / 128)
    return images, boxes, presence


def write_blob_voc(root: Path, n: int, seed: int) -> Path:
    """A small VOC set of bright yellow squares on noise, 160x96 (negatives every third image)."""
    from edge.datasets import DatasetWriter, ObjectLabel

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A box model trained for a few hundred steps on blobs, saved as edge-train saves it."""
    import keras

    from train.model import build_model, compile_model, inference_model

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    images, boxes, presence = blob_set(768, 0)
    model = build_model("box")
    # let batch-norm statistics settle fast
    for layer in [*model.get_layer("backbone").layers, *model.layers]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.6
    compile_model(model, 3e-3)
    ones = np.ones_like(presence)
    model.fit(
        images.astype(np.float32),
        {"presence": presence[:, None], "box": boxes},
        sample_weight={"presence": ones, "box": presence},
        batch_size=32,
        epochs=4,
        verbose=0,
    )
    inference_model(model).save(out / "model.keras")
    (out / "model.json").write_text(
        json.dumps({"kind": "box", "labels": ["stamp"], "provenance": {"seed": 0}})
    )
    return out


@pytest.fixture(scope="session")
def blob_voc_dir(tmp_path_factory) -> Path:
    """The blob task as a labelled VOC folder (for calibration and validation through the CLIs)."""
    from edge.datasets import DatasetWriter, ObjectLabel

    out = tmp_path_factory.mktemp("blob_voc") / "voc"
    images, boxes, presence = blob_set(300, 11)
    with DatasetWriter(out, "voc", ["stamp"]) as w:
        for i, (image, box, p) in enumerate(zip(images, boxes, presence, strict=True)):
            objects = [ObjectLabel("stamp", tuple(float(v) * 128 for v in box))] if p else []
            w.add(f"b{i:03d}", image[..., ::-1].copy(), objects)
    return out
