"""edge.datasets: every loader, malformed inputs, writer -> loader round trips, the shared real sets."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.datasets import (
    FORMATS,
    DatasetError,
    DatasetWriter,
    ObjectLabel,
    Record,
    detect_format,
    image_size,
    image_size_from_header,
    incomplete,
    load_dataset,
    parse_subset,
    parse_yaml_names,
    read_image,
    read_subset,
    to_uint8,
    write_image,
)
from edge.files import opencv_problem

W, H = 64, 48  # size of the fixture images


def _image(path: Path, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = 120
    assert cv2.imwrite(str(path), img)


def _build(root: Path, files: dict[str, object]) -> None:
    """Write a fixture: a str value is a text file, a (w, h) tuple an image of that size."""
    for rel, content in files.items():
        path = root / rel
        if isinstance(content, tuple):
            _image(path, *content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(content), encoding="utf-8")


def _voc(filename: str, objects: list[tuple[str, object, object, object, object]], size=(W, H)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def _coco_doc(*names: str) -> str:
    """A COCO json of ``W`` x ``H`` images, each with one 'stamp' box."""
    images = [{"id": i, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 10, 10]} for i in range(len(names))]
    return json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "stamp"}]})


def _by_name(ds) -> dict[str, Record]:
    return {r.name: r for r in ds.records}


# -- loaders -----------------------------------------------------------------------------------------


def test_voc_annotations_folder_with_negatives_multi_objects_and_unlabelled(tmp_path, caplog):
    _build(
        tmp_path,
        {
            "images/a.jpg": (W, H),
            "images/b.jpg": (W, H),
            "images/c.png": (W, H),
            "annotations/a.xml": _voc("a.jpg", [("small", 1, 2, 11, 12), ("big", 10, 10, 60, 40)]),
            "annotations/b.xml": _voc("b.jpg", []),
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path)
    assert ds.format == "voc" and ds.root == tmp_path and len(ds) == 2
    recs = _by_name(ds)
    assert recs["a.jpg"].image_path == tmp_path / "images" / "a.jpg"
    assert (recs["a.jpg"].width, recs["a.jpg"].height) == (W, H)
    assert [o.box for o in recs["a.jpg"].objects] == [(1, 2, 11, 12), (10, 10, 60, 40)]
    assert recs["a.jpg"].primary().label == "big"
    assert recs["b.jpg"].is_negative and recs["b.jpg"].primary() is None
    assert ds.labels == ("small", "big") and ds.negatives == 1
    assert ds.unlabelled == (tmp_path / "images" / "c.png",)
    assert "1 image(s) have no label file" in caplog.text


def test_cvat_voc_export_with_a_tasks_subfolders_loads_whole(tmp_path, caplog):
    """CVAT (Datumaro) keeps a task's folders: Annotations/sub/x.xml labels JPEGImages/sub/x.jpg,
    its <filename> with or without the subfolder. The nested half was dropped without a word."""
    _build(
        tmp_path,
        {
            "JPEGImages/a.jpg": (W, H),
            "JPEGImages/sub/b.jpg": (W, H),
            "JPEGImages/sub/c.jpg": (W, H),
            "JPEGImages/sub/d.jpg": (W, H),
            "Annotations/a.xml": _voc("a.jpg", [("stamp", 1, 2, 11, 12)]),
            "Annotations/sub/b.xml": _voc("sub/b.jpg", [("stamp", 3, 4, 13, 14)]),
            "Annotations/sub/c.xml": _voc("c.jpg", []),
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path)
    recs = {r.image_path.relative_to(tmp_path / "JPEGImages").as_posix(): r for r in ds.records}
    assert sorted(recs) == ["a.jpg", "sub/b.jpg", "sub/c.jpg"]
    assert [o.box for o in recs["sub/b.jpg"].objects] == [(3, 4, 13, 14)] and recs["sub/c.jpg"].is_negative
    assert ds.unlabelled == (tmp_path / "JPEGImages" / "sub" / "d.jpg",)
    assert "1 image(s) have no label file" in caplog.text


def test_a_voc_set_whose_imagesets_list_several_splits_is_loaded_one_split_at_a_time(tmp_path):
    """The devkit's (and CVAT's with subsets) ImageSets/Main/train.txt, val.txt: train and val
    mixed in silence would test on training images. One list, or a class's lists, say nothing."""
    files: dict[str, object] = {f"JPEGImages/{n}.jpg": (W, H) for n in "abc"}
    files.update({f"Annotations/{n}.xml": _voc(f"{n}.jpg", [("stamp", 1, 2, 11, 12)]) for n in "abc"})
    files.update({"ImageSets/Main/default.txt": "a\nb\nc\n", "ImageSets/Main/stamp_train.txt": "a 1\n"})
    _build(tmp_path, files)
    assert len(load_dataset(tmp_path)) == 3
    _build(tmp_path, {"ImageSets/Main/train.txt": "a\nb\n", "ImageSets/Main/val.txt": "c\n"})
    (tmp_path / "ImageSets/Main/default.txt").unlink()
    with pytest.raises(DatasetError, match=r"lists the splits train.txt, val.txt; pick one with --subset"):
        load_dataset(tmp_path)
    val = load_dataset(tmp_path, subset=tmp_path / "ImageSets/Main/val.txt")
    assert [r.name for r in val.records] == ["c.jpg"]


def test_voc_xml_beside_images_falls_back_to_xml_stem(tmp_path):
    _build(
        tmp_path,
        {
            "p.png": (W, H),
            "p.xml": _voc("renamed-later.jpg", [("stamp", 0, 0, 64, 48)]),
        },
    )
    ds = load_dataset(tmp_path)
    assert ds.format == "voc" and [r.name for r in ds.records] == ["p.png"]
    assert ds.records[0].normalised_box() == (0.0, 0.0, 1.0, 1.0)


def test_voc_box_overhanging_by_a_pixel_is_clipped(tmp_path):
    _build(tmp_path, {"a.jpg": (W, H), "a.xml": _voc("a.jpg", [("s", -0.5, 1, 64.8, 48)])})
    assert load_dataset(tmp_path).records[0].objects[0].box == (0.0, 1.0, 64.0, 48.0)


def test_a_box_dragged_a_little_past_a_large_photos_edge_is_clipped(tmp_path):
    """On a 1000x800 photo a box 12 px past the edge is a labelling tool's slop (2 % of the side
    is allowed), not an error that stops the whole run; 30 px past it still is."""
    _build(
        tmp_path,
        {
            "a.jpg": (1000, 800),
            "b.jpg": (1000, 800),
            "boxes.csv": "a.jpg,-12,100,500,812\nb.jpg,10,10,1012,700\n",
        },
    )
    recs = _by_name(load_dataset(tmp_path / "boxes.csv"))
    assert recs["a.jpg"].objects[0].box == (0.0, 100.0, 500.0, 800.0)
    assert recs["b.jpg"].objects[0].box == (10.0, 10.0, 1000.0, 700.0)
    (tmp_path / "boxes.csv").write_text("a.jpg,-30,100,500,700\n")
    with pytest.raises(DatasetError, match=r"boxes\.csv line 1: box \(-30, 100, 500, 700\) lies outside"):
        load_dataset(tmp_path / "boxes.csv")


def test_yolo_classes_txt_negatives_and_pixel_boxes(tmp_path, caplog):
    _build(
        tmp_path,
        {
            "classes.txt": "round\nsquare\n\n",
            "images/train/a.jpg": (W, H),
            "images/train/b.jpg": (W, H),
            "images/c.jpg": (W, H),
            "labels/train/a.txt": "1 0.5 0.5 0.25 0.5\n\n0 0.25 0.25 0.5 0.5\n",
            "labels/train/b.txt": "",
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path)
    assert ds.format == "yolo" and ds.labels == ("round", "square") and len(ds) == 2
    a = _by_name(ds)["a.jpg"]
    assert a.objects[0] == ObjectLabel("square", box=(24.0, 12.0, 40.0, 36.0))
    assert a.objects[1] == ObjectLabel("round", box=(0.0, 0.0, 32.0, 24.0))
    assert a.primary().label == "round"  # 32x24 beats 16x24
    assert _by_name(ds)["b.jpg"].is_negative
    assert ds.unlabelled == (tmp_path / "images" / "c.jpg",)


def test_yolo_label_files_match_their_images_in_any_case(tmp_path):
    """Labels written on Windows or by a tool that upper-cases names (IMG_0001.txt for
    img_0001.jpg) still find their image, as VOC, CSV and COCO names do."""
    _build(
        tmp_path,
        {
            "classes.txt": "stamp\n",
            "images/img_0001.jpg": (W, H),
            "images/IMG_0002.JPG": (W, H),
            "labels/IMG_0001.txt": "0 0.5 0.5 0.25 0.5\n",
            "labels/img_0002.txt": "",
        },
    )
    ds = load_dataset(tmp_path)
    recs = _by_name(ds)
    assert sorted(recs) == ["IMG_0002.JPG", "img_0001.jpg"] and ds.unlabelled == ()
    assert recs["img_0001.jpg"].objects[0].box == (24.0, 12.0, 40.0, 36.0)
    assert recs["IMG_0002.JPG"].is_negative


def test_yolo_segmentation_and_oriented_box_lines_are_the_box_around_their_points(tmp_path):
    """Ultralytics' and Roboflow's segmentation exports (class x1 y1 x2 y2 ...) and oriented boxes
    (four points)."""
    _build(
        tmp_path,
        {
            "classes.txt": "round\nsquare\n",
            "images/a.jpg": (W, H),
            "labels/a.txt": "0 0.25 0.25 0.75 0.25 0.5 0.75\n1 0.5 0 1 0.5 0.5 1 0 0.5\n",
        },
    )
    a = _by_name(load_dataset(tmp_path))["a.jpg"]
    assert a.objects[0] == ObjectLabel("round", box=(16.0, 12.0, 48.0, 36.0))
    assert a.objects[1] == ObjectLabel("square", box=(0.0, 0.0, 64.0, 48.0))


def test_yolo_pose_lines_are_their_box_not_their_keypoints(tmp_path):
    """A pose export's data.yaml has kpt_shape; its lines are a box and then keypoints (an odd
    count, like a polygon's)."""
    _build(
        tmp_path,
        {
            "data.yaml": "names: [seal]\nkpt_shape: [2, 3]\n",
            "images/a.jpg": (W, H),
            "labels/a.txt": "0 0.5 0.5 0.25 0.5 0.1 0.1 2 0.9 0.9 2\n",
        },
    )
    a = _by_name(load_dataset(tmp_path))["a.jpg"]
    assert a.objects == (ObjectLabel("seal", box=(24.0, 12.0, 40.0, 36.0)),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("names: [a, 'b c', \"d\"]\n", ("a", "b c", "d")),
        ("path: .\nnames: ['x', # comment\n  'y']\nnc: 2\n", ("x", "y")),
        ("names:\n  - a  # first\n  - 'it''s'\ntrain: images\n", ("a", "it's")),
        ("names:\n  0: zero\n  1: 'one'\n", ("zero", "one")),
        ("names: {1: b, 0: a}\n", ("a", "b")),
        # yaml.dump (Roboflow's YOLOv8 export, Ultralytics): the list at the key's own indent
        (
            "names:\n- kit\n- 'rac coon'  # comment\n\n- \"x\"\nnc: 3\nroboflow:\n  project: p\n",
            ("kit", "rac coon", "x"),
        ),
    ],
)
def test_yaml_names_standard_forms(text, expected):
    assert parse_yaml_names(text, "data.yaml") == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nc: 2\n", r"data\.yaml: expected a top-level 'names:'"),
        ("names: {0: a, 2: b}\n", r"data\.yaml line 1: expected class ids 0\.\.1, got \[0, 2\]"),
        ("names: [a, a]\n", r"class name 'a' appears twice"),
        ("names: [a, b]\nnc: 3\n", r"data\.yaml nc: says 3 classes but names lists 2"),
        ("names: !!seq [a]\n", r"data\.yaml line 1: this form of 'names:' is not understood without PyYAML"),
    ],
)
def test_yaml_names_errors(text, match):
    if "PyYAML" in match and importlib.util.find_spec("yaml") is not None:
        pytest.skip("PyYAML is installed, so the unusual form is parsed")
    with pytest.raises(DatasetError, match=match):
        parse_yaml_names(text, "data.yaml")


