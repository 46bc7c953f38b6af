"""Labelled photos in the formats a station engineer may already have, loaded into one typed form.

``load_dataset(path)`` detects the format from the path and returns a :class:`Dataset` of
:class:`Record` values (an image path, its objects, its size). :class:`DatasetWriter` writes the
same formats, in a layout the loader accepts. Parsing is pure (text in, values out: ``parse_*``,
``format_*``); file reading and writing stay in ``load_dataset``, ``read_image`` and the writer.

Formats and layouts (``path`` may be the folder or, for the last three, the label file itself)

``voc``      Pascal VOC: ``annotations/*.xml`` (or ``Annotations/``) with images in ``images/``
             (or ``JPEGImages/``), or ``.xml`` files beside the images. The image is ``<filename>``
             in the images folder, else the xml's stem with a common image extension.
``yolo``     ``images/``, ``labels/`` (the same relative paths, ``.txt``) and ``classes.txt`` (in the
             folder or in ``labels/``) or ``data.yaml`` (``names:`` as a list or an id -> name map).
             Lines ``class x_center y_center width height``, normalised. Exports split in the two
             usual ways load one split at a time: ``train/`` (``images/`` + ``labels/``, with
             ``data.yaml`` one level up, as Roboflow writes them) or ``images/train`` (with
             ``labels/train`` and ``data.yaml`` beside ``images/``, as Ultralytics does). Labels may
             also lie beside the images: with ``classes.txt`` in that folder (LabelImg), or in
             ``obj_train_data/`` with ``obj.names`` beside it (CVAT's YOLO 1.1 export; the export
             folder or ``obj_train_data/`` may be given).
``coco``     a ``.json`` file: ``images``, ``annotations`` (``bbox`` = x, y, w, h pixels), ``categories``;
             images relative to the json's folder, else in ``images/`` beside it. A json in an
             ``annotations/`` folder (CVAT's COCO export: ``annotations/instances_default.json``) also
             finds them in ``images/default/`` (``images/<subset>/`` for ``instances_<subset>.json``)
             or ``images/`` beside that folder, which may be given in place of the json.
``csv``      a ``.csv`` file with a header naming ``filename`` and ``x_min``/``xmin`` .. ``y_max``/``ymax``
             (optional ``label``/``class``, ``width``, ``height``), or headerless rows
             ``filename,x_min,y_min,x_max,y_max[,label]``. Several rows per image are several objects.
             Separated by ``,``, ``;`` or tabs (sniffed; with ``;`` or tabs a decimal comma is read).
             Images relative to the csv's folder, else in ``images/`` beside it.
``centers``  a ``labels.txt`` with lines ``name x y`` (normalised centre); images beside it (or in
             ``images/``). Objects are named by the first line of an optional ``classes.txt`` beside
             it, else ``"stamp"`` (``edge.contract.DEFAULT_LABELS[0]``).

A folder is detected in this order: ``images/`` + ``labels/`` (or labels beside images, as above)
-> YOLO; ``.xml`` files in ``annotations/`` or in the folder -> VOC; else exactly one ``labels.txt``,
``.csv`` or ``.json`` in it (or ``.json`` in its ``annotations/``).
The root of an export made of split folders (``train/``, ``valid/``, ``test/``, as Roboflow writes
every format; also ``train2017``, ``validation``), a YOLO ``images/`` of several kinds (train beside
val or test: ``train1/`` and ``train2/`` are two batches of one set), and a VOC set whose
``ImageSets/Main`` lists several (``train.txt``, ``val.txt``) are refused with the splits named:
pass one of them (for VOC, its list with ``--subset``). Subfolders linked in from elsewhere are
read as the set's own. The CSV and JSON exports of VIA
and Label Studio (their own forms, not COCO) and CVAT's "CVAT for images" XML are recognised and
refused, naming the export to use.

Choices

- Negatives are images whose labels say "nothing here": a VOC file without ``<object>``, an empty
  YOLO label file, a COCO image without annotations, a CSV row with empty box fields. An image
  that no label file mentions is *not* a negative (it may simply not be labelled yet): in VOC and
  YOLO folders, and beside a COCO, CSV or centres file given by its folder (Roboflow's CSV has no
  row for a photo without the stamp), it is skipped, listed in ``Dataset.unlabelled`` and counted
  in a logged warning.
- Boxes are pixels ``x_min, y_min, x_max, y_max`` as the files state them (VOC's 1-based
  convention is not shifted, so VOC and CSV exports of one set agree). A box may overhang the image
  by up to ``BOX_TOLERANCE_PX`` or ``BOX_TOLERANCE_SHARE`` of its side, whichever is more, and is
  then clipped; further out, or inverted, is an error.
- A size the labels declare (VOC ``<size>``, COCO ``width``/``height``, CSV ``width``/``height``)
  must match the image as ``read_image`` decodes it (EXIF orientation applied); otherwise the
  size comes from the image header. A stated size that is the photo's as stored, before a
  turning EXIF tag, is refused as labels made by a tool that ignored the tag; photos whose tag
  turns or mirrors them and whose labels state no size that confirms the turn are read turned,
  with one warning per set. A stated size of the same shape but another scale is refused as
  labels drawn on resized copies; where no size is stated, a set of 8 or more boxed photos whose
  every box keeps to the top-left 55 % of its photo is warned about (the same mistake).
- ``Record.primary()`` is the largest box by area (ties: the first); for centre labels the first.
- ``Dataset.labels`` are the class names that at least one object uses, in first-seen order (YOLO,
  COCO: in the order of their class list), taken from the whole set before ``subset`` filtering, so
  the subsets of one set share one list. A listed class no object uses (Roboflow's project category
  in COCO, LabelImg's predefined classes) is left out, in a logged warning; YOLO class ids still
  index the full list. Splits exported as separate folders or files are separate sets: a split
  where no object is a ``kit`` has no ``kit`` label.
- Records are in label-file order (COCO, CSV, centres) or sorted by path (VOC, YOLO).
- VOC ``difficult``/``truncated`` are not interpreted; COCO ``iscrowd`` annotations (a box over
  many objects) are left out, with a logged warning, and an image with nothing else is left out
  too (something is there: no negative). Two COCO categories may share a name only where objects
  use at most one of them (Roboflow's project category 0 beside its one class).
- The centres format cannot hold negatives: the writer skips them and counts them
  (``DatasetWriter.skipped_negatives``, logged at close).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import logging
import math
import os
import re
import struct
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from edge.contract import DEFAULT_LABELS
from edge.files import write_whole

__all__ = [
    "BOX_TOLERANCE_PX",
    "BOX_TOLERANCE_SHARE",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "ImageLabels",
    "ObjectLabel",
    "Record",
    "decode_image",
    "detect_format",
    "format_centers",
    "format_coco",
    "format_csv",
    "format_voc",
    "format_yolo_labels",
    "image_files",
    "image_size",
    "image_size_from_header",
    "incomplete",
    "load_dataset",
    "normalised_box",
    "normalised_center",
    "parse_centers",
    "parse_classes_txt",
    "parse_coco",
    "parse_csv",
    "parse_subset",
    "parse_voc",
    "parse_yaml_names",
    "parse_yolo_labels",
    "read_image",
    "read_image_bytes",
    "read_subset",
    "to_uint8",
    "unread_photos",
    "unread_photos_line",
    "write_image",
]

_log = logging.getLogger(__name__)

FORMATS = ("voc", "yolo", "coco", "csv", "centers")
#: the label files of each format (what ``Dataset.files`` protects in a data set's folder)
LABEL_SUFFIXES = {
    "voc": (".xml",),
    "yolo": (".txt", ".yaml", ".yml"),
    "coco": (".json",),
    "csv": (".csv",),
    "centers": (".txt",),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: photo formats cameras and phones write that are not read here (OpenCV reads none of them, or
#: not in every build): named where they are met, with what to convert them to (an iPhone's
#: .heic among the JPEGs is common)
UNREAD_PHOTOS = {
    ".heic": "an iPhone's HEIC photo",
    ".heif": "a HEIF photo",
    ".avif": "an AVIF picture",
    ".jxl": "a JPEG XL picture",
    ".dng": "a camera's raw photo",
    ".cr2": "a camera's raw photo",
    ".cr3": "a camera's raw photo",
    ".nef": "a camera's raw photo",
    ".arw": "a camera's raw photo",
}
UNREAD_PHOTO_HINT = "not read here: convert it to JPEG or PNG"


def walk(folder: Path, pattern: str = "*") -> Iterator[Path]:
    """The entries of ``folder`` and of its subfolders matching ``pattern``, as ``Path.rglob``
    gives them, but through linked subfolders too (a batch of photos linked in from elsewhere;
    Python before 3.13 passes them over in silence), each real folder once (a link to a folder
    above is no loop)."""
    seen: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        here = Path(top)
        for name in (*dirs, *files):
            entry = here / name
            if entry.match(pattern):
                yield entry


def unread_photos(folder: Path | str, recursive: bool = False) -> list[Path]:
    """The photos of a folder in formats OpenCV does not read (:data:`UNREAD_PHOTOS`), sorted."""
    folder = Path(folder)
    found = walk(folder) if recursive else folder.iterdir()
    return sorted(
        p for p in found if p.suffix.lower() in UNREAD_PHOTOS and p.is_file() and not hidden_file(p)
    )


def unread_photos_line(photos: Sequence[Path]) -> str:
    """What to say of photos skipped for their format: how many, which, what they are, what to do."""
    shown = ", ".join(p.name for p in photos[:5]) + (", ..." if len(photos) > 5 else "")
    kinds = sorted({UNREAD_PHOTOS[p.suffix.lower()] for p in photos})
    return f"{len(photos)} photo(s) skipped ({shown}): {' / '.join(kinds)}; {UNREAD_PHOTO_HINT}"


#: how far a box may overhang the image before it is an error (it is clipped to the image): this
#: many pixels, or this share of the image's side if more (a box dragged a little past the edge in
#: a labelling tool, on a large photo)
BOX_TOLERANCE_PX = 1.0
BOX_TOLERANCE_SHARE = 0.02
DEFAULT_LABEL = DEFAULT_LABELS[0]
JPEG_QUALITY = 95

_BOX_FIELDS = ("x_min", "y_min", "x_max", "y_max")


class DatasetError(ValueError):
    """A label or image file is not what the loader expects; the message names file, place, expectation."""


# -- typed values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectLabel:
    """One labelled object: a class name and a pixel box and/or a normalised centre."""

    label: str
    box: tuple[float, float, float, float] | None = None
    center: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"ObjectLabel.label: expected a non-empty class name, got {self.label!r}")
        if self.box is None and self.center is None:
            raise ValueError("ObjectLabel: expected a box or a center, got neither")
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"ObjectLabel.box: expected 4 finite numbers, got {self.box!r}")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(
                    f"ObjectLabel.box: expected x_min < x_max and y_min < y_max, got {self.box!r}"
                )
            object.__setattr__(self, "box", box)
        if self.center is not None:
            center = tuple(float(v) for v in self.center)
            if len(center) != 2 or not all(0.0 <= v <= 1.0 for v in center):
                raise ValueError(f"ObjectLabel.center: expected 2 numbers in [0, 1], got {self.center!r}")
            object.__setattr__(self, "center", center)

    @property
    def area(self) -> float:
        """Box area in square pixels (0 for a centre-only label)."""
        if self.box is None:
            return 0.0
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class Record:
    """One labelled image. ``objects == ()`` is a negative (no stamp in view)."""

    image_path: Path
    objects: tuple[ObjectLabel, ...] = ()
    width: int | None = None
    height: int | None = None
    #: the photo's EXIF orientation where it turns or mirrors the photo and the labels state no
    #: size that confirms they were made on the turned photo (0: none, or confirmed)
    turn_unchecked: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "objects", tuple(self.objects))
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value <= 0):
                raise ValueError(f"Record.{name}: expected a positive integer, got {value!r}")

    @property
    def name(self) -> str:
        return self.image_path.name

    @property
    def is_negative(self) -> bool:
        return not self.objects

    def primary(self) -> ObjectLabel | None:
        """*The* stamp: the largest box by area (ties: the first); centre labels: the first."""
        if not self.objects:
            return None
        boxed = [o for o in self.objects if o.box is not None]
        if not boxed:
            return self.objects[0]
        return max(boxed, key=lambda o: o.area)  # max keeps the first of equal keys

    def normalised_box(self) -> tuple[float, float, float, float] | None:
        """The primary object's box normalised to the image, or None (negative, or centre only)."""
        obj = self.primary()
        if obj is None or obj.box is None:
            return None
        return normalised_box(obj, *self._size())

    def normalised_center(self) -> tuple[float, float] | None:
        """The primary object's centre normalised to the image, or None for a negative."""
        obj = self.primary()
        if obj is None:
            return None
        if obj.center is not None:
            return obj.center
        return normalised_center(obj, *self._size())

    def _size(self) -> tuple[int, int]:
        if self.width is None or self.height is None:
            raise ValueError(f"Record {self.image_path}: image size unknown, cannot normalise its box")
        return self.width, self.height


