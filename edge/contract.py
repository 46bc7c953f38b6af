"""The model contract: the single source of truth shared by training, conversion and the runtime.

Input
    One image, 128x128x3, RGB, uint8 0..255, batch fixed at 1 on the device. Pixel scaling to
    [-1, 1] (``x * PIXEL_SCALE + PIXEL_OFFSET``) happens *inside* the model, so the runtime feeds
    camera pixels as they are and the int8 model's input tensor is uint8 with scale 1, zero 0.
    Frames are turned into that image by :func:`prepare_input` (crop to the region of interest,
    resize, BGR -> RGB); training, calibration, evaluation and the runtime all call it.

Outputs (found by name in the model's serving signature, never by index)
    ``presence``  (1, 1)  probability that the stamp is in view.
    ``box``       (1, 4)  the stamp's box as normalised corners ``x_min, y_min, x_max, y_max``
                          of the model's view (0,0 is the top-left corner, 1,1 the bottom-right).
    ``center``    (1, 2)  the stamp's centre ``x, y``, normalised like the box.
    ``class``     (1, K)  probabilities over ``labels`` (multi-variant models only).
    ``heatmap``   (1, H, W) class activation map, presence evidence per cell (weak models).
    ``cells``     (1, G, G) logits over a grid of G x G cells (stride 8): how likely each cell
                          holds the stamp's middle.
    ``cell_boxes``   (1, G, G, 4) per cell, the distances from the cell's centre to the box's
                          x_min, y_min, x_max, y_max edges, in units of ``GRID_REACH``.
    ``cell_offsets`` (1, G, G, 2) per cell, the centre's offset from the cell's centre, 0..1
                          for -``GRID_SHIFT``..+``GRID_SHIFT`` cells.

    A grid model's box (or centre) is decoded here, in float, by :func:`decode_grid`: around the
    strongest cell (a 3x3 window), the softmax over ``GRID_SHARPNESS`` x ``cells`` weights the
    cells' boxes. Decoding outside the int8 graph, over the peak's neighbourhood only, keeps it
    exact (an int8 softmax rounds the many unlikely cells to 0, and an int8 output may clip their
    low logits); training computes the same formula in its graph.

Model kinds (``kind`` in the metadata) and the outputs each one carries:
    ``box``     presence, cells, cell_boxes[, class]   grid box model (centre = box centre);
                presence, box[, class] (direct regression) is understood as well
    ``center``  presence, cells, cell_offsets          grid centre model; or presence, center
    ``cam``     presence, heatmap                      weakly supervised; centre = heatmap peak

Several objects in one image: every loader keeps all boxes; training and evaluation use the
largest one (by area) as *the* stamp. A product carries one stamp; the others are ignored.

Versions: a metadata key a newer edge-convert adds (as ``refine`` was) is ignored, with a
warning, by a runtime that does not know it, so an older station still runs the model as it
can; a change an older runtime must not ignore raises ``CONTRACT_VERSION``, and a model of a
newer contract is refused with the advice to upgrade the runtime.
"""

from __future__ import annotations

import json
import logging
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge.types import Prediction, box_center  # (the box convention's centre: re-exported)

_log = logging.getLogger(__name__)
#: the unknown metadata keys already warned of, by model file
_SAID_UNKNOWN: set[tuple[str, tuple[str, ...]]] = set()

CONTRACT_VERSION = 1
INPUT_HEIGHT = 128
INPUT_WIDTH = 128
INPUT_CHANNELS = 3
INPUT_SHAPE = (INPUT_HEIGHT, INPUT_WIDTH, INPUT_CHANNELS)
PIXEL_FORMAT = "RGB uint8"
PIXEL_SCALE = 1.0 / 127.5
PIXEL_OFFSET = -1.0