def test_yolo_data_yaml_in_place_of_classes_txt(tmp_path):
    _build(
        tmp_path,
        {
            "data.yaml": "names:\n  0: round\n  1: square\n",
            "images/a.jpg": (W, H),
            "labels/a.txt": "1 0.5 0.5 0.5 0.5\n",
        },
    )
    ds = load_dataset(tmp_path)
    assert ds.labels == ("square",) and ds.records[0].objects[0].label == "square"


def test_yolo_exports_split_roboflow_and_ultralytics_style_load_one_split(tmp_path):
    roboflow = tmp_path / "roboflow"
    _build(
        roboflow,
        {
            "data.yaml": "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['round', 'square']\n",
            "train/images/a.jpg": (W, H),
            "train/labels/a.txt": "1 0.5 0.5 0.5 0.5\n",
            "valid/images/b.jpg": (W, H),
            "valid/labels/b.txt": "0 0.5 0.5 0.5 0.5\n",
        },
    )
    train = load_dataset(roboflow / "train")
    assert [r.name for r in train.records] == ["a.jpg"] and train.records[0].objects[0].label == "square"
    assert load_dataset(roboflow / "valid").records[0].objects[0].label == "round"
    with pytest.raises(DatasetError, match=r"holds the splits train, valid; pass one of them") as info:
        load_dataset(roboflow)
    assert str(roboflow / "train") in str(info.value)

    ultra = tmp_path / "ultralytics"
    _build(
        ultra,
        {
            "data.yaml": "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: round\n  1: square\n",
            "images/train/a.jpg": (W, H),
            "labels/train/a.txt": "0 0.5 0.5 0.5 0.5\n",
            "images/val/b.jpg": (W, H),
            "images/val/c.jpg": (W, H),
            "labels/val/b.txt": "1 0.5 0.5 0.5 0.5\n",
            "labels/val/c.txt": "",
        },
    )
    val = load_dataset(ultra / "images" / "val")
    assert val.format == "yolo" and [r.name for r in val.records] == ["b.jpg", "c.jpg"]
    assert val.records[0].objects[0].label == "square" and val.records[1].is_negative
    with pytest.raises(DatasetError, match=r"images: holds the splits train, val; pass one of them"):
        load_dataset(ultra)  # train and val at once would test on training images
    for folder in ("images", "labels"):  # COCO's split names, as Ultralytics' coco.yaml has them
        (ultra / folder / "train").rename(ultra / folder / "train2017")
        (ultra / folder / "val").rename(ultra / folder / "val2017")
    with pytest.raises(DatasetError, match=r"images: holds the splits train2017, val2017; pass one"):
        load_dataset(ultra)
    for folder in ("images", "labels"):  # two batches of training photos are one set
        (ultra / folder / "val2017").rename(ultra / folder / "train2")
    assert len(load_dataset(ultra)) == 3


def test_labels_are_the_listed_classes_some_object_uses(tmp_path, caplog):
    # LabelImg's predefined classes before the user's; ids still index the full list
    _build(
        tmp_path / "yolo",
        {
            "classes.txt": "dog\nround\ncat\nsquare\n",
            "images/a.jpg": (W, H),
            "images/b.jpg": (W, H),
            "labels/a.txt": "3 0.5 0.5 0.5 0.5\n",
            "labels/b.txt": "1 0.5 0.5 0.5 0.5\n",
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path / "yolo")
    assert ds.labels == ("round", "square")
    assert [r.objects[0].label for r in ds.records] == ["square", "round"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'yolo'}: 2 listed class(es) that no object uses left out of the labels: 'dog', 'cat'"
    ]
    # a subset keeps the labels of the whole set
    (tmp_path / "b.txt").write_text("b.jpg\n")
    assert load_dataset(tmp_path / "yolo", subset=tmp_path / "b.txt").labels == ("round", "square")
    # Roboflow's COCO export lists the project as a category no annotation uses
    doc = {
        "images": [{"id": 0, "file_name": "a.jpg", "width": W, "height": H}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "bbox": [1, 2, 10, 10]}],
        "categories": [
            {"id": 0, "name": "stamps-x1y2", "supercategory": "none"},
            {"id": 1, "name": "kit", "supercategory": "stamps-x1y2"},
            {"id": 2, "name": "round", "supercategory": "stamps-x1y2"},
        ],
    }
    _build(tmp_path / "coco", {"a.jpg": (W, H), "_annotations.coco.json": json.dumps(doc)})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path / "coco")
    assert ds.labels == ("round",) and ds.records[0].objects[0].label == "round"
    assert "'stamps-x1y2', 'kit'" in caplog.text


@pytest.mark.parametrize(
    "split",
    [
        {"_annotations.coco.json": _coco_doc("a.jpg"), "a.jpg": (W, H)},
        {"a.xml": "<annotation><filename>a.jpg</filename></annotation>", "a.jpg": (W, H)},
        {"_annotations.csv": "filename,xmin,ymin,xmax,ymax\na.jpg,1,1,5,5\n", "a.jpg": (W, H)},
    ],
    ids=["coco", "voc", "csv"],
)
def test_the_root_of_a_split_export_in_any_format_asks_for_one_split(tmp_path, split):
    _build(
        tmp_path,
        {
            "README.roboflow.txt": "exported",
            **{f"{s}/{k}": v for s in ("test", "train", "valid") for k, v in split.items()},
        },
    )
    assert load_dataset(tmp_path / "train").records
    with pytest.raises(
        DatasetError,
        match=rf"^{re.escape(str(tmp_path))}: holds the splits test, train, valid; pass one of them "
        rf"\(e\.g\. --data {re.escape(str(tmp_path / 'train'))}\)$",
    ):
        load_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: ['stamp']\n")
    with pytest.raises(DatasetError, match=r"holds the splits test, train, valid; pass one of them"):
        load_dataset(tmp_path / "data.yaml")  # Roboflow's root data.yaml, given for the set


def test_yolo_labels_beside_the_images_labelimg(tmp_path, caplog):
    _build(
        tmp_path,
        {
            "classes.txt": "dog\nround\nsquare\n",
            "a.jpg": (W, H),
            "a.txt": "2 0.5 0.5 0.25 0.5\n",
            "b.png": (W, H),
            "b.txt": "",
            "c.jpg": (W, H),
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        ds = load_dataset(tmp_path)
    assert (
        ds.format == "yolo"
        and ds.labels == ("square",)
        and [r.name for r in ds.records] == ["a.jpg", "b.png"]
    )
    assert ds.records[0].objects == (ObjectLabel("square", box=(24.0, 12.0, 40.0, 36.0)),)
    assert ds.records[1].is_negative and ds.unlabelled == (tmp_path / "c.jpg",)
    (tmp_path / "z.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"^z\.txt: no image for these labels \(expected \./z with one of"):
        load_dataset(tmp_path)


def test_yolo_cvat_export_obj_names_and_obj_train_data(tmp_path):
    files = {
        "obj.names": "round\nsquare\n",
        "obj.data": "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n",
        "train.txt": "data/obj_train_data/a.jpg\ndata/obj_train_data/b.jpg\n",
        "obj_train_data/a.jpg": (W, H),
        "obj_train_data/a.txt": "1 0.5 0.5 0.25 0.5\n",
        "obj_train_data/b.jpg": (W, H),
        "obj_train_data/b.txt": "0 0.25 0.25 0.5 0.5\n",
    }
    _build(tmp_path, files)
    for path in (tmp_path, tmp_path / "obj_train_data"):
        ds = load_dataset(path)
        assert ds.format == "yolo" and ds.labels == ("round", "square")
        assert [(r.name, r.objects[0].label) for r in ds.records] == [("a.jpg", "square"), ("b.jpg", "round")]
        assert ds.records[1].objects[0].box == (0.0, 0.0, 32.0, 24.0)
    _build(tmp_path, {"obj_valid_data/c.jpg": (W, H), "obj_valid_data/c.txt": ""})
    with pytest.raises(
        DatasetError,
        match=rf"holds the splits obj_train_data, obj_valid_data; pass one of them "
        rf"\(e\.g\. --data {re.escape(str(tmp_path / 'obj_train_data'))}\)$",
    ):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path / "obj_valid_data").records[0].is_negative
    (tmp_path / "obj_valid_data" / "classes.txt").write_text("round\n")
    with pytest.raises(
        DatasetError, match=r"obj\.names: \['round', 'square'\] differ from classes\.txt \['round'\]$"
    ):
        load_dataset(tmp_path / "obj_valid_data")


def test_cvat_yolo_export_with_a_tasks_subfolders_loads_from_either_folder(tmp_path):
    _build(
        tmp_path,
        {
            "obj.names": "raccoon\n",
            "obj_train_data/grp0/a.jpg": (W, H),
            "obj_train_data/grp0/a.txt": "0 0.5 0.5 0.25 0.5\n",
            "obj_train_data/grp1/b.jpg": (W, H),
            "obj_train_data/grp1/b.txt": "",
        },
    )
    for path in (tmp_path, tmp_path / "obj_train_data"):
        ds = load_dataset(path)
        assert [r.name for r in ds.records] == ["a.jpg", "b.jpg"] and ds.records[1].is_negative


@pytest.mark.parametrize("images", ["images/default", "images"])
def test_cvat_coco_export_loads_from_its_folder_or_its_json(tmp_path, images):
    _build(
        tmp_path,
        {
            "annotations/instances_default.json": _coco_doc("a.jpg", "b.jpg"),
            f"{images}/a.jpg": (W, H),
            f"{images}/b.jpg": (W, H),
        },
    )
    for path in (tmp_path, tmp_path / "annotations" / "instances_default.json"):
        ds = load_dataset(path)
        assert ds.format == "coco" and ds.labels == ("stamp",) and ds.root == tmp_path
        assert [r.image_path for r in ds.records] == [
            tmp_path / images / "a.jpg",
            tmp_path / images / "b.jpg",
        ]
        assert ds.records[0].objects[0].box == (1, 2, 11, 12)
    (tmp_path / images / "b.jpg").unlink()
    with pytest.raises(
        DatasetError,
        match=r"^instances_default\.json images\[1\]: image 'b\.jpg' not found \(looked in annotations/ and "
        r"annotations/images/ and images/default/ and images/\)$",
    ):
        load_dataset(tmp_path)


def test_coco_negatives_category_order_and_images_folder(tmp_path):
    doc = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": W, "height": H},
            {"id": 8, "file_name": "b.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [20, 10, 30.5, 20]},
        ],
        "categories": [{"id": 3, "name": "zeta"}, {"id": 1, "name": "alpha"}],
    }
    _build(tmp_path, {"images/a.jpg": (W, H), "images/b.jpg": (W, H), "data.json": json.dumps(doc)})
    ds = load_dataset(tmp_path)
    assert ds.format == "coco" and ds.labels == ("zeta", "alpha")
    a, b = ds.records
    assert [o.box for o in a.objects] == [(1, 2, 11, 12), (20, 10, 50.5, 30)]
    assert a.primary().label == "alpha" and b.is_negative and (b.width, b.height) == (W, H)
    assert load_dataset(tmp_path / "data.json").records == ds.records


def test_csv_with_header_reordered_columns_negative_row_and_images_folder(tmp_path):
    text = (
        "class,filename,ymin,xmin,ymax,xmax,width,height\n"
        "cat,a.jpg,2,1,12,11,64,48\n"
        "dog,a.jpg,10,10,40,60,64,48\n"
        ",b.jpg,,,,,0.00,0\n"  # 0: a size the exporter did not know, as in VOC and COCO
    )
    _build(tmp_path, {"images/a.jpg": (W, H), "images/b.jpg": (W, H), "labels.csv": text})
    ds = load_dataset(tmp_path)
    assert ds.format == "csv" and ds.labels == ("cat", "dog")
    a, b = ds.records
    assert [o.box for o in a.objects] == [(1, 2, 11, 12), (10, 10, 60, 40)]
    assert a.primary().label == "dog" and b.is_negative


@pytest.mark.parametrize(
    "text",
    [
        # Excel in a locale with a decimal comma: ';'-separated, CRLF, a BOM
        "\ufefffilename;xmin;ymin;xmax;ymax;class\r\na.jpg;1;2,5;11;12;round\r\nb.jpg;3;4;13,25;14;square\r\n",
        "filename\txmin\tymin\txmax\tymax\tclass\na.jpg\t1\t2,5\t11\t12\tround\nb.jpg\t3\t4\t13.25\t14\tsquare\n",
        "a.jpg;1;2,5;11;12;round\nb.jpg;3;4;13,25;14;square\n",  # a comma on every line, too
    ],
    ids=["semicolon", "tab", "semicolon-headerless"],
)
def test_csv_separated_by_semicolons_or_tabs(tmp_path, text):
    _build(tmp_path, {"a.jpg": (W, H), "b.jpg": (W, H)})
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8", newline="")
    ds = load_dataset(tmp_path)
    assert ds.labels == ("round", "square")
    assert [r.objects[0].box for r in ds.records] == [(1, 2.5, 11, 12), (3, 4, 13.25, 14)]


def test_coco_crowd_annotations_are_left_out(tmp_path, caplog):
    """A crowd box (iscrowd 1) covers many objects: not an object, so not taken for the largest."""
    doc = _coco(
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 40], "iscrowd": 1},
        ]
    )
    _build(tmp_path, {"images/a.jpg": (W, H), "a.json": doc})
    (record,) = load_dataset(tmp_path / "a.json").records
    assert record.objects == (ObjectLabel("stamp", (1, 1, 11, 11)),)
    assert "1 crowd annotation(s) (iscrowd 1) left out" in caplog.text