@dataclass(frozen=True)
class Dataset:
    """A loaded data set. ``root`` is its folder, ``source`` the folder or label file loaded."""

    root: Path
    format: str
    records: tuple[Record, ...]
    labels: tuple[str, ...]
    source: Path | None = None
    #: images found in a VOC/YOLO folder with no label file (or beside a label file given by its
    #: folder, not in it); skipped, not negatives
    unlabelled: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"Dataset.format: expected one of {FORMATS}, got {self.format!r}")
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "unlabelled", tuple(self.unlabelled))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def negatives(self) -> int:
        return sum(1 for r in self.records if r.is_negative)

    def only(self, labels: Sequence[str]) -> tuple[Dataset, int]:
        """This set with the objects of ``labels`` alone (a barcode or product box beside the stamp
        left out: the largest box, another class's, was taken for the stamp), and how many images
        that left with no object (negatives now)."""
        kept = tuple(label for label in self.labels if label in labels)
        records = tuple(
            dataclasses.replace(r, objects=tuple(o for o in r.objects if o.label in kept))
            for r in self.records
        )
        turned = sum(
            1 for old, new in zip(self.records, records, strict=True) if old.objects and not new.objects
        )
        return dataclasses.replace(self, records=records, labels=kept), turned

    def folders(self) -> list[Path]:
        """Where a file added would be read as part of it next time: its folder, when it was
        loaded from one (a VOC set given by its annotations/ folder: the set's folder). A set
        loaded from its label file reads the images that file names, and nothing else."""
        return [self.root] if self.source is None or self.source.is_dir() else []

    def files(self) -> list[Path]:
        """The files it was read from: its images, and its label files (the label file it was
        loaded from, or those of its format in its folder), which a command must not write over."""
        out = [r.image_path for r in self.records] + list(self.unlabelled)
        if self.source is not None and self.source.is_file():
            return [*out, self.source]
        suffixes = LABEL_SUFFIXES[self.format]
        return out + [p for p in walk(self.root) if p.suffix.lower() in suffixes and p.is_file()]


@dataclass(frozen=True)
class ImageLabels:
    """One image's labels as a label file states them, before the image is looked up on disk."""

    name: str  # the image as the labels name it ("" when the label file is named after the image)
    objects: tuple[ObjectLabel, ...] = ()
    width: int | None = None
    height: int | None = None
    where: str = ""  # where the labels were read ("labels.csv line 7"), for messages about the image
    places: tuple[str, ...] = ()  # where each object was read
    #: listed, but nothing to learn from: neither objects nor a negative (COCO crowds alone)
    left_out: bool = False


def normalised_box(obj: ObjectLabel, width: int, height: int) -> tuple[float, float, float, float]:
    """A pixel box -> ``x_min, y_min, x_max, y_max`` in [0, 1] of a ``width`` x ``height`` image."""
    if obj.box is None:
        raise ValueError(f"normalised_box: object {obj.label!r} has no box (centre label)")
    x0, y0, x1, y1 = obj.box
    return (
        min(max(x0 / width, 0.0), 1.0),
        min(max(y0 / height, 0.0), 1.0),
        min(max(x1 / width, 0.0), 1.0),
        min(max(y1 / height, 0.0), 1.0),
    )


def normalised_center(obj: ObjectLabel, width: int, height: int) -> tuple[float, float]:
    """The object's centre in [0, 1]: its centre label, else its box centre."""
    if obj.center is not None:
        return obj.center
    x0, y0, x1, y1 = normalised_box(obj, width, height)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


# -- checks shared by the parsers ---------------------------------------------------------------


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(text: str | None, where: str, name: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise DatasetError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {name} {text!r} is not a finite number")
    return value


def _positive_int(text: str | int | float | None, where: str, name: str) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value.is_integer() and value > 0):
        raise DatasetError(f"{where}: {name} {text!r} is not a positive integer")
    return int(value)


def _check_order(box: Sequence[float], where: str, names: Sequence[str] = _BOX_FIELDS) -> None:
    x0, y0, x1, y1 = box
    if not x0 < x1:
        raise DatasetError(f"{where}: expected {names[0]} < {names[2]}, got {_fmt(x0)} >= {_fmt(x1)}")
    if not y0 < y1:
        raise DatasetError(f"{where}: expected {names[1]} < {names[3]}, got {_fmt(y0)} >= {_fmt(y1)}")


def _check_bounds(
    box: Sequence[float], where: str, width: int, height: int
) -> tuple[float, float, float, float]:
    """The box clipped to the image; DatasetError if it lies further out than the tolerance."""
    x0, y0, x1, y1 = (float(v) for v in box)
    tx = max(BOX_TOLERANCE_PX, BOX_TOLERANCE_SHARE * width)
    ty = max(BOX_TOLERANCE_PX, BOX_TOLERANCE_SHARE * height)
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        raise DatasetError(
            f"{where}: box ({_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)}) lies outside the "
            f"{width}x{height} image (expected 0 <= x <= {width}, 0 <= y <= {height})"
        )
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise DatasetError(
            f"{where}: box ({_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)}) has no area inside the "
            f"{width}x{height} image"
        )
    return clipped


def _label_name(text: str | None, where: str) -> str:
    name = (text or "").strip()
    if not name:
        raise DatasetError(f"{where}: expected a class name, got nothing")
    return name


# -- Pascal VOC -------------------------------------------------------------------------------------


def parse_voc(data: str | bytes, source: str) -> ImageLabels:
    """One Pascal VOC annotation (XML text) -> its image's labels. ``source`` names it in errors."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DatasetError(f"{source}: not valid XML ({exc})") from None
    if root.tag == "annotations" and root.find("image") is not None:
        raise DatasetError(
            f"{source}: a CVAT for images XML export, which is not read here; export the task as "
            "'COCO 1.0', 'YOLO 1.1' or 'PASCAL VOC 1.1' instead"
        )
    if root.tag != "annotation":
        raise DatasetError(f"{source} <{root.tag}>: expected the root element <annotation>")
    filename = (root.findtext("filename") or "").strip()
    width = height = None
    size = root.find("size")
    if size is not None:
        w_text, h_text = size.findtext("width"), size.findtext("height")
        # labelling tools write 0 or leave the size out when they do not know it
        if w_text and h_text and w_text.strip() not in ("0", "") and h_text.strip() not in ("0", ""):
            width = _positive_int(w_text, f"{source} <size>", "width")
            height = _positive_int(h_text, f"{source} <size>", "height")
    elements = root.findall("object")
    objects: list[ObjectLabel] = []
    places: list[str] = []
    for i, obj in enumerate(elements, 1):
        place = f"{source} <object> {i}" if len(elements) > 1 else source
        label = _label_name(obj.findtext("name"), f"{place} <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{place} <object>: expected a <bndbox> with xmin, ymin, xmax, ymax")
        where = f"{place} <bndbox>"
        values = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(key)
            if text is None:
                raise DatasetError(f"{where}: expected <{key}>, it is missing")
            values.append(_number(text, where, key))
        _check_order(values, where, ("xmin", "ymin", "xmax", "ymax"))
        # bounds: checked against the image itself (_to_record), after <size> is, so a wrong
        # <size> is named as such and not as a box outside it
        objects.append(ObjectLabel(label, box=tuple(values)))
        places.append(where)
    return ImageLabels(filename, tuple(objects), width, height, f"{source} <filename>", tuple(places))


def format_voc(filename: str, width: int, height: int, objects: Sequence[ObjectLabel]) -> str:
    """A Pascal VOC annotation (XML text); box coordinates rounded to whole pixels."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "images"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        if obj.box is None:
            raise ValueError(f"VOC needs boxes; object {obj.label!r} has only a centre")
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = obj.label
        ET.SubElement(element, "pose").text = "Unspecified"
        ET.SubElement(element, "truncated").text = "0"
        ET.SubElement(element, "difficult").text = "0"
        bndbox = ET.SubElement(element, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), _whole_pixels(obj.box), strict=True):
            ET.SubElement(bndbox, key).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _whole_pixels(box: Sequence[float]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(v) for v in box)
    # rounding must not collapse a thin box into an invalid one
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


# -- YOLO ---------------------------------------------------------------------------------------------


