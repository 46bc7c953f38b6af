"""The model contract: preprocessing, metadata round trip, flatbuffer reading, output decoding."""

import json
import logging
import math

import numpy as np
import pytest

from edge import contract
from edge.contract import CONTRACT_VERSION, ContractError, ModelMetadata
from edge.metrics import (
    Truth,
    agreement,
    by_label,
    iou,
    no_skill_warning,
    per_image,
    summarize,
    worst_first,
)
from edge.types import Prediction


@pytest.mark.parametrize(
    ("shape", "roi"),
    [
        ((480, 640, 3), None),
        ((128, 128, 3), None),
        ((60, 90, 3), None),
        ((1080, 1920, 3), (0.25, 0.1, 0.5, 0.8)),
    ],
)
def test_prepare_input_gives_model_input(shape, roi):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = contract.prepare_input(img, roi)
    assert out.shape == contract.INPUT_SHAPE and out.dtype == np.uint8 and out.flags.c_contiguous


def test_prepare_input_swaps_bgr_to_rgb_and_crops_roi():
    img = np.zeros((200, 400, 3), np.uint8)
    img[:, 200:] = (255, 0, 0)  # blue in BGR, right half
    full = contract.prepare_input(img)
    assert full[64, 100, 2] == 255 and full[64, 100, 0] == 0  # RGB: blue is channel 2
    right = contract.prepare_input(img, (0.5, 0.0, 0.5, 1.0))
    assert right[:, :, 2].min() == 255


def test_resize_two_step_is_close_to_area_reference():
    rng = np.random.default_rng(1)
    import cv2

    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 1.0)
    ref = cv2.resize(img.astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA)
    ours = contract.resize_to_input(img).astype(np.float32)
    naive = cv2.resize(img, (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(ours - ref).mean() < 0.3 * np.abs(naive - ref).mean()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"contract_version": 99}, "contract version 99"),
        ({"kind": "segmentation"}, "kind 'segmentation'"),
        ({"labels": ()}, "labels"),
        ({"threshold": 1.5}, "threshold"),
        ({"input_shape": (224, 224, 3)}, "input"),
        # wrong types, as a hand-edited file has them (each was a traceback)
        ({"threshold": None}, "threshold must be a number in"),
        ({"threshold": "0.5"}, "threshold must be a number in"),
        ({"threshold": True}, "threshold must be a number in"),
        ({"input_shape": None}, "model input None"),
        ({"provenance": ["x"]}, "provenance must be a JSON object"),
        ({"outputs": "box"}, "outputs must be a JSON object"),
        ({"labels": "stamp"}, "labels must be a non-empty list"),  # was read as labels s, t, a, m, p
        ({"labels": ["a", "a", "b"]}, "labels must be distinct"),
        ({"kind": ["box"]}, "kind"),
    ],
)
def test_metadata_refuses_what_it_does_not_know(fields, message):
    with pytest.raises(ContractError, match=message):
        ModelMetadata(**fields)


def test_metadata_json_round_trip_and_unknown_keys(caplog):
    meta = ModelMetadata(kind="box", labels=("a", "b"), threshold=0.4, provenance={"seed": 3})
    back = ModelMetadata.from_json(meta.to_json())
    assert back == meta and set(back.outputs) == {"presence", "cells", "cell_boxes", "class"}
    direct = meta.with_outputs(["presence", "box", "class"])  # a direct-regression model's outputs
    assert set(direct.outputs) == {"presence", "box", "class"}
    assert meta.with_outputs(["presence", "cells", "cell_boxes", "class"]) == meta
    data = json.loads(meta.to_json())
    data["colour"] = "red"  # a newer edge-convert's key: ignored, with a warning
    with caplog.at_level(logging.WARNING):
        assert ModelMetadata.from_json(json.dumps(data)) == meta
    assert "['colour'] unknown to this version" in caplog.text
    data["contract_version"] = CONTRACT_VERSION + 1  # a newer contract: refused, upgrade the runtime
    with pytest.raises(ContractError, match=r"newer than this runtime's \(1\): upgrade Stampline"):
        ModelMetadata.from_json(json.dumps(data))
    data["contract_version"] = 0
    with pytest.raises(ContractError, match="not known to this runtime"):
        ModelMetadata.from_json(json.dumps(data))
    with pytest.raises(ContractError, match="not valid JSON"):
        ModelMetadata.from_json(b"{oops")