def test_a_coco_image_with_only_crowd_annotations_is_left_out_not_taken_for_a_negative(tmp_path, caplog):
    """Something is there (CVAT writes a mask drawn with its brush as a crowd): no negative."""
    images = [{"id": i, "file_name": f"{n}.jpg", "width": W, "height": H} for i, n in enumerate("abc")]
    doc = _coco(
        images=images,
        annotations=[
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [0, 0, 60, 40], "iscrowd": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},
        ],
    )
    _build(tmp_path, {"images/a.jpg": (W, H), "images/b.jpg": (W, H), "images/c.jpg": (W, H), "a.json": doc})
    ds = load_dataset(tmp_path / "a.json")
    assert [(r.name, r.is_negative) for r in ds.records] == [("b.jpg", False), ("c.jpg", True)]
    assert "1 image(s) with nothing else left out too (not negatives), e.g. a.jpg" in caplog.text
    (tmp_path / "sub.txt").write_text("a.jpg\nb.jpg\n")  # a list made before the export names it
    assert [r.name for r in load_dataset(tmp_path / "a.json", subset=tmp_path / "sub.txt").records] == [
        "b.jpg"
    ]


def test_roboflows_unused_coco_category_may_share_the_class_name_but_two_used_ones_may_not(tmp_path):
    """Roboflow's category 0 is named after the project, which may be the class's own name."""
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}]
    categories = [{"id": 0, "name": "stamp", "supercategory": "none"}, {"id": 1, "name": "stamp"}]
    _build(
        tmp_path, {"images/a.jpg": (W, H), "a.json": _coco(annotations=annotations, categories=categories)}
    )
    ds = load_dataset(tmp_path / "a.json")
    assert ds.labels == ("stamp",) and ds.records[0].objects == (ObjectLabel("stamp", (1, 1, 11, 11)),)
    annotations.append({"id": 2, "image_id": 1, "category_id": 0, "bbox": [20, 2, 10, 10]})
    (tmp_path / "a.json").write_text(_coco(annotations=annotations, categories=categories))
    with pytest.raises(DatasetError, match="'stamp' appears twice"):
        load_dataset(tmp_path / "a.json")


def test_subfolders_linked_in_from_elsewhere_are_part_of_the_set_and_a_loop_is_no_trouble(tmp_path):
    """A batch of photos linked into images/ and labels/ (Python before 3.13 passes linked
    folders over in silence: half the set gone, or "no image for these labels")."""
    _build(
        tmp_path,
        {
            "yolo/classes.txt": "stamp\n",
            "yolo/images/a.jpg": (W, H),
            "yolo/labels/a.txt": "0 0.5 0.5 0.25 0.25\n",
            "store/images/b.jpg": (W, H),
            "store/labels/b.txt": "",
            "voc/annotations/a.xml": _voc("a.jpg", [("stamp", 1, 2, 11, 12)]),
            "voc/images/a.jpg": (W, H),
            "store/voc/b.xml": _voc("b.jpg", []),
        },
    )
    (tmp_path / "yolo/images/batch2").symlink_to(tmp_path / "store/images")
    (tmp_path / "yolo/labels/batch2").symlink_to(tmp_path / "store/labels")
    (tmp_path / "yolo/images/batch2/up").symlink_to(tmp_path / "yolo/images")  # a loop
    ds = load_dataset(tmp_path / "yolo")
    assert [(r.name, r.is_negative) for r in ds.records] == [("a.jpg", False), ("b.jpg", True)]
    (tmp_path / "voc/annotations/batch2").symlink_to(tmp_path / "store/voc")
    (tmp_path / "voc/images/batch2").symlink_to(tmp_path / "store/images")
    ds = load_dataset(tmp_path / "voc")
    assert [(r.name, r.is_negative) for r in ds.records] == [("a.jpg", False), ("b.jpg", True)]