PRESENCE = "presence"
BOX = "box"
CENTER = "center"
CLASS = "class"
HEATMAP = "heatmap"
CELLS = "cells"
CELL_BOXES = "cell_boxes"
CELL_OFFSETS = "cell_offsets"
GRID_STRIDE = 8
GRID_SIZE = INPUT_HEIGHT // GRID_STRIDE
GRID_SHARPNESS = 3.0
GRID_REACH = 0.75
GRID_SHIFT = 1.5
#: the decode weighs the cells within this many cells of the strongest one (a 3x3 window)
GRID_WINDOW = 1
OUTPUT_MEANINGS = {
    PRESENCE: "probability that the stamp is in view, shape (1, 1)",
    BOX: "normalised corners x_min, y_min, x_max, y_max of the model's view, shape (1, 4)",
    CENTER: "normalised centre x, y of the model's view, shape (1, 2)",
    CLASS: "probabilities over the labels, shape (1, K)",
    HEATMAP: "class activation map, presence evidence per cell, shape (1, H, W)",
    CELLS: "logits per grid cell: the stamp's middle is there, shape (1, G, G)",
    CELL_BOXES: f"per cell, distances to x_min, y_min, x_max, y_max / {GRID_REACH}, shape (1, G, G, 4)",
    CELL_OFFSETS: f"per cell, centre offset, 0..1 for -{GRID_SHIFT}..+{GRID_SHIFT} cells, shape (1, G, G, 2)",
}
BOX_CONVENTION = "xyxy normalised, origin top-left"

KIND_OUTPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required outputs, optional outputs) of the models we train
    "box": ((PRESENCE, CELLS, CELL_BOXES), (CLASS,)),
    "center": ((PRESENCE, CELLS, CELL_OFFSETS), ()),
    "cam": ((PRESENCE, HEATMAP), ()),
}
#: the direct-regression forms also understood (a model whose metadata lists these outputs)
KIND_DIRECT_OUTPUTS = {"box": (PRESENCE, BOX), "center": (PRESENCE, CENTER)}
DEFAULT_KIND = "box"


def kind_of_outputs(names: Sequence[str]) -> str | None:
    """The model kind whose outputs (grid or direct form) ``names`` carry, or None."""
    for kind, (required, _) in KIND_OUTPUTS.items():
        if set(required) <= set(names):
            return kind
    for kind, required in KIND_DIRECT_OUTPUTS.items():
        if set(required) <= set(names):
            return kind
    return None


def has_class_head(kind: str, n_labels: int) -> bool:
    """Whether a model of ``kind`` with ``n_labels`` labels carries the ``class`` output (its
    scores over the stamp variants): models of a kind that may have one (box), of two or more
    labels. The one rule for training, conversion, evaluation and the runtime."""
    return CLASS in KIND_OUTPUTS[kind][1] and n_labels > 1


def class_width(kind: str, n_labels: int) -> int:
    """The width of a model's class output, 1 where it has none (``build_model``'s ``n_classes``)."""
    return n_labels if has_class_head(kind, n_labels) else 1


def label_of(labels: Sequence[str], class_scores: Sequence[float]) -> str:
    """The variant a class head's scores (in the order of ``labels``) name."""
    return labels[int(np.argmax(class_scores))]


DEFAULT_LABELS = ("stamp",)
DEFAULT_THRESHOLD = 0.5
#: the runtime's second looks at a frame (``edge.runtime.look_again``): ``refine`` in a model's
#: metadata is the one ``edge-convert`` measured best for it on its validation images. A box
#: model's (``zoom``, ``zoom-flip``) look closer around the first box; a centre model's with a
#: heatmap (``tiles``) looks at parts of the view and keeps the surest look
BOX_REFINES = ("off", "zoom", "zoom-flip")
CENTER_REFINES = ("off", "tiles")
REFINE_CHOICES = (*BOX_REFINES, *CENTER_REFINES[1:])
METADATA_NAME = "stampline"
#: The resize every image goes through on its way into the model. Measured on a 640x480 frame
#: (1 thread, this 2-core x86): INTER_AREA 0.76 ms, INTER_LINEAR 0.04 ms but aliased (mean
#: error 9.2 grey levels on fine texture against a float INTER_AREA reference), linear to twice
#: the input size then INTER_AREA by exactly 2: 0.18 ms with an error of 0.9. We use the latter.
RESIZE_METHOD = "linear-to-2x-then-area"


class ContractError(ValueError):
    """A model or its metadata does not fit the contract this runtime knows."""