def test_read_embedded_metadata_rejects_non_tflite():
    with pytest.raises(ContractError, match="not a TFLite"):
        contract.read_embedded_metadata(b"hello world, not a model", "x.tflite")
    with pytest.raises(ContractError, match=r"x\.tflite: empty file \(0 bytes\)"):
        contract.read_embedded_metadata(b"", "x.tflite")


def test_decode_outputs_per_kind():
    meta = ModelMetadata(kind="box", labels=("a", "b", "c")).with_outputs(["presence", "box", "class"])
    p = contract.decode_outputs(
        {
            "presence": np.array([[0.9]]),
            "box": np.array([[0.1, 0.2, 0.5, 0.6]]),
            "class": np.array([[0.1, 0.7, 0.2]]),
        },
        meta,
    )
    assert p.presence == pytest.approx(0.9) and p.label == "b" and p.center == pytest.approx((0.3, 0.4))
    cam = ModelMetadata(kind="cam")
    hm = np.zeros((1, 8, 8), np.float32)
    hm[0, 2, 5] = 1.0
    q = contract.decode_outputs({"presence": np.array([[0.8]]), "heatmap": hm}, cam)
    assert q.center == pytest.approx(((5 + 0.5) / 8, (2 + 0.5) / 8), abs=1e-3)


def test_grid_decoding_on_known_values():
    g = contract.GRID_SIZE
    cells = np.full((1, g, g), -30.0, np.float32)
    edges = np.zeros((1, g, g, 4), np.float32)
    cells[0, 4, 10] = 10.0  # one cell sure: its own box
    edges[0, 4, 10] = (0.1, 0.2, 0.3, 0.4)
    cx, cy = (10 + 0.5) / g, (4 + 0.5) / g
    r = contract.GRID_REACH
    want = (cx - r * 0.1, cy - r * 0.2, cx + r * 0.3, cy + r * 0.4)
    meta = ModelMetadata(kind="box")
    p = contract.decode_outputs({"presence": np.array([[0.9]]), "cells": cells, "cell_boxes": edges}, meta)
    assert p.box == pytest.approx(want, abs=1e-6) and p.heatmap.shape == (g, g)
    assert p.heatmap[4, 10] == pytest.approx(1.0, abs=1e-4) and p.heatmap[0, 0] < 1e-6
    cells[0, 4, 11] = 10.0  # two cells as sure: the mean of their boxes
    edges[0, 4, 11] = (0.3, 0.2, 0.1, 0.4)
    box, centre = contract.decode_grid(cells, edges)
    mx = (cx + (11 + 0.5) / g) / 2
    assert box == pytest.approx((mx - r * 0.2, cy - r * 0.2, mx + r * 0.2, cy + r * 0.4), abs=1e-6)
    assert centre == pytest.approx(contract.box_center(box))
    offsets = np.full((1, g, g, 2), 0.5, np.float32)  # 0.5: the cell's own centre
    offsets[0, 4, 10] = (1.0, 0.0)  # +SHIFT cells right, -SHIFT cells up
    cells[0, 4, 11] = -30.0
    center_meta = ModelMetadata(kind="center")
    q = contract.decode_outputs(
        {"presence": np.array([[0.9]]), "cells": cells, "cell_offsets": offsets}, center_meta
    )
    s = contract.GRID_SHIFT / g
    assert q.box is None and q.center == pytest.approx((cx + s, cy - s), abs=1e-6)