def test_photos_beside_a_label_file_it_does_not_list_are_said_when_the_folder_is_given(
    tmp_path, caplog, monkeypatch
):
    """Roboflow's CSV export has no row for its photos without a stamp: the set's negatives,
    gone without a word. Given the file itself, what it lists is the set."""
    _build(
        tmp_path,
        {
            "a.jpg": (W, H),
            "b.jpg": (W, H),
            "c.jpg": (W, H),
            "_annotations.csv": "filename,width,height,class,xmin,ymin,xmax,ymax\n"
            "a.jpg,64,48,stamp,1,2,11,12\n"
            f"{tmp_path / 'd.jpg'},64,48,stamp,1,2,11,12\n",  # listed by its absolute path
            "d.jpg": (W, H),
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        monkeypatch.chdir(tmp_path.parent)  # given relative, a photo listed by its absolute path
        ds = load_dataset(Path(tmp_path.name))
    assert [r.name for r in ds.records] == ["a.jpg", "d.jpg"]
    assert ds.unlabelled == (Path(tmp_path.name, "b.jpg"), Path(tmp_path.name, "c.jpg"))
    said = [r.getMessage() for r in caplog.records if "skipped (not negatives)" in r.getMessage()]
    assert len(said) == 1 and "2 image(s) are not in _annotations.csv" in said[0]
    assert "needs a row with its box fields empty" in said[0] and "e.g. b.jpg" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        assert load_dataset(tmp_path / "_annotations.csv").unlabelled == ()
    assert "skipped" not in caplog.text


def test_a_name_in_the_other_unicode_form_finds_its_image(tmp_path):
    """Labels written with composed characters (NFC), files named in decomposed ones (NFD, as
    macOS writes them), and the other way round."""
    composed, decomposed = "Pr\u00fcfung.jpg", "Pru\u0308fung.jpg"
    for label, disk in ((composed, decomposed), (decomposed, composed)):
        root = tmp_path / str(len(label))
        _build(root, {disk: (W, H), "l.csv": f"{label},1,1,9,9\n"})
        (record,) = load_dataset(root / "l.csv").records
        assert record.image_path.name == disk


def test_csv_headerless_beside_images_with_default_label(tmp_path):
    _build(tmp_path, {"a.jpg": (W, H), "b.jpg": (W, H), "boxes.csv": "a.jpg,1,2,11,12\nb.jpg,,,,\n"})
    ds = load_dataset(tmp_path / "boxes.csv")
    assert ds.labels == ("stamp",) and ds.records[0].objects == (ObjectLabel("stamp", (1, 2, 11, 12)),)
    assert ds.records[1].is_negative and ds.records[1].width == W


def test_settings_files_beside_the_photos_are_not_taken_for_labels(tmp_path):
    """A camera's settings.xml or camera.json beside the photos made a labelled set fail to load
    (taken for VOC), and a folder of plain calibration photos with them be refused."""
    settings = '<?xml version="1.0"?>\n<!-- exposure -->\n<settings><gain>2</gain></settings>\n'
    _build(
        tmp_path,
        {
            "voc/a.jpg": (W, H),
            "voc/a.xml": _voc("a.jpg", [("stamp", 0, 0, 32, 24)]),
            "voc/settings.xml": settings,
            "csv/a.jpg": (W, H),
            "csv/boxes.csv": "a.jpg,1,2,11,12\n",
            "csv/settings.xml": settings,
            "plain/a.jpg": (W, H),
            "plain/settings.xml": settings,
            "plain/camera.json": '{"exposure_us": 800}',
            "plain/parts.csv": "part,colour\nlid,red\n",
        },
    )
    voc = load_dataset(tmp_path / "voc")
    assert voc.format == "voc" and [r.name for r in voc.records] == ["a.jpg"]
    assert load_dataset(tmp_path / "csv").format == "csv"
    with pytest.raises(DatasetError, match=r"plain: no labels found \(camera\.json, parts\.csv: no images,"):
        detect_format(tmp_path / "plain")


def test_a_sets_class_list_annotations_or_images_folder_given_for_the_set(tmp_path):
    """--data data.yaml, --data voc/annotations or --data split/images: the set they belong to,
    not an error (classes.txt was read as centre points, annotations/ looked for images in itself)."""
    _build(
        tmp_path,
        {
            "y/images/a.jpg": (W, H),
            "y/labels/a.txt": "0 0.5 0.5 0.25 0.5\n",
            "y/data.yaml": "names: [stamp]\n",
            "y/classes.txt": "stamp\n",
            "v/images/a.jpg": (W, H),
            "v/annotations/a.xml": _voc("a.jpg", [("stamp", 0, 0, 32, 24)]),
        },
    )
    for given in ("y/data.yaml", "y/classes.txt", "y/images"):
        assert detect_format(tmp_path / given) == ("yolo", tmp_path / "y"), given
        assert len(load_dataset(tmp_path / given).records) == 1
    assert detect_format(tmp_path / "v" / "annotations") == ("voc", tmp_path / "v")
    assert [r.name for r in load_dataset(tmp_path / "v" / "annotations").records] == ["a.jpg"]


def test_a_label_file_not_in_utf8_names_its_line(tmp_path):
    """Excel's 'CSV (Windows)' writes cp1252: the error says on which line, not at which byte."""
    _build(tmp_path, {"a.jpg": (W, H), "b.jpg": (W, H)})
    (tmp_path / "boxes.csv").write_bytes(
        "a.jpg,1,2,11,12,stamp\nb.jpg,3,4,13,14,tamp\u00e9\n".encode("cp1252")
    )
    with pytest.raises(
        DatasetError, match=r"^boxes\.csv line 2: not UTF-8 text \(byte 0xe9\); expected UTF-8"
    ):
        load_dataset(tmp_path / "boxes.csv")


def test_labels_that_differ_only_in_capitals_are_refused(tmp_path):
    """'stamp' on some rows and 'Stamp' on others made two variants: a class head trained on one
    stamp, and --expect stamp calling the other spelling WRONG."""
    _build(
        tmp_path,
        {"a.jpg": (W, H), "b.jpg": (W, H), "boxes.csv": "a.jpg,1,2,11,12,stamp\nb.jpg,3,4,13,14,Stamp\n"},
    )
    with pytest.raises(DatasetError, match=r"boxes\.csv: labels 'stamp' and 'Stamp' differ only in capitals"):
        load_dataset(tmp_path / "boxes.csv")
    (tmp_path / "boxes.csv").write_text("a.jpg,1,2,11,12,stamp\nb.jpg,3,4,13,14,stamp\n")
    assert load_dataset(tmp_path / "boxes.csv").labels == ("stamp",)


def test_boxes_given_as_fractions_of_the_image_are_refused(tmp_path):
    """Read as pixels, boxes normalised to 0..1 are specks in the top-left corner: edge-eval
    scored IoU 0 and edge-train trained on them without a word."""
    _build(
        tmp_path,
        {"a.jpg": (W, H), "b.jpg": (W, H), "boxes.csv": "a.jpg,0.1,0.2,0.6,0.9\nb.jpg,0.5,0.5,1,1\n"},
    )
    with pytest.raises(
        DatasetError,
        match=r"boxes\.csv line 1: every box of boxes\.csv lies within the first "
        r"pixel \(largest coordinate 1\); expected pixel coordinates",
    ):
        load_dataset(tmp_path / "boxes.csv")
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.1, 0.2, 0.5, 0.5]}],
        "categories": [{"id": 1, "name": "stamp"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"coco\.json annotations\[0\]\.bbox: every box .* first pixel"):
        load_dataset(tmp_path / "coco.json")
    # one real box among them is enough to tell pixels
    (tmp_path / "boxes.csv").write_text("a.jpg,0.1,0.2,0.6,0.9\nb.jpg,5,5,30,20\n")
    assert len(load_dataset(tmp_path / "boxes.csv").records) == 2
    # a fraction rounded up past 1 does not make a set of fractions one of pixels
    _build(tmp_path, {"c.jpg": (W, H)})
    (tmp_path / "boxes.csv").write_text(
        "filename,xmin,ymin,xmax,ymax,class\na.jpg,0.12,0.21,0.8,0.97,x\nb.jpg,0.07,0.08,0.57,0.87,x\n"
        "c.jpg,0.0014,0.0021,1.0004,0.9917,x\n"
    )
    with pytest.raises(DatasetError, match=r"line 2: every box of boxes\.csv lies within the first pixel"):
        load_dataset(tmp_path / "boxes.csv")


def test_a_csv_class_column_under_another_name_is_read_or_said(tmp_path, caplog):
    _build(tmp_path, {"a.jpg": (W, H), "b.jpg": (W, H)})
    rows = "a.jpg,1,2,11,12,raccoon\nb.jpg,3,4,13,14,dog\n"
    (tmp_path / "l.csv").write_text("filename,xmin,ymin,xmax,ymax,label_name\n" + rows)
    assert load_dataset(tmp_path / "l.csv").labels == ("raccoon", "dog")
    (tmp_path / "l.csv").write_text("filename,xmin,ymin,xmax,ymax,species\n" + rows)
    with caplog.at_level(logging.WARNING, logger="edge.datasets"):
        assert load_dataset(tmp_path / "l.csv").labels == ("stamp",)
    assert "no label column" in caplog.text and "column(s) 'species' not read" in caplog.text
    # a box without a class among boxes with one is not quietly given the default label
    (tmp_path / "l.csv").write_text(
        "filename,xmin,ymin,xmax,ymax,class\na.jpg,1,2,11,12,raccoon\nb.jpg,3,4,13,14,\n"
    )
    with pytest.raises(DatasetError, match=r"l\.csv line 3: class is empty, while .*line 2 names one"):
        load_dataset(tmp_path / "l.csv")


def test_a_csv_header_without_a_file_name_column_says_so(tmp_path):
    _build(tmp_path, {"a.jpg": (W, H), "boxes.csv": "file,xmin,ymin,xmax,ymax\na.jpg,1,2,11,12\n"})
    with pytest.raises(
        DatasetError,
        match=r"boxes\.csv line 1: a header without a file name column \(expected "
        r"one of filename, file_name, image",
    ):
        load_dataset(tmp_path / "boxes.csv")


def test_label_files_find_their_images_in_any_case_and_hidden_files_are_ignored(tmp_path):
    _build(
        tmp_path,
        {
            "images/A.JPG": (W, H),
            "images/b.Png": (W, H),
            "annotations/a.xml": _voc("a.jpg", [("stamp", 1, 2, 11, 12)]),  # says a.jpg: the disk has A.JPG
            "annotations/b.xml": _voc("", [("stamp", 1, 2, 11, 12)]).replace("<filename></filename>", ""),
            "annotations/._a.xml": "\x00\x05\x16\x07 macOS AppleDouble resource fork",
            "images/._A.JPG": "not an image",
        },
    )
    ds = load_dataset(tmp_path)
    assert sorted(r.name for r in ds.records) == ["A.JPG", "b.Png"]
    _build(tmp_path / "csv", {"IMG_1.JPG": (W, H), "boxes.csv": "img_1.jpg,1,2,11,12\n"})
    assert load_dataset(tmp_path / "csv" / "boxes.csv").records[0].name == "IMG_1.JPG"
    _build(
        tmp_path / "yolo",
        {
            "images/a.jpg": (W, H),
            "labels/a.txt": "0 0.5 0.5 0.2 0.2\n",
            "labels/._a.txt": "\x00",
            "classes.txt": "s\n",
        },
    )
    assert len(load_dataset(tmp_path / "yolo").records) == 1


def test_centers_multiple_points_and_class_name(tmp_path):
    _build(
        tmp_path,
        {
            "a.jpg": (W, H),
            "b.jpg": (W, H),
            "my photo 2.jpg": (W, H),  # a name with spaces: the numbers are the last two fields
            "labels.txt": "a.jpg 0.5 0.25\nb.jpg 0 1\na.jpg 0.1 0.2\nmy photo 2.jpg  0.3\t0.4 \n",
        },
    )
    ds = load_dataset(tmp_path)
    assert ds.format == "centers" and ds.labels == ("stamp",)
    assert _by_name(ds)["my photo 2.jpg"].primary().center == (0.3, 0.4)
    a = _by_name(ds)["a.jpg"]
    assert [o.center for o in a.objects] == [(0.5, 0.25), (0.1, 0.2)]
    assert a.primary().center == (0.5, 0.25) and a.normalised_center() == (0.5, 0.25)
    assert a.normalised_box() is None and (a.width, a.height) == (W, H)
    (tmp_path / "classes.txt").write_text("phone\n")
    assert load_dataset(tmp_path / "labels.txt").labels == ("phone",)
    (tmp_path / "classes.txt").write_text("phone\nmug\n")
    with pytest.raises(
        DatasetError, match=r"^classes\.txt: expected one class name beside labels\.txt, got 2$"
    ):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ((), None),
        ((ObjectLabel("a", (0, 0, 2, 2)), ObjectLabel("b", (0, 0, 3, 3))), "b"),
        ((ObjectLabel("a", (0, 0, 2, 2)), ObjectLabel("b", (5, 5, 7, 7))), "a"),  # tie: first
        ((ObjectLabel("a", center=(0.1, 0.1)), ObjectLabel("b", center=(0.9, 0.9))), "a"),
        ((ObjectLabel("a", center=(0.1, 0.1)), ObjectLabel("b", (0, 0, 1, 1))), "b"),
    ],
)
def test_primary_is_the_largest_box(objects, expected):
    primary = Record(Path("x.jpg"), objects).primary()
    assert (primary.label if primary else None) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": "", "box": (0, 0, 1, 1)}, "expected a non-empty class name"),
        ({"label": "a"}, "expected a box or a center"),
        ({"label": "a", "box": (5, 0, 1, 1)}, "expected x_min < x_max"),
        ({"label": "a", "center": (0.5, 1.5)}, r"expected 2 numbers in \[0, 1\]"),
    ],
)
def test_object_label_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ObjectLabel(**kwargs)


# -- malformed input: one table for every format --------------------------------------------------

IMG = (W, H)
VOC_BASE = {"images/a.jpg": IMG}
YOLO_BASE = {"images/a.jpg": IMG, "classes.txt": "round\nsquare\n"}
CSV_BASE = {"images/a.jpg": IMG}
CENTERS_BASE = {"a.jpg": IMG}