def parse_classes_txt(text: str, source: str) -> tuple[str, ...]:
    """``classes.txt``: one class name a line (class id = line index); trailing blank lines ignored."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for n, line in enumerate(lines, 1):
        names.append(_label_name(line, f"{source} line {n}"))
    if not names:
        raise DatasetError(f"{source}: expected one class name a line, the file is empty")
    _check_unique(names, source)
    return tuple(names)


def _check_unique(names: Sequence[str], source: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"{source}: class name {name!r} appears twice; expected unique names")
        seen.add(name)


def _strip_yaml_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _split_flow(text: str) -> list[str]:
    parts, quote, start = [], None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _yaml_scalar(text: str, where: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        value = text[1:-1].replace("''", "'")
    elif len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            value = text[1:-1]
    else:
        value = text
    return _label_name(value, where)


class _YamlFormUnknown(Exception):
    pass


def parse_yaml_names(text: str, source: str) -> tuple[str, ...]:
    """Class names from a YOLO ``data.yaml``: ``names: [a, b]``, ``names: {0: a, 1: b}``, or the
    same as a block (indented ``0: a`` lines, or ``- a`` lines, indented or not, as ``yaml.dump``
    writes them). Other YAML needs PyYAML."""
    try:
        names = _parse_yaml_names(text, source)
    except _YamlFormUnknown as exc:
        try:
            import yaml  # optional: only for YAML beyond the standard forms above
        except ImportError:
            raise DatasetError(
                f"{source} line {exc.args[0]}: this form of 'names:' is not understood without PyYAML; "
                "write it as 'names: [a, b]' or install PyYAML (`pip install pyyaml`)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise DatasetError(f"{source}: not valid YAML ({err})".replace("\n", " ")) from None
        raw = data.get("names") if isinstance(data, dict) else None
        if isinstance(raw, dict):
            names = _names_from_map({str(k): str(v) for k, v in raw.items()}, f"{source} names")
        elif isinstance(raw, list):
            names = [_label_name(str(v), f"{source} names") for v in raw]
        else:
            raise DatasetError(f"{source} names: expected a list or an id -> name map") from None
    if not names:
        raise DatasetError(f"{source} names: expected at least one class name, got none")
    _check_unique(names, f"{source} names")
    nc = re.search(r"^nc\s*:\s*(\d+)\s*(?:#.*)?$", text, re.MULTILINE)
    if nc and int(nc.group(1)) != len(names):
        raise DatasetError(f"{source} nc: says {nc.group(1)} classes but names lists {len(names)}")
    return tuple(names)


def _names_from_map(pairs: dict[str, str], where: str) -> list[str]:
    try:
        ids = {int(k): v for k, v in pairs.items()}
    except ValueError:
        raise DatasetError(f"{where}: expected integer class ids as keys, got {sorted(pairs)}") from None
    if sorted(ids) != list(range(len(ids))):
        raise DatasetError(f"{where}: expected class ids 0..{len(ids) - 1}, got {sorted(ids)}")
    return [ids[i] for i in range(len(ids))]


def _parse_yaml_names(text: str, source: str) -> list[str]:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"names\s*:", line)), None)
    if start is None:
        raise DatasetError(f"{source}: expected a top-level 'names:' key listing the class names")
    where = f"{source} line {start + 1}"
    rest = _strip_yaml_comment(lines[start].split(":", 1)[1]).strip()
    if rest:
        if rest[0] not in "[{":
            raise _YamlFormUnknown(start + 1)
        closing = "]" if rest[0] == "[" else "}"
        end = start
        while not rest.endswith(closing) and end + 1 < len(lines):
            end += 1
            rest += " " + _strip_yaml_comment(lines[end]).strip()
        if not rest.endswith(closing):
            raise DatasetError(f"{where}: expected the names to end with {closing!r}")
        items = _split_flow(rest[1:-1])
        if closing == "]":
            return [_yaml_scalar(item, where) for item in items]
        pairs = {}
        for item in items:
            if ":" not in item:
                raise DatasetError(f"{where}: expected 'id: name' pairs, got {item!r}")
            key, value = item.split(":", 1)
            pairs[key.strip()] = _yaml_scalar(value, where)
        return _names_from_map(pairs, where)
    items_list: list[str] = []
    pairs = {}
    for n in range(start + 1, len(lines)):
        raw = _strip_yaml_comment(lines[n])
        if not raw.strip():
            continue
        # yaml.dump writes a list under a key at the key's own indent ("names:\n- a"), as YAML allows
        if not raw[0].isspace() and not re.match(r"-(\s|$)", raw):
            break
        entry = raw.strip()
        line_where = f"{source} line {n + 1}"
        if entry.startswith("- ") or entry == "-":
            items_list.append(_yaml_scalar(entry[1:], line_where))
        elif re.match(r"-?\d+\s*:", entry):
            key, value = entry.split(":", 1)
            pairs[key.strip()] = _yaml_scalar(value, line_where)
        else:
            raise _YamlFormUnknown(n + 1)
    if items_list and pairs:
        raise DatasetError(f"{where}: expected either '- name' lines or 'id: name' lines, got both")
    return items_list or _names_from_map(pairs, where)


def parse_yolo_labels(
    text: str, source: str, classes: Sequence[str], width: int, height: int, pose: bool = False
) -> ImageLabels:
    """A YOLO label file (``class x_center y_center width height`` a line, normalised) -> pixel boxes
    in a ``width`` x ``height`` image. An empty file is a negative. A segmentation or oriented-box
    line (``class x1 y1 x2 y2 x3 y3 ...``, normalised points, as Ultralytics and Roboflow export
    them) is the box around its points. A pose line (``pose``: its ``data.yaml`` has a
    ``kpt_shape``) is a box followed by keypoints: the box is taken, the keypoints left."""
    objects, places = [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source} line {n}"
        if pose and len(fields) > 5:
            fields = fields[:5]
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise DatasetError(
                f"{where}: expected 5 values 'class x_center y_center width height' (or a class and "
                f"three or more x y points), got {len(fields)}"
            )
        class_id = _number(fields[0], where, "class id")
        if not class_id.is_integer() or not 0 <= class_id < len(classes):
            raise DatasetError(
                f"{where}: class id {fields[0]!r} is out of range (expected 0..{len(classes) - 1}, "
                f"{len(classes)} classes)"
            )
        if len(fields) == 5:
            cx, cy, w, h = (
                _number(v, where, k)
                for v, k in zip(fields[1:], ("x_center", "y_center", "width", "height"), strict=True)
            )
        else:  # a polygon's points: the box around them
            xs = [_number(v, where, "x") for v in fields[1::2]]
            ys = [_number(v, where, "y") for v in fields[2::2]]
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            w, h = max(xs) - min(xs), max(ys) - min(ys)
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: expected width > 0 and height > 0, got {_fmt(w)}, {_fmt(h)}")
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        box = _check_bounds(box, where, width, height)
        objects.append(ObjectLabel(classes[int(class_id)], box=box))
        places.append(where)
    return ImageLabels("", tuple(objects), width, height, source, tuple(places))


def format_yolo_labels(
    objects: Sequence[ObjectLabel], classes: Sequence[str], width: int, height: int
) -> str:
    """YOLO label lines for pixel boxes in a ``width`` x ``height`` image ("" for a negative)."""
    index = {name: i for i, name in enumerate(classes)}
    lines = []
    for obj in objects:
        x0, y0, x1, y1 = normalised_box(obj, width, height)
        lines.append(
            f"{index[obj.label]} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"
        )
    return "".join(line + "\n" for line in lines)


# -- COCO -----------------------------------------------------------------------------------------


def _coco_list(data: dict, key: str, source: str) -> list:
    if key not in data:
        raise DatasetError(f"{source}: expected a key {key!r} (a list), it is missing")
    value = data[key]
    if not isinstance(value, list):
        raise DatasetError(f"{source} {key}: expected a list, got {type(value).__name__}")
    return value


def _coco_field(item: object, key: str, where: str, types: tuple[type, ...]) -> object:
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise DatasetError(f"{where}: expected a key {key!r}, it is missing")
    value = item[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in types)
        raise DatasetError(f"{where}.{key}: expected {names}, got {value!r}")
    return value


def parse_coco(data: str | bytes, source: str) -> tuple[tuple[str, ...], list[ImageLabels]]:
    """A COCO detection json -> (category names in list order, one ImageLabels per image, in order)."""
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{source} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{source}: not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise DatasetError(f"{source}: JSON nested too deeply to be a COCO file") from None
    if foreign := _foreign_json(doc):
        raise DatasetError(f"{source}: {foreign}")
    if not isinstance(doc, dict):
        raise DatasetError(f"{source}: expected a JSON object with images, annotations, categories")
    images, annotations = _coco_list(doc, "images", source), _coco_list(doc, "annotations", source)
    categories = _coco_list(doc, "categories", source)
    names: dict[object, str] = {}
    for i, cat in enumerate(categories):
        where = f"{source} categories[{i}]"
        cat_id = _coco_field(cat, "id", where, (int, str))
        if cat_id in names:
            raise DatasetError(f"{where}.id: {cat_id!r} is used twice; expected unique ids")
        names[cat_id] = _label_name(str(_coco_field(cat, "name", where, (str,))), f"{where}.name")
    entries: dict[object, dict] = {}
    used: set[object] = set()  # the categories some object is of
    for i, image in enumerate(images):
        where = f"{source} images[{i}]"
        image_id = _coco_field(image, "id", where, (int, str))
        if image_id in entries:
            raise DatasetError(f"{where}.id: {image_id!r} is used twice; expected unique ids")
        file_name = str(_coco_field(image, "file_name", where, (str,))).strip()
        if not file_name:
            raise DatasetError(f"{where}.file_name: expected an image file name, got ''")
        size: list[int | None] = [None, None]
        for k, key in enumerate(("width", "height")):
            if image.get(key) not in (None, 0, "0", ""):  # 0: not known to the exporter, as in VOC
                size[k] = _positive_int(image[key], f"{where}.{key}", key)
        entries[image_id] = {
            "name": file_name,
            "size": size,
            "where": where,
            "objects": [],
            "places": [],
            "crowd": 0,
        }
    for i, ann in enumerate(annotations):
        where = f"{source} annotations[{i}]"
        image_id = _coco_field(ann, "image_id", where, (int, str))
        if image_id not in entries:
            raise DatasetError(f"{where}.image_id: {image_id!r} is not the id of any image in 'images'")
        cat_id = _coco_field(ann, "category_id", where, (int, str))
        if cat_id not in names:
            raise DatasetError(f"{where}.category_id: {cat_id!r} is not the id of any category")
        if ann.get("iscrowd") in (1, True, "1"):  # a crowd region (many objects, one box): no object
            entries[image_id]["crowd"] += 1
            continue
        bbox = _coco_field(ann, "bbox", where, (list,))
        if len(bbox) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
        ):
            raise DatasetError(f"{where}.bbox: expected [x, y, width, height] numbers, got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}.bbox: expected width > 0 and height > 0, got {_fmt(w)}, {_fmt(h)}")
        entry = entries[image_id]
        box: tuple[float, ...] = (x, y, x + w, y + h)  # bounds: checked against the image (_to_record)
        entry["objects"].append(ObjectLabel(names[cat_id], box=box))
        entry["places"].append(f"{where}.bbox")
        used.add(cat_id)
    # two categories of one name: an error where objects use both (which is meant?); Roboflow's
    # project category 0, which no object uses, may share its name with the one class
    _check_unique([name for cat_id, name in names.items() if cat_id in used], f"{source} categories")
    _say_crowds(list(entries.values()), source)
    labels = [
        ImageLabels(
            e["name"],
            tuple(e["objects"]),
            e["size"][0],
            e["size"][1],
            e["where"],
            tuple(e["places"]),
            left_out=bool(e["crowd"] and not e["objects"]),  # something is there, but no one object
        )
        for e in entries.values()
    ]
    _check_pixel_boxes(labels, source)
    return tuple(dict.fromkeys(names.values())), labels


def _say_crowds(entries: Sequence[dict], source: str) -> None:
    """Crowd annotations (``iscrowd`` 1) are left out, and an image with nothing else with them:
    it is neither a negative (something is there) nor one object's box (a tool may write a mask
    so, as CVAT does one drawn with its brush: export such shapes as polygons or boxes)."""
    crowd = sum(e["crowd"] for e in entries)
    if not crowd:
        return
    only = [e for e in entries if e["crowd"] and not e["objects"]]
    _log.warning(
        "%s: %d crowd annotation(s) (iscrowd 1) left out: a crowd box is no one object%s",
        source,
        crowd,
        f"; {len(only)} image(s) with nothing else left out too (not negatives), e.g. {only[0]['name']}: "
        "if they are masks of single objects, export them as polygons or boxes"
        if only
        else "",
    )


def format_coco(images: Sequence[tuple[str, int, int, Sequence[ObjectLabel]]], classes: Sequence[str]) -> str:
    """A COCO detection json for ``(file_name, width, height, objects)`` entries; ids count from 1."""
    category = {name: i for i, name in enumerate(classes, 1)}
    doc: dict[str, list] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in category.items()],
    }
    for image_id, (file_name, width, height, objects) in enumerate(images, 1):
        doc["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            if obj.box is None:
                raise ValueError(f"COCO needs boxes; object {obj.label!r} has only a centre")
            x0, y0, x1, y1 = (round(v, 2) for v in obj.box)
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category[obj.label],
                    "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                }
            )
    return json.dumps(doc, indent=1) + "\n"


# -- CSV ------------------------------------------------------------------------------------------

_CSV_COLUMNS = {
    "filename": ("filename", "file_name", "image", "image_name", "image_path"),
    "x_min": ("x_min", "xmin"),
    "y_min": ("y_min", "ymin"),
    "x_max": ("x_max", "xmax"),
    "y_max": ("y_max", "ymax"),
    "label": (
        "label",
        "class",
        "class_name",
        "classname",
        "category",
        "category_name",
        "label_name",
        "labels",
        "name",
    ),
    "width": ("width",),
    "height": ("height",),
}
_CSV_HEADERLESS = ("filename", *_BOX_FIELDS, "label")


_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")


def _csv_delimiter(text: str) -> str:
    """The CSV's delimiter: ``,``, or ``;`` or a tab (Excel's "CSV" in locales with a decimal comma,
    and its "Text (Tab delimited)"), as ``csv.Sniffer`` finds it in the first lines; else ``,``."""
    sample = "\n".join(text.splitlines()[:20])
    sniffer = csv.Sniffer()
    # where ';' (or a tab) splits every line as evenly as ',' does, the commas are decimal commas
    sniffer.preferred = [";", "\t", ","]
    try:
        return sniffer.sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _check_csv_header(columns: dict[str, int], where: str) -> None:
    missing = [key for key in ("filename", *_BOX_FIELDS) if key not in columns]
    if not missing:
        return
    if len(missing) == 1:
        aliases = _CSV_COLUMNS[missing[0]]
        raise DatasetError(
            f"{where}: header lacks a column for {missing[0]} (expected one of {', '.join(aliases)})"
        )
    expected = ", ".join(" or ".join(_CSV_COLUMNS[key]) for key in missing)
    hint = ""
    if "width" in columns and "height" in columns and set(missing) == {"x_max", "y_max"}:
        hint = (
            "; boxes are read as corners, and 'width', 'height' as the image's size: for a box as "
            "x, y, width, height write x_max = x + width, y_max = y + height"
        )
    raise DatasetError(f"{where}: header lacks columns for {', '.join(missing)} (expected {expected}){hint}")


#: Exports of labelling tools that hold boxes in their own form: the export to use instead
_USE_INSTEAD_LS = "export the project as 'COCO', 'YOLO' or 'Pascal VOC XML' instead"
_USE_INSTEAD_VIA = "in VIA use Annotation > Export Annotations (COCO format) instead and pass that .json"


def _foreign_csv(cells: Sequence[str]) -> str | None:
    """What is wrong with a CSV header that a labelling tool's own CSV export writes, or None."""
    if "region_shape_attributes" in cells:
        return f"a VIA (VGG Image Annotator) CSV export, which is not read here; {_USE_INSTEAD_VIA}"
    if "annotation_id" in cells or "annotator" in cells:
        return f"a Label Studio CSV export, which is not read here; {_USE_INSTEAD_LS}"
    return None