def test_iou_and_summary_on_known_values():
    a = np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0, 0, 0.2, 0.2]])
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], [0.5, 0.5, 0.7, 0.7]])
    assert iou(a, b) == pytest.approx([0.0625 / 0.4375, 1.0, 0.0])
    preds = [
        Prediction(0.9, box=(0.1, 0.1, 0.5, 0.5)),
        Prediction(0.2, box=(0.1, 0.1, 0.5, 0.5)),
        Prediction(0.7, box=(0.0, 0.0, 0.1, 0.1)),
        Prediction(0.1, box=(0.0, 0.0, 0.1, 0.1)),
    ]
    truths = [
        Truth(True, box=(0.1, 0.1, 0.5, 0.5)),
        Truth(True, box=(0.1, 0.1, 0.3, 0.5)),
        Truth(False),
        Truth(False),
    ]
    m = summarize(preds, truths, 0.5)
    assert m["iou_mean"] == pytest.approx(0.75)
    assert m["presence_accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["center_within_0_05"] == pytest.approx(0.5)
    ag = agreement(preds, list(reversed(preds)), 0.5)
    assert ag["presence_agreement"] == pytest.approx(0.0)
    assert (
        ag["presence_disagree"] == 4 and ag["presence_disagree_unsure"] == 0
    )  # 0.9, 0.2, 0.7, 0.1: all sure


def test_agreement_counts_the_images_decided_otherwise_and_those_the_reference_was_unsure_of():
    a = [Prediction(p) for p in (0.55, 0.9, 0.3, 0.45, 0.62)]
    b = [Prediction(p) for p in (0.45, 0.2, 0.3, 0.46, 0.58)]
    ag = agreement(a, b, 0.5)
    # 0.55 -> 0.45 (unsure: within 0.1 of 0.5) and 0.9 -> 0.2 (sure) flip; 0.45 -> 0.46 and 0.62 ->
    # 0.58 stay on their side
    assert ag["presence_disagree"] == 2 and ag["presence_disagree_unsure"] == 1
    assert ag["presence_agreement"] == pytest.approx(0.6)
    assert agreement(a, b, 0.25)["presence_disagree"] == 1  # only 0.9 -> 0.2 crosses 0.25


def test_f1_is_undefined_only_when_there_is_nothing_to_find_and_nothing_found():
    negatives = [Truth(False), Truth(False)]
    m = summarize([Prediction(0.1), Prediction(0.2)], negatives, 0.5)
    assert math.isnan(m["f1"]) and math.isnan(m["precision"]) and math.isnan(m["recall"])
    assert (m["true_positives"], m["false_positives"], m["false_negatives"]) == (0, 0, 0)
    m = summarize([Prediction(0.9), Prediction(0.2)], negatives, 0.5)
    assert m["f1"] == 0.0 and m["false_positives"] == 1  # a false find is an error, F1 0
    m = summarize(
        [Prediction(0.9, box=(0, 0, 1, 1)), Prediction(0.2)], [Truth(True, box=(0, 0, 1, 1))] * 2, 0.5
    )
    assert m["f1"] == pytest.approx(2 / 3) and m["false_negatives"] == 1


def test_a_model_that_always_says_present_is_called_out():
    truths = [Truth(True, box=(0.1, 0.1, 0.5, 0.5))] * 7 + [Truth(False)] * 3
    always = summarize([Prediction(0.64, box=(0.1, 0.1, 0.5, 0.5))] * 10, truths, 0.5)
    said = no_skill_warning(always)
    assert said is not None and "no better than always saying 'present' (0.700)" in said
    skilled = summarize([Prediction(0.9, box=(0.1, 0.1, 0.5, 0.5))] * 7 + [Prediction(0.1)] * 3, truths, 0.5)
    assert no_skill_warning(skilled) is None
    assert (
        no_skill_warning(summarize([Prediction(0.9)] * 2, [Truth(True, center=(0.5, 0.5))] * 2, 0.5)) is None
    )
    # a set of one kind only (a centre-point list: all with the object) and a model wrong on most
    lost = no_skill_warning(summarize([Prediction(0.1)] * 4, [Truth(True, center=(0.5, 0.5))] * 4, 0.5))
    assert lost is not None and "all with the object: the model says absent on most of them" in lost


def test_class_figures_count_only_the_labels_the_model_knows():
    def pred(label):
        return Prediction(0.9, box=(0.1, 0.1, 0.5, 0.5), label=label, class_scores=(0.5, 0.5))

    truths = [Truth(True, box=(0.1, 0.1, 0.5, 0.5), label=x) for x in ("a", "stamp", "stamp")]
    m = summarize([pred("a"), pred("a"), pred("b")], truths, 0.5, known_labels=("a", "b"))
    assert m["class_accuracy"] == 1.0  # the two 'stamp' objects are not the model's to name
    m = summarize([pred("a")], truths[1:2], 0.5, known_labels=("a", "b"))
    assert math.isnan(m["class_accuracy"])


def test_figures_by_label_count_each_variant_over_its_own_images():
    def pred(presence, label, box=(0.1, 0.1, 0.5, 0.5)):
        return Prediction(presence, box=box, label=label, class_scores=(0.5, 0.5))

    box = (0.1, 0.1, 0.5, 0.5)
    truths = [Truth(True, box=box, label=x) for x in ("b", "a", "a", "b")] + [Truth(False)]
    preds = [
        pred(0.9, "a"),  # b found, named a, exact box
        pred(0.9, "a", box=(0.1, 0.1, 0.3, 0.5)),  # a found, right, IoU 0.5
        pred(0.2, "a"),  # a missed (its box still counts for IoU, as in summarize)
        pred(0.7, "b"),  # b found, right
        pred(0.9, "b"),  # a false find: in no label's figures
    ]
    labels = by_label(preds, truths, 0.5)
    assert list(labels) == ["a", "b"]
    a, b = labels["a"], labels["b"]
    assert a["n_positive"] == 2 and a["recall"] == pytest.approx(0.5)
    assert a["iou_mean"] == pytest.approx(0.75) and a["class_accuracy"] == pytest.approx(1.0)
    assert b["n_positive"] == 2 and b["recall"] == pytest.approx(1.0) and b["iou_mean"] == pytest.approx(1.0)
    assert b["class_accuracy"] == pytest.approx(0.5) and b["class_accuracy_detected"] == pytest.approx(0.5)
    # the labels' images make up the overall figures
    overall = summarize(preds, truths, 0.5)
    assert a["n_positive"] + b["n_positive"] == overall["n_positive"]
    assert (a["iou_mean"] + b["iou_mean"]) / 2 == pytest.approx(overall["iou_mean"])
    # one label (or none) has nothing to break down
    assert by_label(preds[1:3], truths[1:3], 0.5) == {}
    assert by_label([Prediction(0.9, box=box)], [Truth(True, box=box)], 0.5) == {}


def test_class_accuracy_over_all_stamped_images_and_over_the_detected_ones():
    def pred(presence, label):
        return Prediction(presence, box=(0.1, 0.1, 0.5, 0.5), label=label, class_scores=(0.5, 0.5))

    preds = [pred(0.9, "a"), pred(0.8, "b"), pred(0.2, "b"), pred(0.1, "b"), pred(0.9, "a")]
    truths = [Truth(True, box=(0.1, 0.1, 0.5, 0.5), label=x) for x in ("a", "a", "a", "b")] + [Truth(False)]
    m = summarize(preds, truths, 0.5)
    # 2 right of the 4 stamped images (one of them missed); of the 2 found, 1; the negative counts in neither
    assert m["class_accuracy"] == pytest.approx(0.5) and m["class_accuracy_detected"] == pytest.approx(0.5)
    preds[1] = pred(0.8, "a")
    m = summarize(preds, truths, 0.5)
    assert m["class_accuracy"] == pytest.approx(0.75) and m["class_accuracy_detected"] == pytest.approx(1.0)


def test_per_image_results_agree_with_the_summary_and_worst_first_puts_mistakes_first():
    box = (0.1, 0.1, 0.5, 0.5)

    def pred(presence, b=box, label=None):
        return Prediction(presence, box=b, label=label, class_scores=None if label is None else (0.5, 0.5))

    truths = [
        Truth(True, box=box, label="a"),  # 0: found, right variant, exact box
        Truth(True, box=box, label="a"),  # 1: found, the box short of the right edge
        Truth(True, box=box, label="a"),  # 2: missed (barely)
        Truth(True, box=box, label="a"),  # 3: missed (surely)
        Truth(False),  # 4: a false find
        Truth(False),  # 5: clear
        Truth(True, box=box, label="a"),  # 6: found, wrong variant
    ]
    preds = [
        pred(0.9, label="a"),
        pred(0.8, (0.1, 0.1, 0.35, 0.5), label="a"),
        pred(0.45, label="a"),
        pred(0.05, label="a"),
        pred(0.7, label="b"),
        pred(0.3, label="b"),
        pred(0.95, label="b"),
    ]
    rows = per_image(preds, truths, 0.5)
    assert [r.outcome for r in rows] == ["hit", "hit", "missed", "missed", "false", "clear", "hit"]
    assert rows[0].iou == pytest.approx(1.0) and rows[1].iou == pytest.approx(0.625)
    assert rows[4].iou is None and rows[4].label == "b" and rows[5].label is None  # nothing found, no label
    assert [r.label_right for r in rows] == [True, True, None, None, None, None, False]
    assert [r.wrong for r in rows] == [False, False, True, True, True, False, True]
    m = summarize(preds, truths, 0.5)
    assert np.mean([r.iou for r in rows if r.iou is not None]) == pytest.approx(m["iou_mean"])
    assert sum(r.outcome == "false" for r in rows) == m["false_positives"]
    assert sum(r.outcome == "missed" for r in rows) == m["false_negatives"]
    # the surest presence mistakes, then the wrong variant, then positives by IoU, then negatives
    assert worst_first(rows, 0.5) == [3, 4, 2, 6, 1, 0, 5]
    centres = per_image(
        [Prediction(0.9, center=(0.5, 0.5)), Prediction(0.9, center=(0.5, 0.6))],
        [Truth(True, center=(0.5, 0.5))] * 2,
        0.5,
    )
    assert centres[1].center_error == pytest.approx(0.1) and centres[1].wrong and not centres[0].wrong
    assert worst_first(centres, 0.5) == [1, 0]


def test_a_missed_object_has_no_centre_on_the_device_though_its_unshown_centre_is_right():
    """`center_within_0_05` measures where the model puts the centre, said or not (as the
    phone-finder benchmark counts); `center_within_0_05_found` also requires the model to say the
    object is there: a stamp below the threshold gets no centre on the device."""
    truths = [Truth(True, box=(0.1, 0.1, 0.5, 0.5)), Truth(True, box=(0.2, 0.2, 0.6, 0.6))]
    preds = [Prediction(0.9, box=(0.1, 0.1, 0.5, 0.5)), Prediction(0.3, box=(0.2, 0.2, 0.6, 0.6))]
    m = summarize(preds, truths, 0.5)
    assert m["center_within_0_05"] == pytest.approx(1.0)
    assert m["center_within_0_05_found"] == pytest.approx(0.5)
    assert m["center_error_mean"] == pytest.approx(0.0) and m["iou_mean"] == pytest.approx(1.0)
    assert summarize(preds, truths, 0.25)["center_within_0_05_found"] == pytest.approx(1.0)


def test_the_class_head_rule_is_the_contracts_and_its_outputs_follow_it():
    """A class output (the variants' scores) belongs to box models of two or more labels: the one
    rule training, conversion and the runtime read (re-derived in five places before)."""
    assert contract.has_class_head("box", 3) and contract.class_width("box", 3) == 3
    assert not contract.has_class_head("box", 1) and contract.class_width("box", 1) == 1
    for kind in ("center", "cam"):
        assert not contract.has_class_head(kind, 3) and contract.class_width(kind, 3) == 1
    for kind in contract.KIND_OUTPUTS:
        for n in (1, 2, 4):
            outputs = contract.ModelMetadata.default_outputs(kind, n)
            assert (contract.CLASS in outputs) == contract.has_class_head(kind, n)