def _coco(images=None, annotations=None, categories=None, drop=None) -> str:
    doc = {
        "images": images
        if images is not None
        else [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
        "annotations": annotations if annotations is not None else [],
        "categories": categories if categories is not None else [{"id": 1, "name": "stamp"}],
    }
    doc.pop(drop, None)
    return json.dumps(doc, indent=1)


def _ann(**kw) -> list[dict]:
    return [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], **kw}]


MALFORMED = [
    # Pascal VOC
    (
        "voc-bad-xml",
        {**VOC_BASE, "annotations/a.xml": "<annotation><filename>a.jpg"},
        ".",
        r"^annotations/a\.xml: not valid XML \(.*line 1",
    ),
    (
        "voc-root",
        {**VOC_BASE, "annotations/a.xml": "<foo/>"},
        ".",
        r"^annotations/a\.xml <foo>: expected the root element <annotation>",
    ),
    (
        "voc-cvat-for-images",
        {
            **CSV_BASE,
            "annotations.xml": "<annotations><version>1.1</version><image id='0' name='a.jpg' width='64' "
            "height='48'><box label='stamp' xtl='1' ytl='2' xbr='10' ybr='20'/></image></annotations>",
        },
        ".",
        r"^annotations\.xml: a CVAT for images XML export, which is not read here; export the task as "
        r"'COCO 1\.0', 'YOLO 1\.1' or 'PASCAL VOC 1\.1' instead$",
    ),
    (
        "voc-missing-field",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [("s", 1, 1, 5, 5)]).replace("<ymax>5</ymax>", "")},
        ".",
        r"^annotations/a\.xml <bndbox>: expected <ymax>, it is missing$",
    ),
    (
        "voc-no-bndbox",
        {**VOC_BASE, "annotations/a.xml": "<annotation><object><name>s</name></object></annotation>"},
        ".",
        r"^annotations/a\.xml <object>: expected a <bndbox>",
    ),
    (
        "voc-no-name",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [(" ", 1, 1, 5, 5)])},
        ".",
        r"^annotations/a\.xml <name>: expected a class name, got nothing$",
    ),
    (
        "voc-not-number",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [("s", "abc", 1, 5, 5)])},
        ".",
        r"^annotations/a\.xml <bndbox>: xmin 'abc' is not a number$",
    ),
    (
        "voc-inverted",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [("s", 30, 1, 10, 5)])},
        ".",
        r"^annotations/a\.xml <bndbox>: expected xmin < xmax, got 30 >= 10$",
    ),
    (
        "voc-second-object",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [("s", 1, 1, 5, 5), ("s", 1, 9, 5, 5)])},
        ".",
        r"^annotations/a\.xml <object> 2 <bndbox>: expected ymin < ymax, got 9 >= 5$",
    ),
    (
        "voc-outside",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [("s", 1, 1, 100, 5)])},
        ".",
        r"^annotations/a\.xml <bndbox>: box \(1, 1, 100, 5\) lies outside the 64x48 image",
    ),
    (
        "voc-size-mismatch",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [], size=(100, 90))},
        ".",
        r"^annotations/a\.xml <size>: says the image is 100x90 but a\.jpg is 64x48",
    ),
    (
        "voc-bad-size",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", [], size=("wide", 90))},
        ".",
        r"^annotations/a\.xml <size>: width 'wide' is not a positive integer$",
    ),
    (
        "voc-missing-image",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", []), "annotations/b.xml": _voc("b.jpg", [])},
        ".",
        r"^annotations/b\.xml <filename>: image 'b\.jpg' not found in images/",
    ),
    (
        "voc-image-twice",
        {**VOC_BASE, "annotations/a.xml": _voc("a.jpg", []), "annotations/b.xml": _voc("a.jpg", [])},
        ".",
        r"^annotations/b\.xml <filename>: image 'a\.jpg' is already "
        r"labelled by annotations/a\.xml$",
    ),
    # YOLO
    (
        "yolo-class-range",
        {**YOLO_BASE, "labels/a.txt": "2 0.5 0.5 0.2 0.2\n"},
        ".",
        r"^labels/a\.txt line 1: class id '2' is out of range \(expected 0\.\.1, 2 classes\)$",
    ),
    (
        "yolo-class-float",
        {**YOLO_BASE, "labels/a.txt": "\n0.5 0.5 0.5 0.2 0.2\n"},
        ".",
        r"^labels/a\.txt line 2: class id '0\.5' is out of range",
    ),
    (
        "yolo-columns",
        {**YOLO_BASE, "labels/a.txt": "0 0.5 0.5 0.2\n"},
        ".",
        r"^labels/a\.txt line 1: expected 5 values 'class x_center y_center width height' \(or a class and "
        r"three or more x y points\), got 4$",
    ),
    (
        "yolo-not-number",
        {**YOLO_BASE, "labels/a.txt": "0 0.5 abc 0.2 0.2\n"},
        ".",
        r"^labels/a\.txt line 1: y_center 'abc' is not a number$",
    ),
    (
        "yolo-zero-size",
        {**YOLO_BASE, "labels/a.txt": "0 0.5 0.5 0 0.2\n"},
        ".",
        r"^labels/a\.txt line 1: expected width > 0 and height > 0, got 0, 0\.2$",
    ),
    (
        "yolo-outside",
        {**YOLO_BASE, "labels/a.txt": "0 0.95 0.5 0.3 0.2\n"},
        ".",
        r"^labels/a\.txt line 1: box \(.*\) lies outside the 64x48 image",
    ),
    (
        "yolo-orphan-label",
        {**YOLO_BASE, "labels/a.txt": "", "labels/z.txt": ""},
        ".",
        r"^labels/z\.txt: no image for these labels \(expected images/z with one of \.jpg",
    ),
    (
        "yolo-no-classes",
        {"images/a.jpg": IMG, "labels/a.txt": ""},
        ".",
        r"YOLO folder without classes\.txt, obj\.names or data\.yaml naming the classes$",
    ),
    (
        "yolo-classes-disagree",
        {**YOLO_BASE, "labels/a.txt": "", "data.yaml": "names: [x, y]\n"},
        ".",
        r"^data\.yaml names: \['x', 'y'\] differ from classes\.txt \['round', 'square'\]$",
    ),
    (
        "yolo-empty-class-name",
        {**YOLO_BASE, "classes.txt": "a\n\nb\n", "labels/a.txt": ""},
        ".",
        r"^classes\.txt line 2: expected a class name, got nothing$",
    ),
    # COCO
    (
        "coco-bad-json",
        {**CSV_BASE, "d.json": '{"images": [,]}'},
        "d.json",
        r"^d\.json line 1: not valid JSON",
    ),
    (
        "coco-missing-key",
        {**CSV_BASE, "d.json": _coco(drop="annotations")},
        "d.json",
        r"^d\.json: expected a key 'annotations' \(a list\), it is missing$",
    ),
    (
        "coco-unknown-image",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(image_id=7))},
        "d.json",
        r"^d\.json annotations\[0\]\.image_id: 7 is not the id of any image in 'images'$",
    ),
    (
        "coco-unknown-category",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(category_id=9))},
        "d.json",
        r"^d\.json annotations\[0\]\.category_id: 9 is not the id of any category$",
    ),
    (
        "coco-bbox-shape",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(bbox=[1, 2, 3]))},
        "d.json",
        r"^d\.json annotations\[0\]\.bbox: expected \[x, y, width, height\] numbers, got \[1, 2, 3\]$",
    ),
    (
        "coco-bbox-text",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(bbox=[1, 2, "3", 4]))},
        "d.json",
        r"^d\.json annotations\[0\]\.bbox: expected \[x, y, width, height\] numbers",
    ),
    (
        "coco-bbox-empty",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(bbox=[1, 2, 0, 4]))},
        "d.json",
        r"^d\.json annotations\[0\]\.bbox: expected width > 0 and height > 0, got 0, 4$",
    ),
    (
        "coco-outside",
        {**CSV_BASE, "d.json": _coco(annotations=_ann(bbox=[50, 2, 30, 4]))},
        "d.json",
        r"^d\.json annotations\[0\]\.bbox: box \(50, 2, 80, 6\) lies outside the 64x48 image",
    ),
    (
        "coco-no-bbox",
        {**CSV_BASE, "d.json": _coco(annotations=[{"image_id": 1, "category_id": 1}])},
        "d.json",
        r"^d\.json annotations\[0\]: expected a key 'bbox', it is missing$",
    ),
    (
        "coco-missing-image",
        {**CSV_BASE, "d.json": _coco(images=[{"id": 1, "file_name": "zz.jpg"}])},
        "d.json",
        r"^d\.json images\[0\]: image 'zz\.jpg' not found \(looked in \./ and images/\)$",
    ),
    (
        "coco-size-mismatch",
        {**CSV_BASE, "d.json": _coco(images=[{"id": 1, "file_name": "a.jpg", "width": 48, "height": 64}])},
        "d.json",
        r"^d\.json images\[0\]: says the image is 48x64 but a\.jpg is 64x48",
    ),
    (
        "json-via",
        {**CSV_BASE, "d.json": json.dumps({"a.jpg99": {"filename": "a.jpg", "size": 99, "regions": []}})},
        "d.json",
        r"^d\.json: a VIA \(VGG Image Annotator\) JSON export, which is not read here; in VIA use "
        r"Annotation > Export Annotations \(COCO format\)",
    ),
    (
        "json-via-project",
        {
            **CSV_BASE,
            "d.json": json.dumps(
                {"_via_settings": {}, "_via_img_metadata": {"a.jpg99": {"filename": "a.jpg", "regions": []}}}
            ),
        },
        "d.json",
        r"^d\.json: a VIA \(VGG Image Annotator\) JSON export",
    ),
    (
        "json-label-studio-min",
        {**CSV_BASE, "d.json": json.dumps([{"image": "/data/upload/1/a.jpg", "id": 1, "annotation_id": 1}])},
        "d.json",
        r"^d\.json: a Label Studio JSON export, which is not read here; export the project as 'COCO', "
        r"'YOLO' or 'Pascal VOC XML' instead$",
    ),
    (
        "json-label-studio",
        {**CSV_BASE, "d.json": json.dumps([{"id": 1, "data": {"image": "a.jpg"}, "annotations": []}])},
        "d.json",
        r"^d\.json: a Label Studio JSON export",
    ),
    # CSV
    (
        "csv-not-number",
        {**CSV_BASE, "l.csv": "filename,x_min,y_min,x_max,y_max\na.jpg,1,1,5,5\na.jpg,1,1,abc,5\n"},
        "l.csv",
        r"^l\.csv line 3: x_max 'abc' is not a number$",
    ),
    (
        "csv-columns",
        {**CSV_BASE, "l.csv": "filename,x_min,y_min,x_max,y_max,label\na.jpg,1,1,5,5,s\na.jpg,1,1\n"},
        "l.csv",
        r"^l\.csv line 3: expected 6 columns \(as on the first line\), got 3$",
    ),
    (
        "csv-headerless-columns",
        {**CSV_BASE, "l.csv": "a.jpg,1,1,5\n"},
        "l.csv",
        r"^l\.csv line 1: expected a header or 5 or 6 columns "
        r"'filename,x_min,y_min,x_max,y_max\[,label\]', got 4$",
    ),
    (
        "csv-inverted",
        {**CSV_BASE, "l.csv": "filename,xmin,ymin,xmax,ymax\na.jpg,50,1,10,5\n"},
        "l.csv",
        r"^l\.csv line 2: expected xmin < xmax, got 50 >= 10$",
    ),
    (
        "csv-header-column",
        {**CSV_BASE, "l.csv": "filename,xmin,ymin,xmax,bottom\na.jpg,1,1,5,5\n"},
        "l.csv",
        r"^l\.csv line 1: header lacks a column for y_max \(expected one of y_max, ymax\)$",
    ),
    (
        "csv-header-columns",
        {**CSV_BASE, "l.csv": "filename,x,y,x_max,y_max\na.jpg,1,1,5,5\n"},
        "l.csv",
        r"^l\.csv line 1: header lacks columns for x_min, y_min \(expected x_min or xmin, y_min or ymin\)$",
    ),
    (
        "csv-header-xywh",
        {**CSV_BASE, "l.csv": "filename,class,xmin,ymin,width,height\na.jpg,s,1,1,4,4\n"},
        "l.csv",
        r"^l\.csv line 1: header lacks columns for x_max, y_max \(expected x_max or xmax, y_max or ymax\); "
        r"boxes are read as corners, and 'width', 'height' as the image's size: for a box as x, y, width, "
        r"height write x_max = x \+ width, y_max = y \+ height$",
    ),
    (
        "csv-via",
        {
            **CSV_BASE,
            "l.csv": "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,"
            'region_attributes\na.jpg,99,{},1,0,"{""name"":""rect"",""x"":1,""y"":1,""width"":4,""height"":4}",'
            '"{""label"":""s""}"\n',
        },
        "l.csv",
        r"^l\.csv line 1: a VIA \(VGG Image Annotator\) CSV export, which is not read here; in VIA use "
        r"Annotation > Export Annotations \(COCO format\) instead and pass that \.json$",
    ),
    (
        "csv-label-studio",
        {
            **CSV_BASE,
            "l.csv": "image,id,label,annotator,annotation_id,created_at,updated_at,lead_time\n"
            '/data/upload/1/a.jpg,1,"[{""x"": 1, ""y"": 1, ""width"": 4, ""height"": 4}]",1,1,,,5\n',
        },
        "l.csv",
        r"^l\.csv line 1: a Label Studio CSV export, which is not read here; export the project as 'COCO', "
        r"'YOLO' or 'Pascal VOC XML' instead$",
    ),
    (
        "csv-partial-box",
        {**CSV_BASE, "l.csv": "a.jpg,1,,5,5\n"},
        "l.csv",
        r"^l\.csv line 1: y_min empty; expected all four box fields, or none for a negative$",
    ),
    (
        "csv-negative-and-box",
        {**CSV_BASE, "l.csv": "a.jpg,1,1,5,5\na.jpg,,,,\n"},
        "l.csv",
        r"^l\.csv line 2: 'a\.jpg' has boxes \(l\.csv line 1\) and an empty, negative row",
    ),
    (
        "csv-outside",
        {**CSV_BASE, "l.csv": "a.jpg,1,1,5,50\n"},
        "l.csv",
        r"^l\.csv line 1: box \(1, 1, 5, 50\) lies outside the 64x48 image",
    ),
    (
        "csv-bad-width",
        {**CSV_BASE, "l.csv": "filename,width,height,xmin,ymin,xmax,ymax\na.jpg,-3,48,1,1,5,5\n"},
        "l.csv",
        r"^l\.csv line 2: width '-3' is not a positive integer$",
    ),
    (
        "csv-missing-image",
        {**CSV_BASE, "l.csv": "a.jpg,1,1,5,5\nzz.jpg,1,1,5,5\n"},
        "l.csv",
        r"^l\.csv line 2: image 'zz\.jpg' not found \(looked in \./ and images/\)$",
    ),
    # centre points
    (
        "centers-range",
        {**CENTERS_BASE, "labels.txt": "a.jpg 0.5 0.5\na.jpg 1.5 0.5\n"},
        ".",
        r"^labels\.txt line 2: centre x 1\.5 is outside 0\.\.1 \(normalised\)$",
    ),
    (
        "centers-fields",
        {**CENTERS_BASE, "labels.txt": "a.jpg 0.5\n"},
        ".",
        r"^labels\.txt line 1: expected 3 fields 'name x y', got 2$",
    ),
    (
        "centers-not-number",
        {**CENTERS_BASE, "labels.txt": "a.jpg 0.5 abc\n"},
        ".",
        r"^labels\.txt line 1: y 'abc' is not a number$",
    ),
    (
        "centers-extra-column",  # (the name may hold spaces, but not end in a number)
        {**CENTERS_BASE, "labels.txt": "a.jpg 0.5 0.5 1.0\n"},
        ".",
        r"^labels\.txt line 1: expected 3 fields 'name x y', got 4$",
    ),
    (
        "csv-quote-left-open",  # (its rows were read as one label running over the lines)
        {
            **CSV_BASE,
            "images/b.jpg": IMG,
            "l.csv": 'a.jpg,1,1,9,9,stamp\nb.jpg,1,1,9,9,"stamp\na.jpg,2,2,8,8,x\n',
        },
        "l.csv",
        r"^l\.csv line 2: a field runs on over several lines \(lines 2-3\); a quote \" left open\?",
    ),
    (
        "csv-quote-left-open-large",  # (csv's field size limit: a traceback before)
        {**CSV_BASE, "l.csv": 'a.jpg,1,1,9,9,"stamp\n' + "a.jpg,2,2,8,8,x\n" * 9000},
        "l.csv",
        r"^l\.csv line 1: not valid CSV \(field larger than field limit",
    ),
    (
        "coco-too-deep",  # (a RecursionError before)
        {**CSV_BASE, "a.json": "[" * 100000 + "]" * 100000},
        "a.json",
        r"^a\.json: JSON nested too deeply to be a COCO file$",
    ),
    (
        "centers-missing-image",
        {**CENTERS_BASE, "labels.txt": "\nzz.jpg 0.5 0.5\n"},
        ".",
        r"^labels\.txt line 2: image 'zz\.jpg' not found \(looked in \./ and images/\)$",
    ),
    # detection
    (
        "detect-several",
        {**CENTERS_BASE, "labels.txt": "a.jpg 0.5 0.5\n", "x.csv": "", "y.json": '{"images": []}'},
        ".",
        r"holds several label files \(labels\.txt, x\.csv, y\.json\); pass the one to load$",
    ),
    (
        "detect-nothing",
        {**CENTERS_BASE, "notes.txt": "hello"},
        ".",
        r"no labels found; expected images/ \+ labels/",
    ),
    ("detect-file-type", {**CENTERS_BASE}, "a.jpg", r"a\.jpg: expected a folder, or a \.json \(COCO\)"),
]