def resize_to_input(image: np.ndarray) -> np.ndarray:
    """Resize an HxWxC uint8 image to the model's input size (see ``RESIZE_METHOD``)."""
    h, w = image.shape[:2]
    target = (INPUT_WIDTH, INPUT_HEIGHT)
    if h == INPUT_HEIGHT and w == INPUT_WIDTH:
        return image
    if w > 2 * INPUT_WIDTH or h > 2 * INPUT_HEIGHT:
        image = cv2.resize(image, (2 * INPUT_WIDTH, 2 * INPUT_HEIGHT), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    if w >= INPUT_WIDTH and h >= INPUT_HEIGHT:
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)


def roi_pixels(shape: Sequence[int], roi: Sequence[float] | None) -> tuple[int, int, int, int]:
    """The region of interest ``(x, y, w, h)`` normalised -> integer pixel rectangle."""
    h, w = int(shape[0]), int(shape[1])
    if roi is None:
        return 0, 0, w, h
    rx, ry, rw, rh = roi
    x0 = min(max(round(rx * w), 0), w - 1)
    y0 = min(max(round(ry * h), 0), h - 1)
    x1 = min(max(round((rx + rw) * w), x0 + 1), w)
    y1 = min(max(round((ry + rh) * h), y0 + 1), h)
    return x0, y0, x1 - x0, y1 - y0


def prepare_input(image_bgr: np.ndarray, roi: Sequence[float] | None = None) -> np.ndarray:
    """A BGR uint8 frame -> the model's input: region of interest, resized, RGB, contiguous."""
    if roi is not None:
        x, y, w, h = roi_pixels(image_bgr.shape, roi)
        image_bgr = image_bgr[y : y + h, x : x + w]
    small = resize_to_input(image_bgr)
    return np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))