def _foreign_json(doc: object) -> str | None:
    """What is wrong with a json that a labelling tool's own json export writes, or None."""
    if isinstance(doc, dict) and "images" not in doc:
        entries = doc.get("_via_img_metadata", doc)
        if isinstance(entries, dict) and any(
            isinstance(v, dict) and "regions" in v and "filename" in v for v in entries.values()
        ):
            return f"a VIA (VGG Image Annotator) JSON export, which is not read here; {_USE_INSTEAD_VIA}"
    if isinstance(doc, list) and any(
        isinstance(item, dict)
        and ({"annotations", "data"} <= item.keys() or {"annotation_id", "annotator"} & item.keys())
        for item in doc
    ):
        return f"a Label Studio JSON export, which is not read here; {_USE_INSTEAD_LS}"
    return None


def _looks_like_a_header(row: Sequence[str]) -> bool:
    """A first row with no number among its cells: column names, not a labelled image."""

    def is_number(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    cells = [c.strip() for c in row if c.strip()]
    return len(cells) >= 2 and not any(is_number(c) for c in cells)


#: how far past 1.0 a normalised coordinate may have been rounded (and still be taken for one)
FRACTION_SLACK = 0.05


def _check_pixel_boxes(entries: Sequence[ImageLabels], source: str) -> None:
    """Boxes are in pixels: a file whose boxes mostly lie within the first pixel holds boxes
    normalised to 0..1, which read as pixels would train and score corner specks (mostly: a
    fraction rounded up to 1.0004 here and there is still a fraction)."""
    boxes = [
        (obj.box, place)
        for e in entries
        for obj, place in zip(e.objects, e.places, strict=True)
        if obj.box is not None
    ]
    specks = [(box, place) for box, place in boxes if max(box) <= 1.0 + FRACTION_SLACK]
    if boxes and len(specks) * 2 > len(boxes):
        every = (
            f"every box of {source} lies"
            if len(specks) == len(boxes)
            else f"{len(specks)} of the {len(boxes)} boxes of {source} lie"
        )
        raise DatasetError(
            f"{specks[0][1]}: {every} within the first pixel (largest coordinate "
            f"{_fmt(max(max(box) for box, _ in specks))}); expected pixel coordinates, not fractions "
            "of the image (multiply by its width and height)"
        )


def parse_csv(text: str, source: str) -> list[ImageLabels]:
    """Box labels as CSV -> one ImageLabels per image, in first-row order.

    With a header: columns ``filename``, ``x_min``/``xmin`` .. ``y_max``/``ymax`` and optional
    ``label``/``class``, ``width``, ``height``, in any order. Without: ``filename,x_min,y_min,x_max,
    y_max[,label]``. A row with all four box fields empty is a negative.
    """
    delimiter = _csv_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns: dict[str, int] | None = None
    names: dict[str, str] = {}
    n_cols = 0
    images: dict[str, dict] = {}
    unlabelled = labelled = None  # the first box row without a label, and with one
    start = 1  # the line the next row begins on
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # (a quote left open that runs on past the field size limit)
            raise DatasetError(
                f'{source} line {start}: not valid CSV ({exc}; a quote " left open?)'
            ) from None
        n, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        where = f"{source} line {n}"
        if any("\n" in cell or "\r" in cell for cell in row):
            raise DatasetError(
                f'{where}: a field runs on over several lines (lines {n}-{reader.line_num}); a quote " '
                "left open? expected one row a line"
            )
        if columns is None:
            cells = [cell.strip().lower() for cell in row]
            if foreign := _foreign_csv(cells):
                raise DatasetError(f"{where}: {foreign}")
            if any(cell in _CSV_COLUMNS["filename"] for cell in cells):
                columns = {}
                for key, aliases in _CSV_COLUMNS.items():
                    found = [i for i, cell in enumerate(cells) if cell in aliases]
                    if len(found) > 1:
                        raise DatasetError(f"{where}: header names {key} twice ({', '.join(aliases)})")
                    if found:
                        columns[key] = found[0]
                        names[key] = row[found[0]].strip()
                _check_csv_header(columns, where)
                unread = [row[i].strip() for i in range(len(row)) if i not in columns.values() and cells[i]]
                if "label" not in columns and unread:  # a class column under a name not known here
                    _log.warning(
                        "%s: no label column (one of %s), so every box is labelled %r; column(s) %s not read",
                        where,
                        ", ".join(_CSV_COLUMNS["label"]),
                        DEFAULT_LABEL,
                        ", ".join(repr(u) for u in unread),
                    )
                n_cols = len(row)
                continue
            if _looks_like_a_header(row):
                raise DatasetError(
                    f"{where}: a header without a file name column (expected one of "
                    f"{', '.join(_CSV_COLUMNS['filename'])}), or no header and 'filename,x_min,y_min,"
                    "x_max,y_max[,label]' rows"
                )
            if len(row) not in (5, 6):
                raise DatasetError(
                    f"{where}: expected a header or 5 or 6 columns 'filename,x_min,y_min,x_max,y_max"
                    f"[,label]', got {len(row)}"
                )
            n_cols = len(row)
            columns = {key: i for i, key in enumerate(_CSV_HEADERLESS[:n_cols])}
            names = {key: key for key in columns}
        if len(row) != n_cols:
            raise DatasetError(f"{where}: expected {n_cols} columns (as on the first line), got {len(row)}")
        cell = {key: row[i].strip() for key, i in columns.items()}
        if delimiter != ",":  # a locale that separates with ';' writes decimals with a comma: 12,5
            for key in (*_BOX_FIELDS, "width", "height"):
                if _DECIMAL_COMMA.match(cell.get(key, "")):
                    cell[key] = cell[key].replace(",", ".")
        filename = cell["filename"]
        if not filename:
            raise DatasetError(f"{where}: {names['filename']} is empty; expected an image file name")
        entry = images.setdefault(
            filename, {"size": [None, None], "objects": [], "places": [], "negative": None, "where": where}
        )
        for k, key in enumerate(("width", "height")):
            if cell.get(key) and not _is_zero(cell[key]):  # 0: not known to the exporter, as in VOC
                value = _positive_int(cell[key], where, names[key])
                if entry["size"][k] is not None and entry["size"][k] != value:
                    raise DatasetError(
                        f"{where}: {names[key]} {value} differs from {entry['size'][k]} on an earlier row "
                        f"for {filename!r}"
                    )
                entry["size"][k] = value
        raw = [cell[key] for key in _BOX_FIELDS]
        if not any(raw):
            entry["negative"] = entry["negative"] or where
        elif not all(raw):
            empty = [names[key] for key in _BOX_FIELDS if not cell[key]]
            raise DatasetError(
                f"{where}: {', '.join(empty)} empty; expected all four box fields, or none for a negative"
            )
        else:
            box = [_number(cell[key], where, names[key]) for key in _BOX_FIELDS]
            _check_order(box, where, [names[key] for key in _BOX_FIELDS])  # bounds: in _to_record
            label = cell.get("label")
            if "label" in columns and not label:
                unlabelled = unlabelled or where
            labelled = labelled or (where if label else None)
            if unlabelled and labelled:  # a box of no class among boxes of classes: which is it?
                raise DatasetError(
                    f"{unlabelled}: {names['label']} is empty, while {labelled} names one; expected a "
                    "label for every box (or for none)"
                )
            entry["objects"].append(ObjectLabel(label or DEFAULT_LABEL, box=tuple(box)))
            entry["places"].append(where)
        if entry["negative"] and entry["objects"]:
            raise DatasetError(
                f"{where}: {filename!r} has boxes ({entry['places'][0]}) and an empty, negative row "
                f"({entry['negative']}); expected one or the other"
            )
    entries = [
        ImageLabels(name, tuple(e["objects"]), e["size"][0], e["size"][1], e["where"], tuple(e["places"]))
        for name, e in images.items()
    ]
    _check_pixel_boxes(entries, source)
    return entries


def format_csv(rows: Sequence[tuple[str, Sequence[ObjectLabel]]]) -> str:
    """``filename,x_min,y_min,x_max,y_max,label`` rows (whole pixels); a negative is one empty-box row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_HEADERLESS)
    for filename, objects in rows:
        if not objects:
            writer.writerow([filename, "", "", "", "", ""])
        for obj in objects:
            if obj.box is None:
                raise ValueError(f"CSV needs boxes; object {obj.label!r} has only a centre")
            writer.writerow([filename, *_whole_pixels(obj.box), obj.label])
    return out.getvalue()


# -- centre points ------------------------------------------------------------------------------------


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_centers(text: str, source: str, label: str = DEFAULT_LABEL) -> list[ImageLabels]:
    """``name x y`` lines (normalised centre, origin top-left) -> one ImageLabels per image, in order.
    Several lines for one image are several objects. The numbers are the last two fields, so a
    name may hold spaces."""
    images: dict[str, tuple[list[ObjectLabel], list[str]]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.strip().rsplit(maxsplit=2)
        if not fields:
            continue
        where = f"{source} line {n}"
        words = fields[0].split()
        if len(fields) != 3 or (len(words) > 1 and _is_number(words[-1])):  # ("a.jpg 0.2 0.5 1.0")
            raise DatasetError(f"{where}: expected 3 fields 'name x y', got {len(line.split())}")
        x, y = _number(fields[1], where, "x"), _number(fields[2], where, "y")
        for name, value in (("x", x), ("y", y)):
            if not 0.0 <= value <= 1.0:
                raise DatasetError(f"{where}: centre {name} {_fmt(value)} is outside 0..1 (normalised)")
        objects, places = images.setdefault(fields[0], ([], []))
        objects.append(ObjectLabel(label, center=(x, y)))
        places.append(where)
    return [
        ImageLabels(name, tuple(objects), None, None, places[0], tuple(places))
        for name, (objects, places) in images.items()
    ]


def format_centers(rows: Sequence[tuple[str, Sequence[tuple[float, float]]]]) -> str:
    """``name x y`` lines, one per centre."""
    return "".join(f"{name} {x:.6f} {y:.6f}\n" for name, centers in rows for x, y in centers)


# -- subsets --------------------------------------------------------------------------------------


def _subset_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.append((n, entry))
    return out


def parse_subset(text: str) -> list[str]:
    """Image names, one a line; blank lines and ``#`` comments ignored."""
    return [entry for _, entry in _subset_lines(text)]


def read_subset(path: Path | str) -> list[str]:
    """The image names listed in a subset file (``train.txt``)."""
    return parse_subset(_read_text(Path(path), Path(path).name))


# -- images ---------------------------------------------------------------------------------------


def _exif_orientation(tiff: bytes) -> int:
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack_from(endian + "I", tiff, 4)[0]
        (count,) = struct.unpack_from(endian + "H", tiff, ifd)
        for k in range(count):
            tag, _type, _n, value = struct.unpack_from(endian + "HHIH", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112:
                return value
    except (KeyError, struct.error):
        pass
    return 1


def _jpeg_segments(data: bytes):
    """A JPEG's marker segments up to its first scan: ``(marker, offset, length)`` each, the start of
    scan last; stops early where ``data`` ends or is not a JPEG's segment structure."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:  # stray bytes between segments (libjpeg reads on past them): resync
            i = data.find(b"\xff", i)
            if i < 0:
                return
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        yield marker, i, length
        if marker == 0xDA:
            return
        i += 2 + length


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG, PNG or BMP from its first bytes, as ``read_image`` returns it
    (an EXIF orientation 5..8, in a JPEG or a PNG's eXIf chunk, swaps the two); None if not
    found in ``data``."""
    found = _header(data)
    if found is None:
        return None
    w, h, orientation = found
    return (h, w) if orientation in TURNED_SIDEWAYS else (w, h)


#: EXIF orientations that turn a photo by 90 degrees (and may mirror it): width and height swap
TURNED_SIDEWAYS = (5, 6, 7, 8)
#: what each EXIF orientation other than 1 does to the stored pixels, for messages
_ORIENTATION_SAYS = {
    2: "mirrored",
    3: "turned 180 degrees",
    4: "mirrored upside down",
    5: "turned 90 degrees and mirrored",
    6: "turned 90 degrees",
    7: "turned 90 degrees and mirrored",
    8: "turned 90 degrees",
}


def _header(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, EXIF orientation)`` of a JPEG, PNG or BMP as stored, before any turn
    (orientation 1 where there is none); None if not found in ``data``."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        # an eXIf chunk (before the image data) may ask for a rotation, which OpenCV applies
        i = 8
        while i + 8 <= len(data):
            (length,) = struct.unpack_from(">I", data, i)
            kind = data[i + 4 : i + 8]
            if kind == b"IDAT":
                return w, h, 1
            if kind == b"eXIf":
                if i + 8 + length > len(data):
                    return None
                return w, h, _exif_orientation(data[i + 8 : i + 8 + length])
            i += 12 + length
        return None  # the chunks before the image data go past what was read: decode instead
    if data[:2] == b"BM" and len(data) >= 26:
        (dib,) = struct.unpack_from("<I", data, 14)
        if dib == 12:
            return (*struct.unpack_from("<HH", data, 18), 1)
        w, h = struct.unpack_from("<ii", data, 18)
        return abs(w), abs(h), 1
    if data[:2] != b"\xff\xd8":
        return None
    orientation = 1
    for marker, i, length in _jpeg_segments(data):
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            orientation = _exif_orientation(data[i + 10 : i + 2 + length])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack_from(">HH", data, i + 5)
            return w, h, orientation
    return None  # a start of scan before any frame header, or the headers go past ``data``


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header when possible, else by decoding it."""
    w, h, _ = image_size_and_orientation(path)
    return w, h


def image_size_and_orientation(path: Path | str) -> tuple[int, int, int]:
    """``(width, height, EXIF orientation)`` of an image file: its size as ``read_image`` returns
    it (turned), from its header when possible, else by decoding it; the orientation of a JPEG or
    PNG (1 where it has none, and for other formats)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
            found = _header(head)
            if found is None and head[:2] == b"\xff\xd8":  # a large EXIF block before the frame header
                found = _header(head + fh.read())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    if found is not None and found[0] > 0 and found[1] > 0:
        w, h, orientation = (int(v) for v in found)
        return (h, w, orientation) if orientation in TURNED_SIDEWAYS else (w, h, orientation)
    h, w = read_image(path).shape[:2]
    return w, h, 1


def read_image_bytes(path: Path | str) -> bytes:
    """An image file's bytes; DatasetError naming the file when it is missing, unreadable, empty or
    cut short (see ``incomplete``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    if not data:
        raise DatasetError(f"{path}: empty file (0 bytes), not an image")
    cut = incomplete(data)
    if cut:
        raise DatasetError(f"{path}: {cut} (the file was cut short, e.g. by an interrupted copy)")
    return data


#: the bit depths a 16-bit image's data may have: a 10-, 12- or 14-bit sensor's values are often
#: stored in 16-bit PNGs and TIFFs as they are, not shifted to the top bits
DATA_BITS = (10, 12, 14, 16)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image of any depth as uint8 (the same shape). 16-bit by its data's bit depth: the
    smallest of ``DATA_BITS`` that holds its largest value, so a 12-bit camera's PNG (values up
    to 4095) is not read 16 times too dark, as OpenCV's 8-bit conversion (the top 8 of 16 bits)
    reads it; a 16-bit image whose brightest value is under a quarter of 65535 is brightened
    alike. Float: 0..1 scaled to 0..255 (larger values taken as 0..255), clipped."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        top = int(image.max()) if image.size else 0
        bits = next(b for b in DATA_BITS if top < 1 << b)
        return (image >> (bits - 8)).astype(np.uint8)
    scale = 255.0 if image.size and float(image.max()) <= 1.0 else 1.0
    return np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """An image file's bytes decoded by OpenCV (``IMREAD_COLOR``: BGR uint8, EXIF orientation
    applied; a 16-bit file read as :func:`to_uint8` reads it), None where it cannot. Decoding
    bytes, not a path: OpenCV crashes on a file name that is not valid UTF-8 (a Latin-1 name
    from an old archive), and reads some files from memory that it cannot from their path (a
    TIFF with an orientation tag)."""
    if flags == cv2.IMREAD_COLOR:
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        return None
    return None if image is None else to_uint8(image)


def read_image(path: Path | str) -> np.ndarray:
    """An image file as BGR uint8 HxWx3 (grey and BGRA converted, 16-bit as :func:`to_uint8`
    reads it); DatasetError naming the file."""
    image = decode_image(read_image_bytes(path))
    if image is None:
        kind = UNREAD_PHOTOS.get(Path(path).suffix.lower())
        if kind is not None:
            raise DatasetError(f"{path}: {kind}; {UNREAD_PHOTO_HINT}")
        raise DatasetError(f"{path}: not a readable image (OpenCV cannot decode it)")
    return image


def write_image(path: Path | str, image: np.ndarray, params: Sequence[int] = ()) -> bool:
    """``cv2.imwrite`` through bytes (see ``decode_image``): False where OpenCV cannot encode the
    image as the file's suffix asks; the file system's errors are raised (OSError)."""
    try:
        ok, buf = cv2.imencode(Path(path).suffix.lower() or ".png", image, list(params))
    except cv2.error:
        return False
    if ok:
        write_whole(path, buf.tobytes())  # whole or not at all; an OSError names the file
    return bool(ok)


def incomplete(data: bytes) -> str | None:
    """Why a JPEG or PNG file's bytes are incomplete: OpenCV decodes the part that is there, greys
    out the rest and only says "Premature end of JPEG file" on stderr. A JPEG is complete when an
    end-of-image marker follows its first scan, a PNG when its chunks reach IEND; what comes after
    (a phone's motion-photo video, padding) does not matter."""
    if data[:2] == b"\xff\xd8":
        scan = None
        for marker, i, length in _jpeg_segments(data):
            if marker == 0xDA:
                scan = i + 2 + length
        if scan is None or data.find(b"\xff\xd9", scan) < 0:
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while True:
            if i + 8 > len(data):
                return "truncated PNG (no IEND chunk)"
            (length,) = struct.unpack_from(">I", data, i)
            if data[i + 4 : i + 8] == b"IEND":
                return None
            i += 12 + length
    return None


# -- loading --------------------------------------------------------------------------------------


def _read_text(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{shown}: file not found") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        bad = exc.object[exc.start : exc.start + 1].hex()
        raise DatasetError(
            f"{shown} line {line}: not UTF-8 text (byte 0x{bad}); expected UTF-8 (a spreadsheet saves it "
            "with 'CSV UTF-8')"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{shown}: cannot read ({exc.strerror or exc})") from None


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def hidden_file(path: Path) -> bool:
    """A hidden file (``.DS_Store``, macOS's ``._x.jpg`` and ``._x.xml`` AppleDouble files):
    neither an image nor a label file."""
    return path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not hidden_file(path)


def image_files(folder: Path | str, recursive: bool = False) -> list[Path]:
    """The image files of a folder (and of its subfolders when ``recursive``), sorted; hidden ones
    (macOS's ``._x.png`` AppleDouble files, which are not images) left out."""
    folder = Path(folder)
    return sorted(p for p in (walk(folder) if recursive else folder.iterdir()) if _is_image(p))


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


#: the root element of an XML file that is plainly no label file (a camera's or a tool's
#: settings): its first element is named otherwise than VOC's <annotation> (or CVAT's
#: <annotations>, which loading names as the wrong format)
_XML_ROOT = re.compile(rb"<\s*([A-Za-z_][\w.:-]*)")


def _may_be_voc(path: Path) -> bool:
    """Whether an ``.xml`` file may be a VOC annotation: its root element is not plainly something
    else (``settings.xml`` beside the photos). Unreadable or malformed files may be: loading them
    says what is wrong."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True
    body = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", head, flags=re.DOTALL)
    root = _XML_ROOT.search(body.replace(b"\x00", b""))  # UTF-16 files too
    return root is None or root.group(1).split(b":")[-1].lower() in (b"annotation", b"annotations")


def _voc_files(folder: Path, every: bool = False) -> Iterator[Path]:
    """The ``.xml`` files of ``folder`` that may be VOC annotations, sorted: hidden ones left out,
    and unless ``every`` (an ``annotations/`` folder, where each is one, in subfolders too, as
    CVAT exports a task's folders) those :func:`_may_be_voc` rules out. Lazy, so a look for any
    reads one file."""
    for p in sorted(walk(folder, "*.xml") if every else folder.glob("*.xml")):
        if not hidden_file(p) and p.is_file() and (every or _may_be_voc(p)):
            yield p


def _voc_layout(root: Path) -> tuple[Path, Path] | None:
    """(annotations folder, images folder) of a VOC folder, or None."""
    ann = _first_dir(root, ("annotations", "Annotations"))
    if ann is not None and any(_voc_files(ann, every=True)):
        return ann, _first_dir(root, ("images", "JPEGImages")) or root
    if any(_voc_files(root)):
        return root, root
    return None


def detect_format(path: Path | str) -> tuple[str, Path]:
    """``(format, what to load)`` for a folder or label file; DatasetError saying what was looked for."""
    path = Path(path)
    if path.is_file() and path.name.lower() in _YOLO_CLASS_FILES:
        if _yolo_dirs(path.parent) is not None:
            return "yolo", path.parent  # a YOLO set's class list given for the set
        if path.parent.is_dir() and path.suffix.lower() in (".yaml", ".yml"):
            if splits := _export_splits(
                path.parent
            ):  # a Roboflow export's root data.yaml: train/, valid/, test/ beside it
                raise _pass_one_split(path.parent, splits)
    if path.is_dir() and path.name.lower() in ("images", "annotations"):
        # a VOC set's annotations/ or a YOLO (Roboflow) split's images/ given for the set
        if path.name.lower() == "images" and _yolo_dirs(path.parent) is not None:
            return "yolo", path.parent
        if path.name.lower() == "annotations" and any(_voc_files(path, every=True)):
            parent = _voc_layout(path.parent)
            if parent is not None and parent[0] == path:
                return "voc", path.parent
    if path.is_file():
        fmt = {".json": "coco", ".csv": "csv", ".txt": "centers"}.get(path.suffix.lower())
        if fmt is None:
            raise DatasetError(
                f"{path}: expected a folder, or a .json (COCO), .csv or .txt (centre points) label file"
            )
        return fmt, path
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")
    if _yolo_dirs(path) is not None:
        return "yolo", path
    subsets = _darknet_dirs(path)
    if len(subsets) > 1 and (path / "obj.names").is_file():
        raise _pass_one_split(path, [q.name for q in subsets])
    if _voc_layout(path) is not None:
        return "voc", path
    # a report, metrics or settings file written beside the labels (or the photos) is not one
    found = _label_files(path)
    candidates = [p for p in found if not _plainly_not_labels(p)]
    passed_over = [p for p in found if p not in candidates]
    if len(candidates) == 1:
        return detect_format(candidates[0])[0], candidates[0]
    if candidates:
        listed = ", ".join(_rel(p, path) for p in candidates)
        raise DatasetError(f"{path}: holds several label files ({listed}); pass the one to load")
    if splits := _export_splits(
        path
    ):  # an export's root folder (Roboflow: train/, valid/, test/, each a data set)
        raise _pass_one_split(path, splits)
    not_labels = (
        f" ({', '.join(_rel(p, path) for p in passed_over[:3])}: no images, annotations or box columns)"
        if passed_over
        else ""
    )
    raise DatasetError(
        f"{path}: no labels found{not_labels}; expected images/ + labels/ (YOLO), .xml files (VOC), "
        "or one labels.txt, .csv or .json file"
    )


def _export_splits(folder: Path) -> list[str]:
    """The split folders (``train/``, ``valid/``, ...) of an export's root that hold labels."""
    return [q.name for q in sorted(folder.iterdir()) if split_kind(q) is not None and _holds_labels(q)]


#: A YOLO set's class list files: given as --data, they stand for the set.
_YOLO_CLASS_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")

#: The split folders exports are made of (YOLO's, and Roboflow's in every format), also with a
#: year or number (COCO's train2017, val2017) or spelled out (training, validation)
SPLIT_NAME = re.compile(r"(train|training|val|valid|validation|test|testing|dev)([-_]?\d+)?", re.IGNORECASE)


def split_kind(folder: Path) -> str | None:
    """What a folder named as one split of a data set is for (``train``, ``val`` or ``test``:
    ``train``, ``valid``, ``val2017``, ``validation``, ...); None for any other folder."""
    word = SPLIT_NAME.fullmatch(folder.name)
    if word is None or not folder.is_dir():
        return None
    kind = word.group(1).lower()
    return {"training": "train", "valid": "val", "validation": "val", "dev": "val", "testing": "test"}.get(
        kind, kind
    )


def _splits(folders: Iterable[Path]) -> list[str]:
    """The split folders among ``folders`` where they are splits of more than one kind (train
    beside val or test; ``train1``, ``train2`` are two batches of one), else none."""
    kinds = {q.name: kind for q in folders if (kind := split_kind(q)) is not None}
    return sorted(kinds) if len(set(kinds.values())) > 1 else []


def _label_files(path: Path) -> list[Path]:
    """The files in a folder that may be its one label file (COCO, CSV, centres), and the COCO
    files in its ``annotations/`` (CVAT's COCO export: ``annotations/instances_default.json``)."""
    ann = _first_dir(path, ("annotations", "Annotations"))
    return sorted(
        [p for p in path.glob("labels.txt") if p.is_file()]
        + [p for p in path.glob("*.csv") if p.is_file()]
        + [p for p in path.glob("*.json") if p.is_file()]
    ) + sorted(p for p in (ann.glob("*.json") if ann else ()) if p.is_file() and not hidden_file(p))


def _plainly_not_labels(path: Path) -> bool:
    """A ``.json`` or ``.csv`` in a data set's folder that is plainly something else: a JSON object
    with neither ``images`` nor ``annotations`` (metrics, a report, a model's metadata), or a CSV
    whose header names no box column (edge-eval's per-image outcomes). Unreadable or malformed
    files are not ruled out here: loading them says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return False
        return (
            isinstance(doc, dict)
            and not {"images", "annotations"} & doc.keys()
            and _foreign_json(doc) is None
        )
    if path.suffix.lower() == ".csv":
        first = next((line for line in text.splitlines() if line.strip()), "")
        cells = [c.strip().lower() for c in next(csv.reader([first], delimiter=_csv_delimiter(text)), [])]
        boxes = {alias for key in _BOX_FIELDS for alias in _CSV_COLUMNS[key]}
        return _looks_like_a_header(cells) and _foreign_csv(cells) is None and not boxes & set(cells)
    return False


def _holds_labels(path: Path) -> bool:
    return path.is_dir() and (
        _yolo_dirs(path) is not None or _voc_layout(path) is not None or bool(_label_files(path))
    )


def _pass_one_split(folder: Path, splits: Sequence[str], more: str = "") -> DatasetError:
    """The error for a folder of several splits: training on all of them would test on training images."""
    example = folder / next((s for s in splits if "train" in s), splits[0])
    return DatasetError(
        f"{folder}: holds the splits {', '.join(splits)}; pass one of them (e.g. --data {example}){more}"
    )


def _yolo_dirs(path: Path) -> tuple[Path, Path, tuple[Path, ...]] | None:
    """A YOLO folder's (images, labels, folders that may hold data.yaml or obj.names): ``path``
    with ``images/`` + ``labels/`` (a split of a Roboflow export: data.yaml one level up), or
    ``path`` = ``images/<split>`` with ``labels/<split>`` beside it (Ultralytics), or labels beside
    the images: in ``path`` with a ``classes.txt`` (LabelImg), or in CVAT's ``obj_<subset>_data/``
    with ``obj.names`` beside it, given as the export folder or that folder; else None."""
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return path / "images", path / "labels", (path, path.parent)
    root = path.parent.parent
    if path.parent.name == "images" and (root / "labels" / path.name).is_dir():
        return path, root / "labels" / path.name, (root,)
    subsets = _darknet_dirs(path)
    if len(subsets) == 1 and (path / "obj.names").is_file():
        return subsets[0], subsets[0], (path,)
    darknet = path.parent if _DARKNET_DIR.match(path.name) and (path.parent / "obj.names").is_file() else None
    if darknet is not None:  # CVAT keeps a task's folders inside: obj_train_data/grp0/x.jpg + x.txt
        stems = {p.with_suffix("") for p in walk(path, "*.txt")}
        if any(p.with_suffix("") in stems and _is_image(p) for p in walk(path)):
            return path, path, (path, darknet)
    if (path / "classes.txt").is_file() or (path / "obj.names").is_file():
        stems = {p.stem for p in path.glob("*.txt")}
        if any(p.stem in stems and _is_image(p) for p in path.iterdir()):
            return path, path, (path,)
    return None


_DARKNET_DIR = re.compile(r"obj_\w+_data$")


def _darknet_dirs(path: Path) -> list[Path]:
    """CVAT's YOLO 1.1 export: ``obj_<subset>_data/`` folders, images and labels side by side."""
    return sorted(q for q in path.glob("obj_*_data") if q.is_dir() and _DARKNET_DIR.match(q.name))


def _find_image(name: str, dirs: Sequence[Path]) -> Path | None:
    """The image a label names, in the first of ``dirs`` that has it: by its relative path or
    its file name, and failing those by its file name in any case (``x.jpg`` finds ``x.JPG``, as
    on the Windows or macOS disk where the labels were made) and in either Unicode form (an
    accented name as composed or decomposed characters: macOS writes the latter)."""
    rel = Path(name.replace("\\", "/"))
    for d in dirs:
        for candidate in (d / rel, d / rel.name):
            if candidate.is_file():
                return candidate
    for d in dirs:
        for folder in dict.fromkeys(((d / rel).parent, d)):
            if not folder.is_dir():
                continue
            found = _names_in_any_case(folder, folder.stat().st_mtime_ns).get(_loose_name(rel.name))
            if found is not None:
                return found
    return None


@functools.lru_cache(maxsize=4)
def _names_in_any_case(folder: Path, mtime_ns: int) -> dict[str, Path]:
    """The images of ``folder`` by their names in lower case and composed Unicode form, cached by
    the folder's modification time, so a set whose every label differs so is still listed once."""
    return {_loose_name(p.name): p for p in sorted(folder.iterdir()) if _is_image(p)}


def _loose_name(name: str) -> str:
    """A file name as ``_find_image`` matches it: lower case, composed Unicode form (NFC)."""
    return unicodedata.normalize("NFC", name).lower()


def _to_record(entry: ImageLabels, image: Path, size_where: str) -> Record:
    """Check the labels against the image on disk (size, bounds) -> a Record."""
    width, height, orientation = image_size_and_orientation(image)
    stated = entry.width is not None and entry.height is not None
    if stated and (entry.width, entry.height) != (width, height):
        if orientation in TURNED_SIDEWAYS and (entry.width, entry.height) == (height, width):
            raise DatasetError(
                f"{size_where}: says the image is {entry.width}x{entry.height}, the size of "
                f"{image.name} as stored, before its EXIF orientation tag ({orientation}: "
                f"{_ORIENTATION_SAYS[orientation]}) is applied; Stampline reads photos as they are "
                f"shown ({width}x{height}), so the labelling tool ignored the tag (as older LabelImg "
                "does): label them in a tool that applies it (CVAT, Label Studio), or remove the tag "
                "from the photos (exiftool -Orientation=1 -n) so they are read as they were labelled"
            )
        scale = width / entry.width
        resized = abs(height / entry.height - scale) <= 0.01 * scale and abs(scale - 1) > 0.02
        raise DatasetError(
            f"{size_where}: says the image is {entry.width}x{entry.height} but {image.name} is "
            f"{width}x{height} (as decoded, EXIF orientation applied)"
            + (
                f"; the same shape {max(scale, 1 / scale):.3g} times {'larger' if scale > 1 else 'smaller'}: "
                "the boxes were drawn on a resized copy of the photo (export the labels for the "
                "photos themselves, or give the copies they were drawn on)"
                if resized
                else ""
            )
        )
    # a turn the stated size cannot confirm (none stated, a turn that keeps the size, or a square)
    unchecked = orientation != 1 and not (stated and orientation in TURNED_SIDEWAYS and width != height)
    objects = tuple(
        ObjectLabel(obj.label, box=_check_bounds(obj.box, place, width, height), center=obj.center)
        if obj.box is not None
        else obj
        for obj, place in zip(entry.objects, entry.places, strict=True)
    )
    return Record(image, objects, width, height, turn_unchecked=orientation if unchecked else 0)


def _unlabelled(
    root: Path, found: Sequence[Path], labelled: set[Path], why: str = "have no label file"
) -> tuple[Path, ...]:
    skipped = tuple(p for p in found if p not in labelled)
    if skipped:
        _log.warning(
            "%s: %d image(s) %s and were skipped (not negatives), e.g. %s",
            root,
            len(skipped),
            why,
            _rel(skipped[0], root),
        )
    return skipped


#: how a label file of each format says a photo shows no stamp
_NEGATIVE_SAID = {
    "coco": "an entry in its images with no annotation",
    "csv": "a row with its box fields empty",
}


def _not_listed(source: Path, dirs: Sequence[Path], named: set[Path], fmt: str) -> tuple[Path, ...]:
    """The photos in the folders a label file's images are looked for in (not their subfolders)
    that it does not list: said, as VOC's and YOLO's photos without labels are (Roboflow's CSV
    leaves its photos without a stamp out, which would be the set's negatives)."""
    found = sorted({p for d in dict.fromkeys(dirs) if d.is_dir() for p in d.iterdir() if _is_image(p)})
    listed = {p.resolve() for p in named}  # (named ../images/x.jpg, or by an absolute path)
    negative = _NEGATIVE_SAID.get(fmt)
    why = f"are not in {source.name}" + (f" (a photo without the stamp needs {negative})" if negative else "")
    return _unlabelled(source.parent, [p for p in found if p.resolve() not in listed], set(), why)


def _load_voc(root: Path) -> tuple[list[Record], tuple[Path, ...]]:
    ann_dir, img_dir = _voc_layout(root) or (root, root)
    dirs = [img_dir] if ann_dir == img_dir else [img_dir, ann_dir]
    records: list[Record] = []
    owner: dict[Path, str] = {}
    for xml_path in _voc_files(ann_dir, every=ann_dir != root):
        shown = _rel(xml_path, root)
        try:
            data = xml_path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{shown}: cannot read ({exc.strerror or exc})") from None
        entry = parse_voc(data, shown)
        sub = xml_path.parent.relative_to(ann_dir)  # Annotations/a/x.xml labels JPEGImages/a/x.jpg
        here = [img_dir / sub, *dirs] if sub.parts and (img_dir / sub).is_dir() else dirs
        image = _find_image(entry.name, here) if entry.name else None
        if image is None:  # <filename> missing or wrong: the image named like the xml
            stems = [xml_path.stem + ext for ext in IMAGE_EXTENSIONS]
            image = next((p for name in stems if (p := _find_image(name, here)) is not None), None)
        if image is None:
            raise DatasetError(
                f"{shown} <filename>: image {entry.name!r} not found in {_rel(img_dir, root) or '.'}/ "
                f"(nor {xml_path.stem} with {', '.join(IMAGE_EXTENSIONS)})"
            )
        if image in owner:
            raise DatasetError(
                f"{shown} <filename>: image {image.name!r} is already labelled by {owner[image]}"
            )
        owner[image] = shown
        records.append(_to_record(entry, image, f"{shown} <size>"))
    # an images folder of its own is the set's in its subfolders too; photos beside the labels are
    # the top level's
    found = sorted(p for p in (walk(img_dir) if img_dir != root else img_dir.iterdir()) if _is_image(p))
    return records, _unlabelled(root, found, set(owner))


def _load_yolo(root: Path, whole: bool = True) -> tuple[list[Record], tuple[str, ...], tuple[Path, ...]]:
    """``whole``: no subset picks images, so an ``images/`` of several splits is refused."""
    dirs = _yolo_dirs(root)
    assert dirs is not None, root  # detect_format said so
    img_dir, lbl_dir, homes = dirs
    splits = _splits(img_dir.iterdir())
    if whole and splits:  # train and val mixed would be a test on training images
        raise _pass_one_split(img_dir, splits, ", or pick images with --subset")
    lists: list[tuple[str, tuple[str, ...]]] = []  # (where, class names): all must agree
    txt = next((t for t in (root / "classes.txt", lbl_dir / "classes.txt") if t.is_file()), None)
    names_file = next((h / "obj.names" for h in homes if (h / "obj.names").is_file()), None)
    for path in (txt, names_file):
        if path is not None:
            lists.append(
                (_rel(path, root), parse_classes_txt(_read_text(path, _rel(path, root)), _rel(path, root)))
            )
    yaml_path = next(
        (home / n for home in homes for n in ("data.yaml", "data.yml") if (home / n).is_file()), None
    )
    pose = False
    if yaml_path is not None:
        shown = _rel(yaml_path, root)
        yaml_text = _read_text(yaml_path, shown)
        lists.append((f"{shown} names", parse_yaml_names(yaml_text, shown)))
        pose = re.search(r"^kpt_shape\s*:", yaml_text, re.MULTILINE) is not None  # a pose export
    if not lists:
        raise DatasetError(
            f"{root}: YOLO folder without classes.txt, obj.names or data.yaml naming the classes"
        )
    for where, names in lists[1:]:
        if names != lists[0][1]:
            raise DatasetError(f"{where}: {list(names)} differ from {lists[0][0]} {list(lists[0][1])}")
    classes = lists[0][1]
    images = sorted(p for p in walk(img_dir) if _is_image(p))
    by_label: dict[Path, Path] = {}
    label_files = sorted(walk(lbl_dir, "*.txt"))
    folded: dict[str, list[Path]] = {}  # label files by name in any case, as VOC, CSV and COCO match
    for label_path in label_files:
        folded.setdefault(label_path.relative_to(lbl_dir).with_suffix("").as_posix().casefold(), []).append(
            label_path
        )
    for image in images:
        label_path = lbl_dir / image.relative_to(img_dir).with_suffix(".txt")
        if not label_path.is_file():
            alike = folded.get(image.relative_to(img_dir).with_suffix("").as_posix().casefold(), [])
            label_path = alike[0] if len(alike) == 1 else label_path
        if label_path in by_label:
            raise DatasetError(
                f"{_rel(label_path, root)}: labels two images, {_rel(by_label[label_path], root)} and "
                f"{_rel(image, root)}; expected one image per label file"
            )
        by_label[label_path] = image
    for label_path in label_files:
        if (
            label_path not in by_label
            and label_path != lbl_dir / "classes.txt"
            and not hidden_file(label_path)
        ):
            stem = label_path.relative_to(lbl_dir).with_suffix("").as_posix()
            unread = [q for ext in UNREAD_PHOTOS if (q := img_dir / f"{stem}{ext}").is_file()]
            if unread:
                raise DatasetError(
                    f"{_rel(label_path, root)}: its image {_rel(unread[0], root)} is "
                    f"{UNREAD_PHOTOS[unread[0].suffix.lower()]}; {UNREAD_PHOTO_HINT}"
                )
            raise DatasetError(
                f"{_rel(label_path, root)}: no image for these labels (expected "
                f"{_rel(img_dir, root)}/{stem} with one of {', '.join(IMAGE_EXTENSIONS)})"
            )
    records = []
    for label_path, image in by_label.items():
        if not label_path.is_file():
            continue
        shown = _rel(label_path, root)
        width, height, orientation = image_size_and_orientation(image)
        entry = parse_yolo_labels(_read_text(label_path, shown), shown, classes, width, height, pose)
        turn = orientation if orientation != 1 else 0  # YOLO states no size to confirm a turn by
        records.append(Record(image, entry.objects, width, height, turn_unchecked=turn))
    labelled = {r.image_path for r in records}
    return records, classes, _unlabelled(root, images, labelled)


def _records_from_entries(
    entries: Sequence[ImageLabels], dirs: Sequence[Path], root: Path
) -> tuple[list[Record], set[Path], list[Record]]:
    """The records of a label file's entries, every image it names, and the records of those it
    leaves out (``ImageLabels.left_out``: a subset may list them)."""
    records, seen, left = [], {}, []
    for entry in entries:
        image = _find_image(entry.name, dirs)
        if image is None:
            looked = " and ".join(f"{_rel(d, root) if d != root else '.'}/" for d in dirs)
            raise DatasetError(f"{entry.where}: image {entry.name!r} not found (looked in {looked})")
        if image in seen:
            raise DatasetError(f"{entry.where}: image {image.name!r} is already listed at {seen[image]}")
        seen[image] = entry.where
        (left if entry.left_out else records).append(_to_record(entry, image, entry.where))
    return records, set(seen), left


def _first_seen_labels(records: Sequence[Record]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(o.label for r in records for o in r.objects))


def _used_labels(listed: Sequence[str], records: Sequence[Record], source: Path) -> tuple[str, ...]:
    """The listed classes some object uses, in list order: a class head over classes no image
    shows would be trained on nothing (Roboflow's project category, LabelImg's predefined classes)."""
    used = {o.label for r in records for o in r.objects}
    unused = [name for name in listed if name not in used]
    if unused:
        _log.warning(
            "%s: %d listed class(es) that no object uses left out of the labels: %s",
            source,
            len(unused),
            ", ".join(repr(name) for name in unused),
        )
    kept = tuple(name for name in listed if name in used)
    spelled: dict[str, str] = {}
    for name in kept:
        if (other := spelled.setdefault(name.casefold(), name)) != name:
            raise DatasetError(
                f"{source}: labels {other!r} and {name!r} differ only in capitals; expected one "
                "spelling per stamp (as two they would be two variants, and --expect would call one "
                "WRONG): write them alike"
            )
    return kept


def _refuse_voc_splits(root: Path) -> None:
    """A VOC set whose ``ImageSets/Main`` lists several splits (the devkit's train, val, test;
    CVAT's subsets) is not loaded whole: training on all of it would test on training images."""
    main = root / "ImageSets" / "Main"
    # (the devkit's lists of one class are named class_split.txt)
    lists = sorted(p.name for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
    if len(lists) > 1:
        example = main / next((n for n in lists if "train" in n), lists[0])
        raise DatasetError(
            f"{root}: its ImageSets/Main lists the splits {', '.join(lists)}; pick one with "
            f"--subset (e.g. --subset {example})"
        )


def load_dataset(path: Path | str, subset: Path | str | None = None) -> Dataset:
    """Load a labelled data set, its format detected from ``path`` (see the module docstring).

    ``subset``: a file listing image names (one a line); only those images are kept, and a listed
    name that is not in the data set is an error.
    """
    fmt, source = detect_format(path)
    root = source if source.is_dir() else source.parent
    shown = source.name
    image_dirs = [root, root / "images"]
    if fmt == "coco" and root.name.lower() == "annotations":
        # COCO's and CVAT's layout: annotations/instances_<subset>.json, images/<subset>/ (or images/)
        subset_name = source.stem.removeprefix("instances_")
        root = root.parent
        image_dirs += [root / "images" / subset_name, root / "images"]
    classes: tuple[str, ...] | None = None
    unlabelled: tuple[Path, ...] = ()
    left_out: list[Record] = []  # listed, but left out (COCO crowds alone): a subset may name them
    if fmt == "voc":
        if subset is None:
            _refuse_voc_splits(root)
        records, unlabelled = _load_voc(root)
    elif fmt == "yolo":
        records, classes, unlabelled = _load_yolo(root, whole=subset is None)
    elif fmt == "coco":
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{shown}: cannot read ({exc.strerror or exc})") from None
        classes, entries = parse_coco(data, shown)
        records, named, left_out = _records_from_entries(entries, image_dirs, root)
    elif fmt == "csv":
        entries = parse_csv(_read_text(source, shown), shown)
        records, named, left_out = _records_from_entries(entries, image_dirs, root)
    else:
        label = DEFAULT_LABEL
        if (root / "classes.txt").is_file():
            names = parse_classes_txt(_read_text(root / "classes.txt", "classes.txt"), "classes.txt")
            if len(names) != 1:
                raise DatasetError(f"classes.txt: expected one class name beside {shown}, got {len(names)}")
            label = names[0]
        entries = parse_centers(_read_text(source, shown), shown, label)
        records, named, left_out = _records_from_entries(entries, image_dirs, root)
    if fmt in ("coco", "csv", "centers") and Path(path).is_dir():  # the folder given, not the file
        unlabelled = _not_listed(source, image_dirs, named, fmt)
    labels = _used_labels(classes if classes is not None else _first_seen_labels(records), records, source)
    if subset is not None:
        left = {r.image_path for r in left_out}
        records = [
            r for r in _apply_subset([*records, *left_out], Path(subset), root) if r.image_path not in left
        ]
    _say_turned(records, source)
    _say_cornered(records, source)
    return Dataset(root, fmt, tuple(records), labels, source, unlabelled)


#: labelled photos with boxes from which a set whose every box keeps to the top-left part of
#: its photo is said (boxes drawn on smaller copies of the photos); and how far they reach at most
CORNERED_MIN_PHOTOS = 8
CORNERED_REACH = 0.55


def _say_cornered(records: Sequence[Record], source: Path) -> None:
    """A set whose every box keeps to the top-left of its photo was labelled on smaller copies
    (a tool's resized export, where the labels state no size to catch it by): said, with how far
    the boxes reach, since training on it teaches the wrong place in silence."""
    boxed = [r for r in records if r.width and r.height and any(o.box is not None for o in r.objects)]
    if len(boxed) < CORNERED_MIN_PHOTOS:
        return
    x = max(o.box[2] / r.width for r in boxed for o in r.objects if o.box is not None)
    y = max(o.box[3] / r.height for r in boxed for o in r.objects if o.box is not None)
    if x <= CORNERED_REACH and y <= CORNERED_REACH:
        _log.warning(
            "%s: every box of its %d labelled photos keeps to the top-left of its photo (reaching "
            "%.0f%% across and %.0f%% down at most): were they drawn on smaller copies of the "
            "photos (a labelling tool's resized export)? Then every box is in the wrong place: "
            "check them on edge-train's train_preview.png or edge-eval --sheet",
            source,
            len(boxed),
            100 * x,
            100 * y,
        )


def _say_turned(records: Sequence[Record], source: Path) -> None:
    """Photos whose EXIF tag turns them, with labels that cannot show which way they were made:
    read turned, as shown, and said once, since a labelling tool that ignored the tag (older
    LabelImg) put every box of them elsewhere, in silence."""
    turned = [r for r in records if r.turn_unchecked and r.objects]
    if not turned:
        return
    first = turned[0]
    _log.warning(
        "%s: %d of %d labelled photos carry an EXIF orientation tag that turns them (e.g. %s: %s); "
        "their labels are taken on the photo as shown, as CVAT, Label Studio and Roboflow make "
        "them; if the labelling tool ignored the tag (older LabelImg), every box of theirs is "
        "elsewhere: check them on edge-train's train_preview.png or edge-eval --sheet",
        source,
        len(turned),
        len(records),
        first.name,
        _ORIENTATION_SAYS.get(first.turn_unchecked, f"orientation {first.turn_unchecked}"),
    )


def _apply_subset(records: Sequence[Record], subset: Path, root: Path) -> list[Record]:
    """Keep the records a subset file lists. An entry is a file name (``5.jpg``, as the shared
    ``train.txt`` files have; or ``5``, as VOC's ImageSets lists) or a relative path
    (``images/train/x.jpg``), which matches a record whose path ends with it, so same-named images
    in different folders stay apart, or an absolute path. A path that matches none (written on
    another machine, or by an export: CVAT's ``data/obj_train_data/x.jpg``), or a name in
    another case, matches by its file name (in any case) where exactly one image has that name.
    A name of several images (``x.jpg`` in two folders) is refused: which one is meant?"""
    lines = _subset_lines(_read_text(subset, str(subset)))
    wanted = [(n, tuple(Path(entry.replace("\\", "/")).parts)) for n, entry in lines]
    written = dict(lines)
    if not wanted:
        raise DatasetError(f"{subset}: lists no images (expected one image name a line)")
    keys = {parts for _, parts in wanted}
    depth = max((len(parts) for parts in keys), default=1)
    kept: list[Record] = []
    by_key: dict[tuple[str, ...], list[Record]] = {}  # each entry matched -> the images it matched
    for r in records:
        parts = r.image_path.absolute().parts  # an absolute entry matches whatever --data was
        stemmed = (*parts[:-1], r.image_path.stem)  # VOC ImageSets list names without the extension
        hits = {p[-k:] for p in (parts, stemmed) for k in range(1, min(depth, len(parts)) + 1)} & keys
        if hits:
            kept.append(r)
            for key in hits:
                by_key.setdefault(key, []).append(r)
    for n, parts in wanted:  # same-named photos in two folders: which one is meant?
        named = by_key.get(parts, [])
        if len({r.image_path for r in named}) > 1:
            shown = ", ".join(_rel(r.image_path, root) for r in named[:3])
            raise DatasetError(
                f"{subset.name} line {n}: {written[n]!r} names {len(named)} images of the data set "
                f"({shown}{', ...' if len(named) > 3 else ''}); give the path of the one meant "
                f"(e.g. {_rel(named[0].image_path, root)})"
            )
    missing = [(n, written[n]) for n, parts in wanted if parts not in by_key]
    if missing:  # a path from another machine (an export's data/obj_train_data/x.jpg, C:\\...\\x.jpg),
        # or a name in another case (RACCOON-1.JPG, as labels find their images): its file name,
        # in any case, where one image of the set has it
        by_name: dict[str, list[Record]] = {}
        for r in records:
            by_name.setdefault(_loose_name(r.image_path.name), []).append(r)
        chosen = {id(r) for r in kept}
        left = []
        for n, entry in missing:
            parts = Path(entry.replace("\\", "/")).parts
            named = by_name.get(_loose_name(parts[-1]), [])
            if len(named) != 1:
                left.append((n, entry))
            elif id(named[0]) not in chosen:
                chosen.add(id(named[0]))
                kept.append(named[0])
        kept = [r for r in records if id(r) in chosen]  # in the data set's order
        missing = left
    if missing:
        n, entry = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{subset.name} line {n}: image {entry!r} is not in the data set at {root}{more}")
    return kept


# -- writing --------------------------------------------------------------------------------------


class DatasetWriter:
    """Writes a labelled data set in one of ``FORMATS``, in a layout ``load_dataset`` detects.

    Use as a context manager: the index files (COCO json, CSV, ``labels.txt``, ``classes.txt``) are
    written by ``close()`` on a clean exit; after an exception they are not, so a half-written set
    fails to load instead of passing for a complete one (VOC has no index file: the images added
    so far form a valid set). ``out_dir`` must be empty or absent.
    """

    def __init__(self, out_dir: Path | str, fmt: str, classes: Sequence[str]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"DatasetWriter: format {fmt!r} is unknown (expected one of {FORMATS})")
        classes = tuple(classes)
        if not classes or not all(isinstance(c, str) and c.strip() == c and c for c in classes):
            raise ValueError(
                f"DatasetWriter: expected non-empty class names without edge spaces, got {classes!r}"
            )
        if len(set(classes)) != len(classes):
            raise ValueError(f"DatasetWriter: class names must be unique, got {classes!r}")
        if fmt == "centers" and len(classes) != 1:
            raise ValueError(f"DatasetWriter: the centers format holds one class, got {classes!r}")
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise FileExistsError(f"DatasetWriter: {self.out_dir} exists and is not an empty folder")
        self.format = fmt
        self.classes = classes
        self.skipped_negatives = 0
        self._entries: list[tuple[str, int, int, tuple[ObjectLabel, ...]]] = []
        self._names: set[str] = set()
        self._closed = False
        self._image_dir = self.out_dir if fmt == "centers" else self.out_dir / "images"
        self._image_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "voc":
            (self.out_dir / "annotations").mkdir()
        elif fmt == "yolo":
            (self.out_dir / "labels").mkdir()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, name: str, image_bgr: np.ndarray, objects: Sequence[ObjectLabel]) -> None:
        """Write one image (JPEG, quality 95) and its labels; ``name`` has no extension."""
        if self._closed:
            raise ValueError("DatasetWriter.add: the writer is closed")
        if (
            not name
            or any(ch in name for ch in "/\\")
            or name.startswith(".")
            or Path(name).suffix.lower() in IMAGE_EXTENSIONS
            or (self.format == "centers" and any(ch.isspace() for ch in name))
        ):
            raise ValueError(
                f"DatasetWriter.add: expected a file name without folder or image extension, got {name!r}"
            )
        if name in self._names:
            raise ValueError(f"DatasetWriter.add: name {name!r} was already added")
        image = np.asarray(image_bgr)
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"DatasetWriter.add: expected HxWx3 uint8 BGR, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        checked = []
        for i, obj in enumerate(objects):
            where = f"DatasetWriter.add({name!r}) object {i}"
            if obj.label not in self.classes:
                raise ValueError(f"{where}: label {obj.label!r} is not one of {self.classes}")
            if obj.box is None and self.format != "centers":
                raise ValueError(f"{where}: the {self.format} format needs a box, got only a centre")
            if obj.box is not None:
                obj = ObjectLabel(obj.label, _check_bounds(obj.box, where, width, height), obj.center)
            checked.append(obj)
        if self.format == "centers" and not checked:
            self.skipped_negatives += 1
            return
        filename = f"{name}.jpg"
        if not write_image(self._image_dir / filename, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"DatasetWriter.add: OpenCV could not write {self._image_dir / filename}")
        objs = tuple(checked)
        try:
            if self.format == "voc":
                text = format_voc(filename, width, height, objs)
                write_whole(self.out_dir / "annotations" / f"{name}.xml", text)
            elif self.format == "yolo":
                text = format_yolo_labels(objs, self.classes, width, height)
                write_whole(self.out_dir / "labels" / f"{name}.txt", text)
        except OSError:  # (a full disk): no image without its annotation, which would read as a negative
            (self._image_dir / filename).unlink(missing_ok=True)
            raise
        self._names.add(name)
        self._entries.append((filename, width, height, objs))

    def close(self) -> None:
        """Write the index files (once); further ``add`` calls are refused."""
        if self._closed:
            return
        self._closed = True
        out, classes_txt = self.out_dir, "".join(c + "\n" for c in self.classes)
        if self.format == "yolo":
            write_whole(out / "classes.txt", classes_txt)
        elif self.format == "coco":
            write_whole(out / "annotations.json", format_coco(self._entries, self.classes))
        elif self.format == "csv":
            rows = [(filename, objs) for filename, _, _, objs in self._entries]
            write_whole(out / "labels.csv", format_csv(rows))
        elif self.format == "centers":
            rows = [
                (filename, [normalised_center(o, w, h) for o in objs])
                for filename, w, h, objs in self._entries
            ]
            write_whole(out / "labels.txt", format_centers(rows))
            write_whole(out / "classes.txt", classes_txt)
            if self.skipped_negatives:
                _log.warning(
                    "%s: %d negative image(s) skipped: the centers format cannot hold images without a stamp",
                    out,
                    self.skipped_negatives,
                )