@pytest.mark.parametrize(
    ("files", "target", "match"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_input_names_file_place_and_expectation(tmp_path, files, target, match):
    _build(tmp_path, files)
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(tmp_path / target)
    assert "\n" not in str(info.value)


def test_unreadable_image_is_named(tmp_path):
    _build(tmp_path, {"a.jpg": "not a jpeg", "labels.txt": "a.jpg 0.5 0.5\n"})
    with pytest.raises(DatasetError, match=r"a\.jpg: not a readable image"):
        load_dataset(tmp_path)


# -- writer -> loader round trips ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(0)
    classes = ("stamp",) if fmt == "centers" else ("round", "square")
    other = classes[-1]
    items = {
        "two": (
            80,
            60,
            [ObjectLabel(classes[0], (3.4, 5.6, 20.2, 30.7)), ObjectLabel(other, (30, 10, 79.6, 59))],
        ),
        "one": (50, 70, [ObjectLabel(other, (0.0, 0.0, 50.0, 70.0))]),
        "none": (40, 30, []),
    }
    out = tmp_path / "out"
    with DatasetWriter(out, fmt, classes) as writer:
        for name, (w, h, objects) in items.items():
            writer.add(name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8), objects)
    ds = load_dataset(out)
    assert ds.format == fmt and set(ds.labels) == set(classes)
    recs = _by_name(ds)
    if fmt == "centers":
        assert writer.skipped_negatives == 1 and set(recs) == {"two.jpg", "one.jpg"}
    else:
        assert set(recs) == {"two.jpg", "one.jpg", "none.jpg"} and recs["none.jpg"].is_negative
    for name, (w, h, objects) in items.items():
        if not objects and fmt == "centers":
            continue
        rec = recs[f"{name}.jpg"]
        assert (rec.width, rec.height) == (w, h) and rec.image_path.is_file()
        assert read_image(rec.image_path).shape == (h, w, 3)
        assert [o.label for o in rec.objects] == [o.label for o in objects]
        for got, want in zip(rec.objects, objects, strict=True):
            if fmt == "centers":
                cx, cy = (want.box[0] + want.box[2]) / 2 / w, (want.box[1] + want.box[3]) / 2 / h
                assert got.center == pytest.approx((cx, cy), abs=1e-5)
            else:
                assert got.box == pytest.approx(want.box, abs=1.0)
        want_primary = max(objects, key=lambda o: o.area).label if objects else None
        assert (rec.primary().label if rec.objects else None) == want_primary


def test_writer_refuses_misuse_and_leaves_no_index_after_an_error(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="holds one class"):
        DatasetWriter(tmp_path / "c", "centers", ["a", "b"])
    with pytest.raises(ValueError, match="format 'tfrecord' is unknown"):
        DatasetWriter(tmp_path / "t", "tfrecord", ["a"])
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "w", "coco", ["a"]) as writer:
        writer.add("x", img, [ObjectLabel("a", (1, 1, 5, 5))])
        with pytest.raises(ValueError, match="label 'b' is not one of"):
            writer.add("y", img, [ObjectLabel("b", (1, 1, 5, 5))])
        with pytest.raises(ValueError, match="was already added"):
            writer.add("x", img, [])
        with pytest.raises(ValueError, match="without folder or image extension"):
            writer.add("z.jpg", img, [])
        with pytest.raises(ValueError, match="needs a box"):
            writer.add("z", img, [ObjectLabel("a", center=(0.5, 0.5))])
        with pytest.raises(DatasetError, match="lies outside the 30x20 image"):
            writer.add("z", img, [ObjectLabel("a", (1, 1, 50, 5))])
        raise RuntimeError("generator crashed")
    assert not (tmp_path / "w" / "annotations.json").exists()
    with pytest.raises(FileExistsError, match="not an empty folder"):
        DatasetWriter(tmp_path / "w", "coco", ["a"])


def test_writer_grey_image_and_thin_box_survive_whole_pixel_formats(tmp_path):
    with DatasetWriter(tmp_path / "v", "voc", ["a"]) as writer:
        writer.add("g", np.full((20, 30), 200, np.uint8), [ObjectLabel("a", (10.2, 4.0, 10.4, 9.0))])
    rec = load_dataset(tmp_path / "v").records[0]
    assert rec.objects[0].box == (10.0, 4.0, 11.0, 9.0)