def grid_centres(size: int = GRID_SIZE) -> np.ndarray:
    """The centres ``(x, y)`` of a ``size`` x ``size`` grid's cells, normalised, row by row."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    cy, cx = np.meshgrid(c, c, indexing="ij")
    return np.stack([cx.ravel(), cy.ravel()], -1)


def grid_window(logits: np.ndarray, radius: int = GRID_WINDOW) -> np.ndarray:
    """Mask (G, G) of the cells within ``radius`` cells of the strongest one."""
    size = logits.shape[-1]
    r, c = divmod(int(np.argmax(logits)), size)
    rows, cols = np.abs(np.arange(size) - r) <= radius, np.abs(np.arange(size) - c) <= radius
    return rows[:, None] & cols[None, :]


def decode_grid(
    cells: np.ndarray, cell_boxes: np.ndarray | None = None, cell_offsets: np.ndarray | None = None
) -> tuple[tuple[float, ...] | None, tuple[float, float]]:
    """A grid model's outputs for one image -> (box or None, centre), both normalised.

    The boxes (or centres) of the cells around the strongest one (``GRID_WINDOW``), weighted by
    ``softmax(GRID_SHARPNESS * cells)`` over those cells. Only the peak's neighbourhood counts, so
    the many unlikely cells (whose low logits an int8 output may clip) never pull the box."""
    size = round(np.asarray(cells).size ** 0.5)
    logits = np.asarray(cells, dtype=np.float64).reshape(size, size)
    window = grid_window(logits).ravel()
    z = np.where(window, GRID_SHARPNESS * (logits.ravel() - logits.max()), -np.inf)
    weights = np.exp(z)
    weights /= weights.sum()
    centres = grid_centres(size).astype(np.float64)
    cx, cy = weights @ centres
    if cell_boxes is not None:
        d = GRID_REACH * (weights @ np.asarray(cell_boxes, dtype=np.float64).reshape(-1, 4))
        box = (cx - d[0], cy - d[1], cx + d[2], cy + d[3])
        box = tuple(float(v) for v in np.clip(box, 0.0, 1.0))
        return box, box_center(box)
    if cell_offsets is not None:
        o = weights @ np.asarray(cell_offsets, dtype=np.float64).reshape(-1, 2)
        shift = (2.0 * o - 1.0) * GRID_SHIFT / size
        return None, (float(np.clip(cx + shift[0], 0, 1)), float(np.clip(cy + shift[1], 0, 1)))
    return None, (float(cx), float(cy))


def heatmap_peak(heatmap: np.ndarray) -> tuple[float, float]:
    """Centre of a class activation map: the weighted centroid of the cells around its peak."""
    hm = np.asarray(heatmap, dtype=np.float32).reshape(heatmap.shape[-2:])
    gh, gw = hm.shape
    iy, ix = np.unravel_index(int(np.argmax(hm)), hm.shape)
    y0, y1 = max(iy - 1, 0), min(iy + 2, gh)
    x0, x1 = max(ix - 1, 0), min(ix + 2, gw)
    patch = hm[y0:y1, x0:x1]
    weights = np.clip(patch - patch.min(), 0, None) + 1e-6
    ys, xs = np.mgrid[y0:y1, x0:x1]
    cy = float((weights * (ys + 0.5)).sum() / weights.sum()) / gh
    cx = float((weights * (xs + 0.5)).sum() / weights.sum()) / gw
    return cx, cy


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about itself; embedded in every ``.tflite`` we produce."""

    kind: str = DEFAULT_KIND
    labels: tuple[str, ...] = DEFAULT_LABELS
    threshold: float = DEFAULT_THRESHOLD
    contract_version: int = CONTRACT_VERSION
    input_shape: tuple[int, int, int] = INPUT_SHAPE
    pixel_format: str = PIXEL_FORMAT
    box_convention: str = BOX_CONVENTION
    resize: str = RESIZE_METHOD
    outputs: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, object] = field(default_factory=dict)
    #: second looks measured best for this model (one of REFINE_CHOICES); None: not measured
    #: (converted before second looks existed)
    refine: str | None = None

    def __post_init__(self) -> None:
        if self.contract_version != CONTRACT_VERSION:
            newer = isinstance(self.contract_version, int) and self.contract_version > CONTRACT_VERSION
            raise ContractError(
                f"model contract version {self.contract_version!r} is "
                + (
                    f"newer than this runtime's ({CONTRACT_VERSION}): upgrade Stampline on this device, "
                    "or convert the model with the version installed here"
                    if newer
                    else f"not known to this runtime (expected {CONTRACT_VERSION}); convert the model "
                    "again with this version"
                )
            )
        if not isinstance(self.kind, str) or self.kind not in KIND_OUTPUTS:
            raise ContractError(
                f"model kind {self.kind!r} is unknown (expected one of {sorted(KIND_OUTPUTS)})"
            )
        if not isinstance(self.input_shape, list | tuple) or tuple(self.input_shape) != INPUT_SHAPE:
            raise ContractError(f"model input {self.input_shape!r} != expected {INPUT_SHAPE}")
        if (
            not isinstance(self.labels, list | tuple)  # a string would be read letter by letter
            or not self.labels
            or not all(isinstance(x, str) and x for x in self.labels)
        ):
            raise ContractError(f"labels must be a non-empty list of names, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ContractError(f"labels must be distinct names, got {list(self.labels)!r}")
        number = isinstance(self.threshold, int | float) and not isinstance(self.threshold, bool)
        if not number or not 0.0 < float(self.threshold) < 1.0:
            raise ContractError(f"threshold must be a number in (0, 1), got {self.threshold!r}")
        for name in ("outputs", "provenance"):
            if not isinstance(getattr(self, name), Mapping):
                raise ContractError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        if self.refine is not None and self.refine not in REFINE_CHOICES:
            raise ContractError(
                f"refine must be one of {list(REFINE_CHOICES)} or absent, got {self.refine!r}"
            )
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not self.outputs:
            object.__setattr__(self, "outputs", self.default_outputs(self.kind, len(self.labels)))

    @property
    def refine_choices(self) -> tuple[str, ...]:
        """The second looks this model can take, fewest looks first (see ``REFINE_CHOICES``):
        a box model's, a centre or cam model's with a heatmap to tell the surest look by, else
        one look only."""
        if self.kind == "box":
            return BOX_REFINES
        return CENTER_REFINES if self.has_heatmap else ("off",)

    @property
    def has_heatmap(self) -> bool:
        """Whether the model gives a heatmap (a grid head's cells, a class activation map); a
        dense head's box comes without one."""
        return CELLS in self.outputs or HEATMAP in self.outputs

    @staticmethod
    def default_outputs(kind: str, n_labels: int) -> dict[str, str]:
        required = KIND_OUTPUTS[kind][0]
        names = list(required) + ([CLASS] if has_class_head(kind, n_labels) else [])
        return {name: OUTPUT_MEANINGS[name] for name in names}

    def with_outputs(self, available: Sequence[str]) -> ModelMetadata:
        """This metadata describing the form ``available`` takes: the grid form (the default) or
        the direct-regression one."""
        direct = KIND_DIRECT_OUTPUTS.get(self.kind)
        if direct and all(n in available for n in direct) and not set(self.outputs) <= set(available):
            head = CLASS in available and has_class_head(self.kind, len(self.labels))
            names = [*direct, *([CLASS] if head else [])]
            return replace(self, outputs={n: OUTPUT_MEANINGS[n] for n in names})
        return self

    def check_outputs(self, available: Sequence[str]) -> None:
        """Refuse a model whose outputs do not carry what its kind needs."""
        missing = [name for name in self.outputs if name not in available]
        if missing:
            raise ContractError(
                f"model of kind {self.kind!r} lacks output(s) {missing}; it has {sorted(available)}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | None = None) -> ModelMetadata:
        """The metadata in ``text``; ContractError (naming ``source``, the model file, if given)
        if it is not a contract's. Keys this version does not know are ignored, with a warning
        (see "Versions" above)."""
        named = f"{source}: " if source else ""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError(f"{named}model metadata is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContractError(f"{named}model metadata must be a JSON object")
        if "contract_version" not in data:
            raise ContractError(f"{named}model metadata lacks 'contract_version'")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        try:
            meta = cls(**{k: v for k, v in data.items() if k in known})
        except ContractError as exc:
            raise ContractError(f"{named}{exc}") from None
        if unknown and (named, tuple(unknown)) not in _SAID_UNKNOWN:  # once a file (read twice at a start)
            _SAID_UNKNOWN.add((named, tuple(unknown)))
            _log.warning(
                "%smodel metadata key(s) %s unknown to this version of Stampline (a newer "
                "edge-convert wrote them): ignored; upgrade Stampline on this device to use them",
                named,
                unknown,
            )
        return meta


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# -- metadata embedded in the .tflite flatbuffer (Model.metadata, name "stampline") ---------------
# The device has no TensorFlow and maybe no flatbuffers schema, so this reads the few fields it
# needs straight from the flatbuffer layout (tflite schema: Model field 4 = buffers, field 6 =
# metadata; Metadata = {name: string, buffer: uint}; Buffer = {data: [ubyte], offset, size}).


def _table_field(buf: bytes, table: int, index: int) -> int | None:
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vt_size = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot >= vt_size:
        return None
    off = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + off if off else None


def _deref(buf: bytes, pos: int) -> int:
    return pos + struct.unpack_from("<I", buf, pos)[0]


def _vector(buf: bytes, pos: int) -> tuple[int, int]:
    start = _deref(buf, pos)
    return start + 4, struct.unpack_from("<I", buf, start)[0]


def read_model(path: str | Path) -> bytes:
    """A model file's bytes. ContractError when the path names no regular file (a pipe such as
    ``--model <(...)``, a device, a socket: a tool reads its model more than once, the pipe's
    second reading is empty); OSError as reading raises it."""
    path = Path(path)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ContractError(f"{path}: {kind}, not a model file: give the path of the .tflite file")
    return path.read_bytes()


def read_embedded_metadata(model: bytes, source: str = "model") -> ModelMetadata:
    """The contract metadata embedded in a ``.tflite`` file's bytes; ContractError if absent."""
    if not model:
        raise ContractError(f"{source}: empty file (0 bytes), not a model")
    try:
        if len(model) < 8 or model[4:8] != b"TFL3":
            if model[:4] == b"PK\x03\x04" or model[:8] == b"\x89HDF\r\n\x1a\n":  # .keras (zip), .h5
                raise ContractError(
                    f"{source}: a Keras model, not a TFLite flatbuffer; the device runs the converted "
                    "model: edge-convert it to .tflite first"
                )
            raise ContractError(f"{source}: not a TFLite flatbuffer (no 'TFL3' identifier)")
        root = _deref(model, 0)
        meta_field = _table_field(model, root, 6)
        buffers_field = _table_field(model, root, 4)
        if meta_field is None or buffers_field is None:
            raise ContractError(f"{source}: carries no Stampline metadata; convert it with edge-convert")
        metas, n_meta = _vector(model, meta_field)
        bufs, n_bufs = _vector(model, buffers_field)
        for i in range(n_meta):
            entry = _deref(model, metas + 4 * i)
            name_pos = _table_field(model, entry, 0)
            if name_pos is None:
                continue
            s, n = _vector(model, name_pos)
            if model[s : s + n].decode("utf-8", "replace") != METADATA_NAME:
                continue
            buf_pos = _table_field(model, entry, 1)
            index = struct.unpack_from("<I", model, buf_pos)[0] if buf_pos else 0
            if index >= n_bufs:
                raise ContractError(f"{source}: metadata points at buffer {index} of {n_bufs}")
            buffer = _deref(model, bufs + 4 * index)
            data_pos = _table_field(model, buffer, 0)
            if data_pos is not None:
                d, dn = _vector(model, data_pos)
                return ModelMetadata.from_json(model[d : d + dn], source)
            off_pos, size_pos = _table_field(model, buffer, 1), _table_field(model, buffer, 2)
            if off_pos and size_pos:
                off = struct.unpack_from("<Q", model, off_pos)[0]
                size = struct.unpack_from("<Q", model, size_pos)[0]
                return ModelMetadata.from_json(model[off : off + size], source)
            raise ContractError(f"{source}: metadata buffer is empty")
    except (struct.error, IndexError):
        raise ContractError(f"{source}: corrupt TFLite flatbuffer") from None
    raise ContractError(f"{source}: carries no Stampline metadata; convert it with edge-convert")


def decode_outputs(outputs: Mapping[str, np.ndarray], meta: ModelMetadata) -> Prediction:
    """Float outputs of one image, by name -> a Prediction. Shared by every model runner."""
    presence = float(np.clip(np.asarray(outputs[PRESENCE], dtype=np.float32).reshape(-1)[0], 0, 1))
    box = center = label = scores = heatmap = None
    if CELLS in outputs and CELLS in meta.outputs:
        cells = np.asarray(outputs[CELLS], dtype=np.float32)
        size = round(cells.size**0.5)
        heatmap = (1.0 / (1.0 + np.exp(-cells.reshape(size, size)))).astype(np.float32)
        box, center = decode_grid(
            cells,
            outputs[CELL_BOXES] if CELL_BOXES in meta.outputs else None,
            outputs[CELL_OFFSETS] if CELL_OFFSETS in meta.outputs else None,
        )
    if BOX in outputs and BOX in meta.outputs:
        box = tuple(np.clip(np.asarray(outputs[BOX], dtype=np.float32).reshape(4), 0.0, 1.0))
    if CENTER in outputs and CENTER in meta.outputs:
        center = tuple(np.clip(np.asarray(outputs[CENTER], dtype=np.float32).reshape(2), 0.0, 1.0))
    if HEATMAP in outputs and HEATMAP in meta.outputs:
        heatmap = np.asarray(outputs[HEATMAP], dtype=np.float32)
        heatmap = heatmap.reshape(heatmap.shape[-2:])
        center = heatmap_peak(heatmap)
    if CLASS in outputs and CLASS in meta.outputs:
        probs = np.asarray(outputs[CLASS], dtype=np.float32).reshape(-1)
        scores = tuple(float(p) for p in probs)
        label = label_of(meta.labels, probs)
    elif len(meta.labels) == 1:
        label = meta.labels[0]
    return Prediction(
        presence=presence, box=box, center=center, label=label, class_scores=scores, heatmap=heatmap
    )