# -- subsets, detection, images ---------------------------------------------------------------------


def test_subset_keeps_listed_images_and_names_a_missing_one(tmp_path):
    _build(
        tmp_path,
        {"a.jpg": IMG, "b.jpg": IMG, "c.jpg": IMG, "labels.txt": "a.jpg .1 .1\nb.jpg .2 .2\nc.jpg 0 0\n"},
    )
    (tmp_path / "train.txt").write_text("# training split\nc.jpg\n\n  a.jpg  \n")
    assert read_subset(tmp_path / "train.txt") == ["c.jpg", "a.jpg"]
    ds = load_dataset(tmp_path, subset=tmp_path / "train.txt")
    assert [r.name for r in ds.records] == ["a.jpg", "c.jpg"]
    (tmp_path / "bad.txt").write_text("a.jpg\nq.jpg\nr.jpg\n")
    with pytest.raises(
        DatasetError, match=r"^bad\.txt line 2: image 'q\.jpg' is not in the data set at .* \(and 1 more\)$"
    ):
        load_dataset(tmp_path, subset=str(tmp_path / "bad.txt"))
    assert parse_subset("x.jpg\r\n# c\n\ny.jpg") == ["x.jpg", "y.jpg"]
    (tmp_path / "imagesets.txt").write_text("a\nb\n")  # VOC ImageSets/Main lists names without extension
    assert [r.name for r in load_dataset(tmp_path, subset=tmp_path / "imagesets.txt").records] == [
        "a.jpg",
        "b.jpg",
    ]
    (tmp_path / "empty.txt").write_text("# nothing listed yet\n\n")
    with pytest.raises(
        DatasetError, match=r"empty\.txt: lists no images \(expected one image name a line\)$"
    ):
        load_dataset(tmp_path, subset=tmp_path / "empty.txt")


def test_subset_entries_with_a_folder_keep_same_named_images_apart(tmp_path, monkeypatch):
    _build(
        tmp_path,
        {
            "images/train/x.jpg": IMG,
            "images/val/x.jpg": IMG,
            "images/train/y.jpg": IMG,
            "labels/train/x.txt": "0 0.5 0.5 0.2 0.2\n",
            "labels/val/x.txt": "0 0.5 0.5 0.2 0.2\n",
            "labels/train/y.txt": "",
            "classes.txt": "stamp\n",
        },
    )
    (tmp_path / "train.txt").write_text("images/train/x.jpg\ntrain/y.jpg\n")
    ds = load_dataset(tmp_path, subset=tmp_path / "train.txt")
    assert sorted(str(r.image_path.relative_to(tmp_path)) for r in ds.records) == [
        "images/train/x.jpg",
        "images/train/y.jpg",
    ]
    # a bare name of two images (train/x.jpg and val/x.jpg): which one is meant? It took both,
    # silently (a train list bringing a validation photo into training); refused now
    (tmp_path / "names.txt").write_text("y.jpg\nx.jpg\n")
    with pytest.raises(DatasetError, match=r"names\.txt line 2: 'x\.jpg' names 2 images of the data set "):
        load_dataset(tmp_path, subset=tmp_path / "names.txt")
    (tmp_path / "names.txt").write_text("y.jpg\n")  # a bare name of one image still matches it
    assert [r.name for r in load_dataset(tmp_path, subset=tmp_path / "names.txt").records] == ["y.jpg"]
    (tmp_path / "names.txt").write_text("Y.JPG\n")  # in another case too, as labels find images
    assert [r.name for r in load_dataset(tmp_path, subset=tmp_path / "names.txt").records] == ["y.jpg"]
    (tmp_path / "bad.txt").write_text("images/test/x.jpg\n")
    with pytest.raises(DatasetError, match=r"bad\.txt line 1: image 'images/test/x\.jpg' is not in the data"):
        load_dataset(tmp_path, subset=tmp_path / "bad.txt")
    # a path written on another machine (CVAT's data/obj_train_data/..., Windows) matches by its
    # file name where one image has it; x.jpg is in two folders, so such a path to it still fails
    (tmp_path / "cvat.txt").write_text("data/obj_train_data/y.jpg\nC:\\photos\\y.jpg\n")
    assert [r.name for r in load_dataset(tmp_path, subset=tmp_path / "cvat.txt").records] == ["y.jpg"]
    (tmp_path / "cvat.txt").write_text("data/obj_train_data/x.jpg\n")
    with pytest.raises(DatasetError, match=r"cvat\.txt line 1: image 'data/obj_train_data/x\.jpg' is not"):
        load_dataset(tmp_path, subset=tmp_path / "cvat.txt")
    # absolute entries match with --data given relative to the working folder too
    (tmp_path / "abs.txt").write_text(f"{tmp_path / 'images' / 'val' / 'x.jpg'}\n")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(Path("."), subset=tmp_path / "abs.txt")
    assert [r.image_path.absolute() for r in ds.records] == [tmp_path / "images" / "val" / "x.jpg"]


def test_detect_format_of_folders_and_files(tmp_path):
    _build(
        tmp_path,
        {
            "y/images/a.jpg": IMG,
            "y/labels/a.txt": "",
            "v/a.xml": "",
            "c/d.json": '{"images": []}',
            "t/labels.txt": "",
        },
    )
    assert detect_format(tmp_path / "y") == ("yolo", tmp_path / "y")
    assert detect_format(tmp_path / "v") == ("voc", tmp_path / "v")
    assert detect_format(tmp_path / "c") == ("coco", tmp_path / "c" / "d.json")
    assert detect_format(tmp_path / "t") == ("centers", tmp_path / "t" / "labels.txt")
    with pytest.raises(DatasetError, match="no such file or folder"):
        detect_format(tmp_path / "nope")


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", "exif-6.jpg", "exif-3.jpg"])
def test_image_size_from_header_matches_decoding(tmp_path, ext):
    path = tmp_path / f"img{ext}"
    img = np.zeros((21, 40, 3), np.uint8)
    _ok, buf = cv2.imencode("." + ext.rsplit(".", 1)[1], img)
    data = buf.tobytes()
    if ext.startswith("exif-"):
        data = _with_exif_orientation(data, int(ext[5]))
    path.write_bytes(data)
    decoded = read_image(path)
    assert image_size(path) == (decoded.shape[1], decoded.shape[0])
    if ext == "exif-6.jpg":
        assert image_size_from_header(data) == (21, 40)


def test_read_image_converts_grey_and_bgra_and_names_missing_files(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 6), 9, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((5, 6, 4), 9, np.uint8))
    for name in ("g.png", "a.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (5, 6, 3) and img.dtype == np.uint8
    with pytest.raises(DatasetError, match=r"missing\.jpg: image file not found"):
        read_image(tmp_path / "missing.jpg")


def test_16_bit_images_read_by_the_bit_depth_of_their_data(tmp_path):
    """A 10-, 12- or 14-bit camera's values stored in a 16-bit PNG or TIFF as they are (not in
    the top bits) read as bright as the scene was, not 4-64 times too dark; a full-range
    16-bit image reads as its top 8 bits, as OpenCV reads it."""
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    photo[0, 0] = 255  # the brightest value of each: its data's full scale
    for bits in (10, 12, 14, 16):
        raw = (photo.astype(np.uint32) * ((1 << bits) - 1) // 255).astype(np.uint16)
        for ext in (".png", ".tiff"):
            path = tmp_path / f"raw{bits}{ext}"
            assert cv2.imwrite(str(path), raw)
            img = read_image(path)
            assert img.dtype == np.uint8 and img.shape == photo.shape
            assert np.abs(img.astype(int) - photo).max() <= 1, (bits, ext)
        grey = tmp_path / f"grey{bits}.png"
        assert cv2.imwrite(str(grey), raw[..., 1])
        assert np.abs(read_image(grey)[..., 2].astype(int) - photo[..., 1]).max() <= 1
    dim = (photo // 2).astype(np.uint16) * 257  # a dim 16-bit photo, half its range: as OpenCV reads it
    cv2.imwrite(str(tmp_path / "dim16.png"), dim)
    assert np.array_equal(read_image(tmp_path / "dim16.png"), photo // 2)
    assert to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32)).tolist() == [[0, 127, 255]]


def test_images_cut_short_are_refused_and_whole_ones_with_trailing_data_are_not(tmp_path, capfd):
    """OpenCV decodes half a JPEG, greys out the rest and says only "Premature end of JPEG file"."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for ext in (".jpg", ".png"):
        whole = cv2.imencode(ext, photo)[1].tobytes()
        (tmp_path / f"whole{ext}").write_bytes(whole + b"\x00" * 100)  # padding some cameras append
        (tmp_path / f"half{ext}").write_bytes(whole[: len(whole) // 2])
        assert read_image(tmp_path / f"whole{ext}").shape == (120, 160, 3)
        kind = "JPEG (no end-of-image marker)" if ext == ".jpg" else "PNG (no IEND chunk)"
        with pytest.raises(
            DatasetError, match=rf"half\{ext}: truncated {re.escape(kind)} \(the file was cut"
        ):
            read_image(tmp_path / f"half{ext}")
    assert "Premature end" not in capfd.readouterr().err


def test_whole_images_with_data_after_them_are_read_and_cut_ones_are_not(tmp_path):
    """A phone's motion photo is a whole JPEG with a video after it (kilobytes and more); a JPEG's
    EXIF thumbnail carries an end-of-image marker of its own before the main image's scan."""
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 256, 50_000, dtype=np.uint8))
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    progressive = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    thumb = cv2.imencode(".jpg", photo[::8, ::8])[1].tobytes()
    payload = b"Exif\x00\x00" + thumb  # the thumbnail's bytes where EXIF keeps it (APP1)
    with_thumb = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
    png = cv2.imencode(".png", photo)[1].tobytes()
    for name, data in [
        ("motion.jpg", jpeg + video),
        ("progressive.jpg", progressive + video),
        ("thumb.jpg", with_thumb),
        ("png_then_data.png", png + video),
        ("stray_bytes.jpg", jpeg[:20] + b"\x00\x00" + jpeg[20:]),  # libjpeg: "2 extraneous bytes"
    ]:
        assert incomplete(data) is None, name
        (tmp_path / name).write_bytes(data)
        assert read_image(tmp_path / name).shape == (96, 128, 3)
    for name, data in [
        ("cut.jpg", jpeg[: len(jpeg) * 3 // 4]),
        ("cut_progressive.jpg", progressive[: len(progressive) * 3 // 4]),
        ("cut_with_thumb.jpg", with_thumb[: len(with_thumb) - 200]),  # the thumbnail's marker stays
        ("cut_in_headers.jpg", jpeg[:100]),
        ("cut.png", png[: len(png) - 5]),
    ]:
        assert incomplete(data), name
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=rf"{re.escape(name)}: truncated"):
            read_image(tmp_path / name)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        read_image(tmp_path / "empty.jpg")


def test_images_with_names_opencv_cannot_take_are_read_and_written(tmp_path):
    """OpenCV's path-taking calls crash the process on a file name that is not valid UTF-8 (a
    Latin-1 name from an old archive); images go through bytes, videos are refused by name."""
    name = os.fsdecode(b"caf\xe9.png")
    photo = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert write_image(tmp_path / name, photo)
    assert np.array_equal(read_image(tmp_path / name), photo)
    assert image_size(tmp_path / name) == (40, 30)
    problem = opencv_problem(tmp_path / os.fsdecode(b"v\xe9.mp4"))
    assert problem and problem.endswith(
        "v\\xe9.mp4: the file name is not valid UTF-8, which OpenCV cannot open; rename the file"
    )
    assert opencv_problem(tmp_path / "café.mp4") is None


# -- the shared real data sets ------------------------------------------------------------------------


def _shared() -> Path:
    for base in (
        Path("/work/shared/datasets"),
        Path(__file__).resolve().parents[1].parent / "shared" / "datasets",
    ):
        if base.is_dir():
            return base
    pytest.skip("shared data sets not present")


def test_raccoon_voc_and_csv_agree():
    root = _shared() / "raccoon"
    if not root.is_dir():
        pytest.skip("raccoon data set not present")
    voc, table = load_dataset(root), load_dataset(root / "raccoon_labels.csv")
    assert (voc.format, table.format) == ("voc", "csv")
    assert len(voc) == len(table) == 200 and voc.labels == table.labels == ("raccoon",)
    assert sum(len(r.objects) for r in voc.records) == 217 and voc.negatives == 0

    def key(ds):
        return {
            r.name: (r.image_path, r.width, r.height, sorted(o.box for o in r.objects)) for r in ds.records
        }

    assert key(voc) == key(table)
    assert len(load_dataset(root, subset=root / "test.txt")) == 40


def test_find_phone_centres():
    root = _shared() / "find_phone"
    if not root.is_dir():
        pytest.skip("find_phone data set not present")
    ds = load_dataset(root)
    assert ds.format == "centers" and len(ds) == 129
    assert all(len(r.objects) == 1 and r.objects[0].center is not None for r in ds.records)
    assert {(r.width, r.height) for r in ds.records} == {(490, 326)}
    assert len(load_dataset(root, subset=root / "train.txt")) == 103


def _png_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A PNG whose eXIf chunk (right after IHDR) carries an EXIF orientation."""
    import zlib

    png = cv2.imencode(".png", image)[1].tobytes()
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    end_of_ihdr = 8 + 8 + 13 + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


@pytest.mark.parametrize(("orientation", "rotated"), [(1, False), (6, True), (8, True), (3, False)])
def test_png_sizes_follow_their_exif_orientation_as_decoding_does(tmp_path, orientation, rotated):
    image = np.zeros((100, 200, 3), np.uint8)  # 200 wide, 100 high
    path = tmp_path / "a.png"
    path.write_bytes(_png_with_orientation(image, orientation))
    h, w = read_image(path).shape[:2]
    assert image_size(path) == (w, h) == ((100, 200) if rotated else (200, 100))


def test_a_size_that_is_wrong_is_named_before_a_box_outside_it(tmp_path):
    """Width and height swapped (a photo turned by its EXIF, a tool's mistake): the box fits the
    photo, but not the size written down; the size is what is wrong, and said so."""
    _build(
        tmp_path,
        {
            "a.jpg": (80, 50),
            "a.xml": _voc("a.jpg", [("stamp", 10, 5, 70, 40)], size=(50, 80)),
            "l.csv": "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,50,80,stamp,10,5,70,40\n",
        },
    )
    with pytest.raises(DatasetError, match=r"a\.xml <size>: says the image is 50x80 but a\.jpg is 80x50"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"says the image is 50x80 but a\.jpg is 80x50"):
        load_dataset(tmp_path / "l.csv")


def test_a_coco_size_of_0_is_unknown_as_in_voc(tmp_path):
    doc = json.loads(_coco_doc("a.jpg"))
    doc["images"][0].update(width=0, height=0)  # an exporter that did not know the size
    _build(tmp_path, {"a.jpg": (W, H), "c.json": json.dumps(doc)})
    (record,) = load_dataset(tmp_path / "c.json").records
    assert (record.width, record.height) == (W, H) and record.objects[0].box == (1, 2, 11, 12)
    doc["images"][0].update(width=-5)
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"images\[0\]\.width: width -5 is not a positive integer"):
        load_dataset(tmp_path / "c.json")


def test_labels_made_on_a_phone_photo_as_stored_are_named_and_unconfirmable_turns_are_said(tmp_path, caplog):
    """A phone stores its photo sideways with an EXIF tag to turn it; Stampline reads it turned,
    as shown. Labels from a tool that ignored the tag (older LabelImg) state the stored size: the
    error says so and how to mend it. Labels that state no size (YOLO), or a turn that keeps the
    size (180 degrees), cannot show which way they were made: said once, naming a photo."""
    stored = np.zeros((30, 80, 3), np.uint8)  # 80 wide as stored; shown 30 wide, 80 high
    jpeg = cv2.imencode(".jpg", stored)[1].tobytes()
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "p.jpg").write_bytes(_with_exif_orientation(jpeg, 6))
    (voc / "p.xml").write_text(_voc("p.jpg", [("stamp", 10, 5, 40, 25)], size=(80, 30)))
    with pytest.raises(DatasetError) as err:
        load_dataset(voc)
    said = str(err.value)
    assert "p.xml <size>: says the image is 80x30, the size of p.jpg as stored" in said
    assert "EXIF orientation tag (6: turned 90 degrees)" in said and "exiftool -Orientation=1 -n" in said
    (voc / "p.xml").write_text(_voc("p.jpg", [("stamp", 5, 10, 25, 40)], size=(30, 80)))
    with caplog.at_level("WARNING"):
        assert len(load_dataset(voc)) == 1  # the size confirms the turn: nothing to say
    assert "EXIF" not in caplog.text
    square = tmp_path / "square"  # a square photo's size confirms nothing
    square.mkdir()
    (square / "q.jpg").write_bytes(
        _with_exif_orientation(cv2.imencode(".jpg", stored[:, :30])[1].tobytes(), 6)
    )
    (square / "q.xml").write_text(_voc("q.jpg", [("stamp", 5, 10, 25, 20)], size=(30, 30)))
    with caplog.at_level("WARNING"):
        assert load_dataset(square).records[0].turn_unchecked == 6
    assert "1 of 1 labelled photos carry an EXIF orientation tag" in caplog.text

    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    (yolo / "classes.txt").write_text("stamp\n")
    for name, orientation in (("a", 3), ("b", 1), ("c", 8)):
        (yolo / "images" / f"{name}.jpg").write_bytes(_with_exif_orientation(jpeg, orientation))
        (yolo / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    caplog.clear()
    with caplog.at_level("WARNING"):
        ds = load_dataset(yolo)
    assert len(ds) == 3
    turned = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(turned) == 1, caplog.text
    assert "2 of 3 labelled photos" in turned[0] and "a.jpg: turned 180 degrees" in turned[0]


def test_boxes_drawn_on_smaller_copies_of_the_photos_are_said(tmp_path, caplog):
    """Labels exported for resized copies (a quarter of the size): where the labels state the
    copy's size the error says it is the same shape, smaller; where they state none (a CSV of
    boxes alone) every box keeps to the top-left of its photo, which is said once for the set."""
    rows = ["filename,xmin,ymin,xmax,ymax"]
    for i in range(10):
        _image(tmp_path / f"p{i}.jpg", 400, 300)
        rows.append(f"p{i}.jpg,{10 + i},{12 + i},{60 + i},{70 + i}")  # drawn on a 100x75 copy
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level("WARNING"):
        assert len(load_dataset(tmp_path / "labels.csv")) == 10
    said = [r.getMessage() for r in caplog.records if "top-left" in r.getMessage()]
    assert len(said) == 1 and "its 10 labelled photos" in said[0] and "smaller copies" in said[0]
    # boxes that reach across the photos: nothing to say
    (tmp_path / "labels.csv").write_text(
        rows[0]
        + "\n"
        + "\n".join(f"p{i}.jpg,{30 * i},{20 * i},{30 * i + 90},{20 * i + 80}" for i in range(10))
        + "\n"
    )
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_dataset(tmp_path / "labels.csv")
    assert "top-left" not in caplog.text
    voc = tmp_path / "voc"
    _image(voc / "p0.jpg", 400, 300)
    (voc / "p0.xml").write_text(_voc("p0.jpg", [("stamp", 10, 12, 60, 70)], size=(100, 75)))
    shape = r"the same shape 4 times larger: the boxes were drawn on a resized copy"
    with pytest.raises(DatasetError, match=r"says the image is 100x75 but p0\.jpg is 400x300 .*" + shape):
        load_dataset(voc)
    (voc / "p0.xml").write_text(_voc("p0.jpg", [("stamp", 10, 12, 60, 70)], size=(800, 600)))
    with pytest.raises(DatasetError, match=r"the same shape 2 times smaller: the boxes were drawn"):
        load_dataset(voc)


def test_an_iphone_photo_among_the_jpegs_is_named_with_what_to_do_wherever_it_is_met(tmp_path, caplog):
    """A .heic (an iPhone's photo format, which OpenCV does not read) beside the JPEGs was skipped
    in silence by a folder of photos (one product fewer), and a YOLO label for it said "no image
    for these labels" though the photo is there."""
    from edge.sources import ImageFolder, SourceError

    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    photos = tmp_path / "photos"
    _image(photos / "a.jpg")
    (photos / "b.heic").write_bytes(heic)
    folder = ImageFolder(photos)
    with caplog.at_level("WARNING"):
        folder.open()
    assert [p.name for p in folder.files] == ["a.jpg"]
    assert (
        "1 photo(s) skipped (b.heic): an iPhone's HEIC photo; not read here: convert it to JPEG"
        in caplog.text
    )
    only = tmp_path / "only"
    only.mkdir()
    (only / "c.HEIC").write_bytes(heic)
    with pytest.raises(SourceError, match=r"no image files .*1 photo\(s\) skipped \(c\.HEIC\)"):
        ImageFolder(only).open()

    yolo = tmp_path / "yolo"
    _image(yolo / "images" / "a.jpg")
    (yolo / "images" / "b.heic").write_bytes(heic)
    _build(
        yolo,
        {
            "classes.txt": "stamp\n",
            "labels/a.txt": "0 0.5 0.5 0.2 0.2\n",
            "labels/b.txt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    with pytest.raises(
        DatasetError, match=r"labels/b\.txt: its image images/b\.heic is an iPhone's HEIC photo; not read"
    ):
        load_dataset(yolo)
    voc = tmp_path / "voc"
    (voc / "b.heic").parent.mkdir()
    (voc / "b.heic").write_bytes(heic)
    (voc / "b.xml").write_text(_voc("b.heic", [("stamp", 1, 1, 5, 5)]))
    with pytest.raises(DatasetError, match=r"b\.heic: an iPhone's HEIC photo; not read here"):
        read_image(voc / "b.heic")
