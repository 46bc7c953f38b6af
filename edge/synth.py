"""Synthetic training data: a customer's stamp composited onto product surfaces.

Pure numpy + OpenCV, so the runtime's demo production line can use it too. Everything random is
drawn from an explicit ``numpy.random.Generator`` (OpenCV's own generator is never used), so
``Synthesizer.sample_at(seed, index)`` gives the same image in every process.

A sample is made like a frame on a real line: a product surface (procedural or a photo), perhaps
a distractor mark that is *not* the stamp, the stamp itself (scale, rotation, perspective tilt,
opacity, uneven or partial inking, ink colour shift and blur, multiply-like blending with the
surface, sometimes cut by the image edge), then the camera (shadow gradient, defocus and motion
blur, sensor noise, white balance, brightness, contrast, gamma, JPEG).

Box convention: pixel ``x_min, y_min, x_max, y_max`` with the maxima exclusive, i.e. the box of
pixel columns ``[x_min, x_max)`` and rows ``[y_min, y_max)``. It is the tight extent of the pixels
whose final stamp alpha exceeds :data:`BOX_ALPHA_THRESHOLD`, after the geometry, clipping by the
image edge, partial imprint and ink blur. The camera effects that follow (lighting, noise, JPEG,
defocus and motion blur) do not move it; motion blur may smear ink up to half its length (at
most ``motion_blur[1]`` of the image's longer side) past it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing
import multiprocessing.pool
import numbers
import signal
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from edge.contract import INPUT_SHAPE, prepare_input
from edge.datasets import (
    IMAGE_EXTENSIONS,
    decode_image,
    hidden_file,
    image_files,
    incomplete,
    unread_photos,
    unread_photos_line,
)
from edge.files import listed

__all__ = [
    "BOX_ALPHA_THRESHOLD",
    "DEFAULT_CONFIG",
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "Backgrounds",
    "Stamp",
    "SynthConfig",
    "SynthSample",
    "Synthesizer",
    "composite",
    "default_stamp",
    "generate_arrays",
    "key_out_background",
    "load_stamp",
    "load_stamps",
    "procedural_background",
    "synth_pool",
    "variant_stamps",
    "worker_synthesizer",
    "write_stamps",
]

#: a stamp pixel counts as visible (inside the box) when its final alpha exceeds this
BOX_ALPHA_THRESHOLD = 0.2

PathLike = str | Path
Box = tuple[float, float, float, float]
_log = logging.getLogger(__name__)


# -- configuration ----------------------------------------------------------------------------------

# field -> (lowest allowed, highest allowed, integer?); ranges must also be ordered (lo <= hi)
_RANGES: dict[str, tuple[float, float, bool]] = {
    "scale": (0.01, 2.0, False),
    "image_size": (32, 8192, True),
    "aspect": (0.1, 10.0, False),
    "rotation": (-360.0, 360.0, False),
    "tilt": (0.0, 70.0, False),
    "opacity": (0.05, 1.0, False),
    "fade": (0.0, 1.0, False),
    "ink_multiply": (0.0, 1.0, False),
    "ink_blur": (0.0, 10.0, False),
    "blur": (0.0, 10.0, False),
    "motion_blur": (0.0, 0.1, False),
    "brightness": (-128.0, 128.0, False),
    "contrast": (0.1, 5.0, False),
    "gamma": (0.1, 5.0, False),
    "shadow": (0.0, 0.95, False),
    "noise": (0.0, 50.0, False),
    "jpeg_quality": (1, 100, True),
    "framed_fill": (0.2, 1.0, False),
}
# field -> (lowest, highest) for single numbers
_SCALARS: dict[str, tuple[float, float]] = {
    "negative_share": (0.0, 1.0),
    "distractor_share": (0.0, 1.0),
    "positive_distractor_share": (0.0, 1.0),
    "min_contrast": (0.0, 765.0),
    "cut_share": (0.0, 1.0),
    "min_visible": (0.05, 1.0),
    "fade_share": (0.0, 1.0),
    "partial_share": (0.0, 1.0),
    "ink_shift": (0.0, 0.5),
    "blur_share": (0.0, 1.0),
    "motion_blur_share": (0.0, 1.0),
    "white_balance": (0.0, 0.5),
    "shadow_share": (0.0, 1.0),
    "jpeg_share": (0.0, 1.0),
    "framed_share": (0.0, 1.0),
}


@dataclass(frozen=True)
class SynthConfig:
    """How samples vary. ``*_share`` fields are probabilities, ``(lo, hi)`` fields ranges drawn from.

    Content
        ``negative_share``  share of samples without the stamp.
        ``distractor_share``  of the negatives, the share carrying a distractor mark (another seal,
            a rectangular stamp, text or a scribble in a colour family unlike the stamp's).
        ``positive_distractor_share``  of the positives, the share that also carry one.
        ``min_contrast``  a stamp whose well-inked pixels (alpha above half its peak) change the
            surface by less than this (mean of |dB| + |dG| + |dR|) is placed again, on a new
            surface every other try (a red stamp on red packaging would teach the model to
            guess); 0 accepts all.
    Geometry (of the stamp, and of distractors)
        ``scale``  the size of the stamp's ink as a fraction of the image's shorter side: the
            side of a square of the same area as its (unrotated) box, so the longer side of a
            round or square stamp, and sqrt(3) times it for a 3:1 one (log-uniform; shrunk when a
            rotated, tilted stamp would not fit).
        ``image_size``  the output image's longer side, px (log-uniform); ``aspect`` its
            width / height (log-uniform).
        ``cut_share``  share of stamps partly cut by the image edge, keeping at least
            ``min_visible`` of the ink inside.
        ``rotation``  degrees, any angle by default; ``tilt`` tilt of the stamped surface against
            the camera, degrees, seen from close by (perspective) or afar (affine), half each.
    Ink
        ``opacity``  ink opacity; ``fade_share``/``fade``  share and strength of uneven inking
            (a smooth random field); ``partial_share``  share of partial imprints (a missing side,
            a missing band or dry speckles; the box covers what is left).
        ``ink_shift``  per-channel gain and desaturation of the ink colour (relative, +-).
        ``ink_multiply``  mix between normal (0) and multiply (1) blending with the surface.
        ``ink_blur``  Gaussian sigma of the imprint's edges, px (below 0.5: none).
    Camera
        ``blur_share``/``blur``  defocus, Gaussian sigma px; ``motion_blur_share``/``motion_blur``
            motion blur length as a fraction of the image's longer side.
        ``brightness`` (added, grey levels), ``contrast`` (gain around mid-grey), ``gamma``,
            ``white_balance`` (per-channel gain, relative +-, on a quarter of the images).
        ``shadow_share``/``shadow``  a shadow gradient or edge, darkening at its deepest point.
        ``noise``  sensor noise sigma, grey levels (rounded to whole levels).
        ``jpeg_share``/``jpeg_quality``  JPEG re-compression at this quality.
    Framing
        ``framed_share``  share of images where the product does not fill the view: it is shrunk
            to ``framed_fill`` of the image (per side) and placed off-centre on a conveyor belt
            (plain or textured, any colour) with a shadow band along two of its edges -- what a
            station camera sees around a product.
    """

    negative_share: float = 0.3
    distractor_share: float = 0.5
    positive_distractor_share: float = 0.1
    scale: tuple[float, float] = (0.2, 0.65)
    image_size: tuple[int, int] = (160, 640)
    aspect: tuple[float, float] = (0.6, 1.8)
    min_contrast: float = 60.0
    cut_share: float = 0.15
    min_visible: float = 0.6
    rotation: tuple[float, float] = (-180.0, 180.0)
    tilt: tuple[float, float] = (0.0, 40.0)
    opacity: tuple[float, float] = (0.6, 1.0)
    fade_share: float = 0.5
    fade: tuple[float, float] = (0.2, 0.6)
    partial_share: float = 0.25
    ink_shift: float = 0.15
    ink_multiply: tuple[float, float] = (0.0, 0.8)
    ink_blur: tuple[float, float] = (0.0, 1.2)
    blur_share: float = 0.3
    blur: tuple[float, float] = (0.4, 1.6)
    motion_blur_share: float = 0.15
    motion_blur: tuple[float, float] = (0.004, 0.015)
    brightness: tuple[float, float] = (-35.0, 35.0)
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma: tuple[float, float] = (0.7, 1.5)
    white_balance: float = 0.1
    shadow_share: float = 0.4
    shadow: tuple[float, float] = (0.15, 0.6)
    noise: tuple[float, float] = (0.0, 8.0)
    jpeg_share: float = 0.4
    jpeg_quality: tuple[int, int] = (35, 95)
    framed_share: float = 0.4
    framed_fill: tuple[float, float] = (0.6, 0.97)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SCALARS:
                lo, hi = _SCALARS[f.name]
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
                    raise ValueError(
                        f"SynthConfig.{f.name}: expected a number in [{lo}, {hi}], got {value!r}"
                    )
                object.__setattr__(self, f.name, float(value))
                continue
            lo, hi, integer = _RANGES[f.name]
            kind = "whole numbers" if integer else "numbers"
            try:
                pair = tuple(value)
            except TypeError:
                pair = ()
            if len(pair) != 2 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in pair
            ):
                raise ValueError(f"SynthConfig.{f.name}: expected a pair (lo, hi) of {kind}, got {value!r}")
            if integer and not all(float(v).is_integer() for v in pair):
                raise ValueError(f"SynthConfig.{f.name}: expected a pair (lo, hi) of {kind}, got {value!r}")
            if not (lo <= pair[0] <= pair[1] <= hi):
                raise ValueError(f"SynthConfig.{f.name}: expected {lo} <= lo <= hi <= {hi}, got {value!r}")
            cast = int if integer else float
            object.__setattr__(self, f.name, (cast(pair[0]), cast(pair[1])))


DEFAULT_CONFIG = SynthConfig()
#: the training recipe, narrowed to what a fixed station camera sees: stamps fully on the
#: product, moderate size and tilt, light camera effects (the line adds its own per frame)
STATION_CONFIG = SynthConfig(
    scale=(0.22, 0.45),
    cut_share=0.0,
    tilt=(0.0, 25.0),
    blur_share=0.05,
    motion_blur_share=0.0,
    brightness=(-15.0, 15.0),
    contrast=(0.85, 1.15),
    gamma=(0.85, 1.2),
    shadow_share=0.2,
    shadow=(0.1, 0.3),
    noise=(0.0, 3.0),
    jpeg_share=0.3,
    jpeg_quality=(70, 95),
)
#: named recipes for edge-train/edge-convert --recipe
RECIPES = {"default": DEFAULT_CONFIG, "station": STATION_CONFIG}


# -- typed values -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Stamp:
    """A stamp design: its label and its image, HxWx4 uint8 in OpenCV order (B, G, R, alpha)."""

    label: str
    rgba: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"Stamp.label: expected a non-empty name, got {self.label!r}")
        img = self.rgba
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 4:
            got = f"{img.shape} {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"Stamp {self.label!r}: expected an HxWx4 uint8 image (BGR + alpha), got {got}")
        if min(img.shape[:2]) < 4 or not np.any(img[..., 3] > BOX_ALPHA_THRESHOLD * 255):
            raise ValueError(
                f"Stamp {self.label!r}: nothing visible (alpha <= {BOX_ALPHA_THRESHOLD} everywhere)"
            )

    @cached_property
    def _ink(self) -> _Ink:
        return _Ink.prepare(self.rgba)


@dataclass(frozen=True, eq=False)
class SynthSample:
    """One synthetic image and its truth. ``box`` is in pixels, see the module docstring."""

    image: np.ndarray
    box: Box | None
    label: str | None
    distractor: bool

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("SynthSample.image: expected HxWx3 uint8")
        if (self.box is None) != (self.label is None):
            raise ValueError(f"SynthSample: box and label go together, got {self.box!r} and {self.label!r}")
        if self.box is not None:
            h, w = img.shape[:2]
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise ValueError(f"SynthSample.box: expected inside the {w}x{h} image, got {self.box!r}")


# -- small helpers -----------------------------------------------------------------------------------


_worker_synth: Synthesizer | None = None


def _start_worker(synth: Synthesizer) -> None:
    global _worker_synth
    cv2.setNumThreads(1)
    # the parent's signal handlers came with the fork. The parent stops the run (Ctrl-C and a closed
    # terminal reach the whole group); the pool ends its workers with SIGTERM at every end, not only
    # a stop, and a worker whose inherited handler caught it could go on or die holding the task
    # queue's lock, hanging the parent for good (edge-train under its SIGTERM handler did)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_synth = synth


def worker_synthesizer() -> Synthesizer:
    """The synthesizer of a worker process of :func:`synth_pool`."""
    if _worker_synth is None:
        raise RuntimeError("worker_synthesizer: only in a worker of synth_pool")
    return _worker_synth


@contextlib.contextmanager
def synth_pool(synth: Synthesizer, workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """A pool of ``workers`` forked processes whose tasks get ``synth`` from
    :func:`worker_synthesizer`. OpenCV's thread pool is not fork-safe: once it has run in this
    process (resizing a large photo, say), a forked child that touches it can hang for good, so the
    workers are forked while OpenCV has one thread (no pool for them to inherit)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context("fork").Pool(
            workers, initializer=_start_worker, initargs=(synth,)
        ) as pool:
            yield pool
    finally:
        cv2.setNumThreads(threads)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    if lo >= hi:
        return float(lo)
    if lo <= 0:
        return float(rng.uniform(lo, hi))
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(pair[0]) if pair[0] >= pair[1] else float(rng.uniform(pair[0], pair[1]))


@functools.cache
def _noise_bank() -> np.ndarray:
    """Gaussian noise (sigma 32) to crop from, int8: drawing fresh normals per image costs ~3 ms."""
    rng = np.random.default_rng(0x5EED)
    bank = rng.standard_normal((1024, 2048), dtype=np.float32) * 32.0
    return np.clip(np.round(bank), -127, 127).astype(np.int8)


@functools.cache
def _sensor_banks(sigma: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise of ``sigma`` grey levels split into its positive and negative parts, uint8: adding one
    and subtracting the other is 2x faster than a saturating int8 + uint8 addition."""
    bank = (_noise_bank().astype(np.int16) * sigma + 16) >> 5  # * sigma / 32, rounded
    return np.maximum(bank, 0).astype(np.uint8), np.maximum(-bank, 0).astype(np.uint8)


def _crop_at(rng: np.random.Generator, banks: Sequence[np.ndarray], h: int, w: int) -> list[np.ndarray]:
    """The same random HxW window of each bank (tiled if the bank is too small)."""
    bh, bw = banks[0].shape
    if h > bh or w > bw:
        banks = [np.tile(b, (h // bh + 1, w // bw + 1)) for b in banks]
        bh, bw = banks[0].shape
    y = int(rng.integers(0, bh - h + 1))
    x = int(rng.integers(0, bw - w + 1))
    return [b[y : y + h, x : x + w] for b in banks]


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An HxW int8 view of Gaussian noise (sigma 32) at a random place in the bank."""
    return _crop_at(rng, [_noise_bank()], h, w)[0]


def _read_any(path: Path, flags: int) -> np.ndarray | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return decode_image(data, flags) if data else None


def _hsv(bgr: tuple[float, float, float]) -> tuple[float, float, float]:
    px = np.clip(np.array([[bgr]], dtype=np.float32), 0, 255).astype(np.uint8)
    h, s, v = cv2.cvtColor(px, cv2.COLOR_BGR2HSV)[0, 0]
    return float(h), float(s), float(v)


def _hue_distance(a: float, b: float) -> float:
    """Circular distance of two OpenCV hues (0..180)."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


# -- the stamp, prepared for compositing -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Ink:
    """A stamp cropped to its ink, premultiplied, as a pyramid of halvings; and its colour family."""

    levels: tuple[np.ndarray, ...]  # premultiplied BGRA uint8, level 0 = full resolution
    hues: tuple[float, ...]  # OpenCV hues (0..180) of its chromatic ink
    neutral: bool  # a good part of the ink is black/grey
    spread: float  # sqrt(longer / shorter side) of the ink's box: 1 for a round or square stamp

    @classmethod
    def prepare(cls, rgba: np.ndarray) -> _Ink:
        alpha = rgba[..., 3]
        ys, xs = np.nonzero(alpha > 8)
        if ys.size == 0:
            ys, xs = np.nonzero(alpha)
        y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, alpha.shape[0])
        x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, alpha.shape[1])
        crop = rgba[y0:y1, x0:x1]
        a16 = crop[..., 3:4].astype(np.uint16)
        pre = np.empty_like(crop)
        pre[..., :3] = ((crop[..., :3].astype(np.uint16) * a16 + 127) // 255).astype(np.uint8)
        pre[..., 3] = crop[..., 3]
        levels = [pre]
        while max(levels[-1].shape[:2]) > 24:
            h, w = levels[-1].shape[:2]
            levels.append(cv2.resize(levels[-1], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
        hues, neutral = _colour_family(crop)
        ink_h, ink_w = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        return cls(tuple(levels), hues, neutral, math.sqrt(max(ink_h, ink_w) / min(ink_h, ink_w)))

    def level_for(self, longer_px: float) -> np.ndarray:
        """The smallest level whose longer side is at least ``longer_px`` (bilinear then aliases little)."""
        for level in reversed(self.levels):
            if max(level.shape[:2]) >= longer_px:
                return level
        return self.levels[0]


def _colour_family(rgba: np.ndarray) -> tuple[tuple[float, ...], bool]:
    small = rgba
    if max(rgba.shape[:2]) > 96:
        f = 96 / max(rgba.shape[:2])
        small = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    ink = small[small[..., 3] > 128][:, :3]
    if ink.shape[0] == 0:
        ink = small[small[..., 3] > 0][:, :3]
    hsv = cv2.cvtColor(ink.reshape(1, -1, 3), cv2.COLOR_BGR2HSV)[0].astype(np.float32)
    chroma = (hsv[:, 1] >= 70) & (hsv[:, 2] >= 60)
    neutral = bool((~chroma).mean() >= 0.3)
    hues: list[float] = []
    if chroma.any():
        hist = np.bincount((hsv[chroma, 0] // 10).astype(int).clip(0, 17), minlength=18)
        hues = [b * 10.0 + 5.0 for b in np.flatnonzero(hist >= 0.15 * hist.sum())]
    return tuple(hues), neutral


# -- procedural stamps -----------------------------------------------------------------------------

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
)
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def _text_strip(text: str, height: float, font: int, weight: float) -> np.ndarray:
    """``text`` rendered white on black, cap height about ``height`` px, cropped to the ink."""
    thickness = max(1, round(height * weight))
    scale = cv2.getFontScaleFromHeight(font, max(4, round(height)), thickness)
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 2
    strip = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(strip, text, (pad, pad + th), font, scale, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(strip)
    if ys.size == 0:
        return strip
    return strip[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _ring(mask: np.ndarray, c: float, r: float, width: float) -> None:
    cv2.circle(
        mask,
        (round(c * _ONE), round(c * _ONE)),
        round(r * _ONE),
        255,
        max(1, round(width)),
        cv2.LINE_AA,
        _SHIFT,
    )


def _star(mask: np.ndarray, cx: float, cy: float, r: float, points: int = 5, inner: float = 0.45) -> None:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, r, r * inner)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [np.round(pts * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)


def _check(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
    pts = np.array([[-0.55, 0.0], [-0.15, 0.4], [0.6, -0.45]]) * r + [cx, cy]
    cv2.polylines(
        mask,
        [np.round(pts * _ONE).astype(np.int32)],
        False,
        255,
        max(2, round(r * 0.22)),
        cv2.LINE_AA,
        _SHIFT,
    )


def _arc_text(
    mask: np.ndarray,
    text: str,
    c: float,
    r_in: float,
    r_out: float,
    font: int,
    *,
    bottom: bool,
    max_span: float,
) -> float:
    """Bend ``text`` along the band ``r_in..r_out`` (top arc clockwise, bottom upright); its span."""
    band = r_out - r_in
    strip = _text_strip(text, band * 0.95, font, 0.12)
    hs, ws = strip.shape
    r_mid = (r_in + r_out) / 2
    span = min(ws / hs * band / r_mid, max_span)
    size = mask.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - c, yy - c
    r = np.sqrt(dx * dx + dy * dy)
    phi = np.arctan2(dy, dx)
    if bottom:
        start = np.pi / 2 + span / 2
        u = np.mod(start - phi, 2 * np.pi) / span * ws
        v = (r - r_in) / band * hs
    else:
        start = -np.pi / 2 - span / 2
        u = np.mod(phi - start, 2 * np.pi) / span * ws
        v = (r_out - r) / band * hs
    outside = (u > ws) | (v < -1) | (v > hs)
    u[outside] = -10
    bent = cv2.remap(strip, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR, borderValue=0)
    np.maximum(mask, bent, out=mask)
    return span


def _paste_centered(mask: np.ndarray, part: np.ndarray, cx: float, cy: float) -> None:
    h, w = part.shape
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    sx0, sy0 = max(0, -x0), max(0, -y0)
    x0c, y0c = max(x0, 0), max(y0, 0)
    x1c, y1c = min(x0 + w, mask.shape[1]), min(y0 + h, mask.shape[0])
    if x1c <= x0c or y1c <= y0c:
        return
    region = mask[y0c:y1c, x0c:x1c]
    np.maximum(region, part[sy0 : sy0 + (y1c - y0c), sx0 : sx0 + (x1c - x0c)], out=region)


def _seal_mask(size: int, text: str, style: np.random.Generator) -> np.ndarray:
    """A round seal's ink coverage: double ring, curved or straight text, star or check in the middle."""
    s = float(size)
    mask = np.zeros((size, size), np.uint8)
    c = (s - 1) / 2
    radius = 0.485 * s
    w_outer = max(2.0, s * style.uniform(0.025, 0.05))
    _ring(mask, c, radius - w_outer / 2, w_outer)
    gap = s * style.uniform(0.02, 0.04)
    w_inner = max(1.0, s * style.uniform(0.008, 0.018))
    r_band_out = radius - w_outer - gap
    _ring(mask, c, r_band_out - w_inner / 2, w_inner)
    font = _FONTS[int(style.integers(len(_FONTS)))]
    mark = "star" if style.random() < 0.55 else "check"
    if style.random() < 0.7:  # curved text in a band inside the double ring
        band = s * style.uniform(0.11, 0.15)
        r_text_out = r_band_out - w_inner - s * 0.02
        r_text_in = r_text_out - band
        span = _arc_text(
            mask, text.upper(), c, r_text_in, r_text_out, font, bottom=False, max_span=np.radians(300)
        )
        if span < np.radians(200):  # room left below: a row of small stars
            r_mid = (r_text_in + r_text_out) / 2
            for k in (-1, 0, 1):
                a = np.pi / 2 + k * np.radians(22)
                _star(mask, c + r_mid * np.cos(a), c + r_mid * np.sin(a), band * 0.38)
        r_c = r_text_in - s * 0.03
        if style.random() < 0.6:
            _ring(mask, c, r_c, max(1.0, w_inner))
            r_c -= s * 0.04
        if mark == "star":
            _star(mask, c, c, r_c * 0.75, int(style.integers(5, 9)), style.uniform(0.38, 0.5))
        else:
            _check(mask, c, c, r_c * 0.8)
    else:  # straight text across the middle between two rules, mark above, small stars below
        r_c = r_band_out - w_inner - s * 0.03
        text_h = s * style.uniform(0.09, 0.12)
        strip = _text_strip(text.upper(), text_h, font, 0.14)
        max_w = 2 * r_c * 0.9
        if strip.shape[1] > max_w:
            strip = cv2.resize(strip, (round(max_w), strip.shape[0]), interpolation=cv2.INTER_AREA)
        _paste_centered(mask, strip, c, c)
        half = strip.shape[0] / 2 + s * 0.035
        for y in (c - half, c + half):
            dx = math.sqrt(max(r_c * r_c - (y - c) ** 2, 0.0)) * 0.92
            cv2.line(
                mask,
                (round((c - dx) * _ONE), round(y * _ONE)),
                (round((c + dx) * _ONE), round(y * _ONE)),
                255,
                max(1, round(w_inner * 1.5)),
                cv2.LINE_AA,
                _SHIFT,
            )
        above = c - half - (r_c - half) * 0.5
        mark_r = (r_c - half) * 0.42
        if mark == "star":
            _star(mask, c, above, mark_r)
        else:
            _check(mask, c, above, mark_r)
        below = c + half + (r_c - half) * 0.45
        for k in (-1, 0, 1):
            _star(mask, c + k * mark_r * 1.6, below, mark_r * 0.45)
    return mask


def default_stamp(
    size: int = 256, text: str = "QC PASSED", color_bgr: Sequence[int] = (40, 40, 200)
) -> np.ndarray:
    """A procedural round seal (HxWx4 uint8, BGR + alpha): double ring, curved or straight ``text``,
    a star or a check in the middle. The layout follows from ``text``, so different texts (and
    colours) give different-looking seals."""
    if int(size) < 32:
        raise ValueError(f"default_stamp: expected size >= 32, got {size!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"default_stamp: expected a non-empty text, got {text!r}")
    color = tuple(int(v) for v in color_bgr)
    if len(color) != 3 or not all(0 <= v <= 255 for v in color):
        raise ValueError(f"default_stamp: expected color_bgr as 3 values in 0..255, got {color_bgr!r}")
    style = np.random.default_rng(zlib.crc32(text.strip().upper().encode("utf-8")))
    mask = _seal_mask(int(size), text.strip(), style)
    rgba = np.empty((int(size), int(size), 4), np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = mask
    return rgba


def _fit_width(strip: np.ndarray, max_w: float) -> np.ndarray:
    """``strip`` shrunk (keeping its aspect) to at most ``max_w`` wide."""
    h, w = strip.shape
    if w <= max_w:
        return strip
    f = max_w / w
    return cv2.resize(strip, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _rect_badge_mask(size: int, text: str) -> np.ndarray:
    """A rectangular stamp (2:1): a thick and a thin border, a check mark, then the text."""
    w, h = int(size), int(size) // 2
    mask = np.zeros((h, w), np.uint8)
    t = max(2, round(h * 0.07))
    cv2.rectangle(mask, (t // 2, t // 2), (w - 1 - t // 2, h - 1 - t // 2), 255, t, cv2.LINE_AA)
    inset = t + max(2, round(h * 0.05))
    thin = max(1, round(t / 3))
    cv2.rectangle(mask, (inset, inset), (w - 1 - inset, h - 1 - inset), 255, thin, cv2.LINE_AA)
    r = h * 0.26
    check_x = inset + h * 0.08 + r
    _check(mask, check_x, h / 2, r)
    left = check_x + r * 0.8
    strip = _text_strip(text.upper(), h * 0.3, cv2.FONT_HERSHEY_DUPLEX, 0.15)
    room = w - inset - h * 0.08 - left
    strip = _fit_width(strip, room)
    _paste_centered(mask, strip, left + room / 2, h / 2)
    return mask


def _hexagon_badge_mask(size: int, text: str) -> np.ndarray:
    """A hexagonal stamp: two hexagon outlines, the text across the middle between two rules,
    a star above and three dots below."""
    s = float(size)
    mask = np.zeros((int(size), int(size)), np.uint8)
    c = (s - 1) / 2
    angles = np.radians(np.arange(6) * 60.0)  # flat sides top and bottom

    def hexagon(radius: float, width: float) -> None:
        pts = np.stack([c + radius * np.cos(angles), c + radius * np.sin(angles)], axis=1)
        cv2.polylines(
            mask,
            [np.round(pts * _ONE).astype(np.int32)],
            True,
            255,
            max(1, round(width)),
            cv2.LINE_AA,
            _SHIFT,
        )

    w_outer = s * 0.045
    radius = 0.49 * s - w_outer / 2
    hexagon(radius, w_outer)
    inner = radius - w_outer / 2 - s * 0.04
    hexagon(inner, s * 0.012)
    apothem = inner * math.sqrt(3) / 2
    strip = _fit_width(_text_strip(text.upper(), s * 0.11, cv2.FONT_HERSHEY_TRIPLEX, 0.14), 1.45 * inner)
    _paste_centered(mask, strip, c, c)
    half = strip.shape[0] / 2 + s * 0.04
    for y in (c - half, c + half):
        dx = inner * 0.72
        cv2.line(
            mask,
            (round((c - dx) * _ONE), round(y * _ONE)),
            (round((c + dx) * _ONE), round(y * _ONE)),
            255,
            max(1, round(s * 0.015)),
            cv2.LINE_AA,
            _SHIFT,
        )
    _star(mask, c, c - (half + apothem) / 2, (apothem - half) * 0.42, 5, 0.42)
    below = c + (half + apothem) / 2
    for k in (-1, 0, 1):
        cv2.circle(
            mask,
            (round((c + k * s * 0.08) * _ONE), round(below * _ONE)),
            round(s * 0.022 * _ONE),
            255,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    return mask


#: procedural stamp variants for multi-variant lines: label, text, shape, ink colour (BGR).
#: The first is :func:`default_stamp` itself; each differs from the others in shape, text and
#: colour family (red, blue, green, black, purple, orange).
VARIANTS: tuple[tuple[str, str, str, tuple[int, int, int]], ...] = (
    ("qc-passed", "QC PASSED", "seal", (40, 40, 200)),
    ("inspected", "INSPECTED", "rect", (170, 90, 20)),
    ("approved", "APPROVED", "hexagon", (40, 120, 20)),
    ("released", "RELEASED", "seal", (35, 35, 35)),
    ("grade-a", "GRADE A", "rect", (150, 40, 120)),
    ("final-check", "FINAL CHECK", "hexagon", (20, 110, 220)),
)
DEFAULT_VARIANTS = 3


def variant_stamps(n: int = DEFAULT_VARIANTS, size: int = 256) -> list[Stamp]:
    """The first ``n`` procedural stamp variants (:data:`VARIANTS`), labelled; deterministic.

    ``size`` is the longer side in pixels (a rectangular stamp is half as tall)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= len(VARIANTS):
        raise ValueError(f"variant_stamps: expected 1 to {len(VARIANTS)} variants, got {n!r}")
    if int(size) < 32:
        raise ValueError(f"variant_stamps: expected size >= 32, got {size!r}")
    stamps = []
    for label, text, shape, colour in VARIANTS[: int(n)]:
        if shape == "seal":
            rgba = default_stamp(int(size), text, colour)
        else:
            mask = (
                _rect_badge_mask(int(size), text) if shape == "rect" else _hexagon_badge_mask(int(size), text)
            )
            rgba = np.empty((*mask.shape, 4), np.uint8)
            rgba[..., :3] = colour
            rgba[..., 3] = mask
        stamps.append(Stamp(label, rgba))
    return stamps


def write_stamps(stamps: Sequence[Stamp], folder: PathLike, overwrite: bool = False) -> list[Path]:
    """Write stamps as PNGs with transparency named ``<label>.png`` (what :func:`load_stamps`
    reads back, labels from the file stems). Refuses to replace a file unless ``overwrite``, and
    refuses a folder holding other images (``load_stamps`` would take them for more variants)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"stamp folder {out}: exists and is not a folder")
    names = {f"{s.label}.png" for s in stamps}
    if len(names) != len(stamps):
        raise ValueError(f"stamp labels must be unique, got {[s.label for s in stamps]}")
    if out.is_dir():
        others = [p.name for p in image_files(out, recursive=False) if p.name not in names]
        if others:
            raise ValueError(
                f"stamp folder {out}: holds other images (e.g. {others[0]!r}) that would be taken for "
                "more variants; use an empty folder"
            )
        existing = sorted(n for n in names if (out / n).exists())
        if existing and not overwrite:
            raise ValueError(f"stamp folder {out}: {existing[0]} exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stamp in stamps:
        path = out / f"{stamp.label}.png"
        ok, buf = cv2.imencode(".png", stamp.rgba)
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode the stamp")
        path.write_bytes(buf.tobytes())
        paths.append(path)
    return paths


# -- distractor marks (not the stamp) ---------------------------------------------------------------

_WORDS = (
    "RECEIVED", "ORIGINAL", "COPY", "PAID", "CHECKED", "FRAGILE", "EXPORT", "SAMPLE", "VOID",
    "URGENT", "DRAFT", "ARCHIVE", "RETURN", "BATCH 07", "LOT 4821", "HANDLE WITH CARE", "THIS SIDE UP",
    "PRIORITY", "CUSTOMS", "TOP", "NET WT 500g", "MADE IN EU", "KEEP DRY", "SCANNED", "FILED",
)  # fmt: skip
_INKS_BGR = (
    (35, 35, 35), (70, 70, 70), (110, 40, 30), (190, 90, 20), (40, 30, 190), (70, 20, 150),
    (60, 130, 30), (120, 120, 20), (150, 40, 120), (110, 30, 80), (30, 60, 110), (20, 110, 220),
)  # fmt: skip


def _random_text(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return str(_WORDS[int(rng.integers(len(_WORDS)))])
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789abcdefghijkmnoprstuvwxyz-./:"
    n = int(rng.integers(4, 14))
    chars = [alphabet[i] for i in rng.integers(0, len(alphabet), n)]
    if n > 6:
        chars[int(rng.integers(2, n - 2))] = " "
    return "".join(chars)


def _other_seal_mask(size: int, text: str, rng: np.random.Generator) -> np.ndarray:
    """A round seal laid out unlike :func:`default_stamp`'s: one ring (or a ring of dots), the
    text repeated all around, a number or a bar across the middle, no star or check."""
    s = float(size)
    mask = np.zeros((size, size), np.uint8)
    c = (s - 1) / 2
    radius = 0.485 * s
    if rng.random() < 0.3:  # a ring of dots
        n = int(rng.integers(28, 48))
        for k in range(n):
            a = 2 * np.pi * k / n
            cv2.circle(
                mask,
                (round((c + (radius - 3) * np.cos(a)) * _ONE), round((c + (radius - 3) * np.sin(a)) * _ONE)),
                round(2.5 * _ONE),
                255,
                -1,
                cv2.LINE_AA,
                _SHIFT,
            )
        r_out = radius - 8
    else:
        width = max(2.0, s * rng.uniform(0.015, 0.06))
        _ring(mask, c, radius - width / 2, width)
        r_out = radius - width - s * 0.02
    band = s * rng.uniform(0.12, 0.17)
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    words = f"{text} * "
    circumference = 2 * np.pi * (r_out - band / 2)
    strip = _text_strip(words, band * 0.95, font, 0.12)
    repeats = max(1, round(circumference / max(strip.shape[1] * band / strip.shape[0], 1.0)))
    _arc_text(
        mask, (words * repeats).strip(), c, r_out - band, r_out, font, bottom=False, max_span=np.radians(350)
    )
    r_in = r_out - band - s * 0.03
    if rng.random() < 0.5:
        _ring(mask, c, r_in, max(1.0, s * 0.01))
    middle = (
        f"{int(rng.integers(10, 9999))}"
        if rng.random() < 0.6
        else str(_WORDS[int(rng.integers(len(_WORDS)))])
    )
    strip = _text_strip(middle, s * rng.uniform(0.1, 0.16), font, 0.13)
    if strip.shape[1] > 1.6 * r_in:
        strip = cv2.resize(strip, (round(1.6 * r_in), strip.shape[0]), interpolation=cv2.INTER_AREA)
    _paste_centered(mask, strip, c, c)
    if rng.random() < 0.5:
        y = c + strip.shape[0] * 0.9
        cv2.line(
            mask,
            (round(c - r_in * 0.6), round(y)),
            (round(c + r_in * 0.6), round(y)),
            255,
            max(1, round(s * 0.015)),
            cv2.LINE_AA,
        )
    return mask


def _rect_mask(rng: np.random.Generator) -> np.ndarray:
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    lines = [_text_strip(str(_WORDS[int(rng.integers(len(_WORDS)))]), rng.uniform(26, 40), font, 0.12)]
    if rng.random() < 0.6:
        day, month, year = rng.integers(1, 29), rng.integers(1, 13), rng.integers(18, 30)
        lines.append(_text_strip(f"{day:02d}.{month:02d}.20{year}", rng.uniform(16, 26), font, 0.1))
    gap, margin = 8, int(rng.integers(12, 22))
    width = max(line.shape[1] for line in lines) + 2 * margin
    height = sum(line.shape[0] for line in lines) + gap * (len(lines) - 1) + 2 * margin
    mask = np.zeros((height, width), np.uint8)
    y = margin
    for line in lines:
        _paste_centered(mask, line, width / 2, y + line.shape[0] / 2)
        y += line.shape[0] + gap
    t = int(rng.integers(3, 7))
    cv2.rectangle(mask, (t // 2, t // 2), (width - 1 - t // 2, height - 1 - t // 2), 255, t, cv2.LINE_AA)
    if rng.random() < 0.5:
        inset = t + 4
        cv2.rectangle(mask, (inset, inset), (width - 1 - inset, height - 1 - inset), 255, 1, cv2.LINE_AA)
    return mask


def _text_mask(rng: np.random.Generator) -> np.ndarray:
    fonts = (*_FONTS, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)
    font = fonts[int(rng.integers(len(fonts)))]
    if rng.random() < 0.3:
        font |= cv2.FONT_ITALIC
    strips = [
        _text_strip(_random_text(rng), rng.uniform(18, 34), font, rng.uniform(0.05, 0.14))
        for _ in range(int(rng.integers(1, 4)))
    ]
    width = max(s.shape[1] for s in strips) + 8
    height = sum(s.shape[0] + 10 for s in strips) + 8
    mask = np.zeros((height, width), np.uint8)
    y = 4
    for s in strips:
        mask[y : y + s.shape[0], 4 : 4 + s.shape[1]] = s
        y += s.shape[0] + 10
    return mask


def _scribble_mask(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 14))
    steps = rng.normal(0.0, 1.0, (n, 2)) * [1.0, 0.6] + [1.2, 0.0]
    pts = np.cumsum(steps, axis=0).astype(np.float32).reshape(n, 1, 2)
    pts = cv2.resize(pts, (1, n * 12), interpolation=cv2.INTER_CUBIC).reshape(-1, 2)
    pts -= pts.min(axis=0)
    pts *= 200.0 / max(float(pts.max()), 1e-3)
    pts += 8
    w, h = int(pts[:, 0].max()) + 10, int(pts[:, 1].max()) + 10
    mask = np.zeros((max(h, 24), max(w, 24)), np.uint8)
    cv2.polylines(
        mask,
        [np.round(pts * _ONE).astype(np.int32)],
        False,
        255,
        int(rng.integers(2, 6)),
        cv2.LINE_AA,
        _SHIFT,
    )
    return mask


@functools.cache
def _distractor_pool() -> tuple[Stamp, ...]:
    """Fixed marks that are not the stamp (same in every process): seals, rectangles, text, scribbles."""
    rng = np.random.default_rng(0xD157)
    masks = []
    for i in range(12):
        seal = _other_seal_mask(160, str(_WORDS[(i * 7) % len(_WORDS)]), rng)
        if i % 3 == 0:  # oval seals
            seal = cv2.resize(seal, (round(160 * rng.uniform(1.3, 1.7)), 160), interpolation=cv2.INTER_LINEAR)
        masks.append(seal)
    masks += [_rect_mask(rng) for _ in range(12)]
    masks += [_text_mask(rng) for _ in range(12)]
    masks += [_scribble_mask(rng) for _ in range(12)]
    pool = []
    for i, mask in enumerate(masks):
        rgba = np.full((*mask.shape, 4), 255, np.uint8)
        rgba[..., 3] = mask
        pool.append(Stamp(f"distractor{i}", rgba))
    return tuple(pool)


@functools.cache
def _ink_families() -> tuple[tuple[tuple[int, int, int], float, bool], ...]:
    out = []
    for bgr in _INKS_BGR:
        h, s, v = _hsv(bgr)
        out.append((bgr, h, s < 70 or v < 60))
    return tuple(out)


def _distractor_inks(stamps: Sequence[Stamp]) -> tuple[tuple[int, int, int], ...]:
    """Ink colours from another colour family than every stamp's (hue >= 50 degrees away)."""
    hues = [h for s in stamps for h in s._ink.hues]
    neutral = any(s._ink.neutral for s in stamps)
    allowed = [
        bgr
        for bgr, hue, is_neutral in _ink_families()
        if (not neutral if is_neutral else all(_hue_distance(hue, h) >= 25 for h in hues))
    ]
    if not allowed:  # every family is taken: the chromatic inks furthest from the stamps'
        scored = [
            (min((_hue_distance(hue, h) for h in hues), default=90.0), bgr)
            for bgr, hue, n in _ink_families()
            if not n
        ]
        best = max(score for score, _ in scored)
        allowed = [bgr for score, bgr in scored if score == best]
    return tuple(allowed)


# -- compositing --------------------------------------------------------------------------------


def _projected_corners(
    w: int, h: int, longer: float, theta: float, tilt: float, axis: float, distance: float, stretch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Source corners of a ``w`` x ``h`` image and where they land (around the origin)."""
    src = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float64)
    k = longer / max(w, h)
    p = (src - [(w - 1) / 2, (h - 1) / 2]) * k * [stretch, 1.0 / stretch]
    c, s = math.cos(theta), math.sin(theta)
    x, y = p[:, 0] * c - p[:, 1] * s, p[:, 0] * s + p[:, 1] * c
    # tilt the stamped plane by `tilt` about the in-plane axis at angle `axis`, then project
    ax, ay = math.cos(axis), math.sin(axis)
    dot = x * ax + y * ay
    ct, st = math.cos(tilt), math.sin(tilt)
    px, py = x * ct + ax * dot * (1 - ct), y * ct + ay * dot * (1 - ct)
    pz = (ax * y - ay * x) * st
    if math.isinf(distance):
        return src.astype(np.float32), np.stack([px, py], axis=1)
    d = distance * longer
    f = d / (d + pz)
    return src.astype(np.float32), np.stack([px * f, py * f], axis=1)


def _imprint_factor(rng: np.random.Generator, cfg: SynthConfig, alpha: np.ndarray) -> np.ndarray | None:
    """Uneven or partial inking as a multiplicative HxW float32 field, or None for a clean imprint.

    The fields are smooth, so they are computed on a coarse grid and upsampled (4x fewer pixels).
    """
    h, w = alpha.shape
    factor = None
    if rng.random() < cfg.fade_share:
        coarse = rng.random((int(rng.integers(3, 8)),) * 2, dtype=np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        factor = 1.0 - _uniform(rng, cfg.fade) * field
    if rng.random() < cfg.partial_share:
        kind = rng.random()
        if kind < 0.6:  # a missing side (uneven pressure) or a missing band across
            ang = rng.uniform(0, 2 * np.pi)
            ca, sa = math.cos(ang), math.sin(ang)
            x, y, bw, bh = cv2.boundingRect(alpha)
            ends = [
                x * ca + y * sa,
                (x + bw) * ca + y * sa,
                x * ca + (y + bh) * sa,
                (x + bw) * ca + (y + bh) * sa,
            ]
            lo, ext = min(ends), max(max(ends) - min(ends), 1.0)
            gh, gw = (h + 3) // 4, (w + 3) // 4
            d = np.add.outer(
                np.arange(gh, dtype=np.float32) * (4 * sa), np.arange(gw, dtype=np.float32) * (4 * ca)
            )
            soft = ext * rng.uniform(0.05, 0.3)
            if kind < 0.35:
                edge = lo + ext * rng.uniform(0.15, 0.45)
                part = np.clip((d - edge) / soft + 0.5, 0.0, 1.0)
            else:
                mid = lo + ext * rng.uniform(0.25, 0.75)
                part = 1.0 - rng.uniform(0.6, 1.0) * np.exp(-(((d - mid) / soft) ** 2))
        else:  # dry ink: speckles of missing ink
            n = cv2.GaussianBlur(_noise(rng, (h + 1) // 2, (w + 1) // 2).astype(np.float32), (3, 3), 0.7)
            sd = float(n.std()) + 1e-3
            part = np.clip((n - sd * rng.uniform(-1.6, 0.2)) / (0.6 * sd) + 0.5, 0.0, 1.0)
        part = cv2.resize(part.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        factor = part if factor is None else factor * part
    if factor is None:
        return None
    sub = alpha[::4, ::4].astype(np.float32)  # enough to judge how much ink is left
    before, after = float(sub.sum()), float((sub * factor[::4, ::4]).sum())
    if before > 0 and after < 0.4 * before:  # keep most of the imprint: soften the damage
        k = 0.6 * before / max(before - after, 1e-6)
        factor = 1.0 - (1.0 - factor) * min(k, 1.0)
    return factor


#: 8-bit alpha above this is visible, i.e. alpha > BOX_ALPHA_THRESHOLD
_ALPHA8_VISIBLE = round(BOX_ALPHA_THRESHOLD * 255)


def _paint(
    image: np.ndarray,
    stamp: Stamp,
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    center: tuple[float, float] | None = None,
    scale: float | None = None,
    color: tuple[int, int, int] | None = None,
    allow_cut: bool = True,
) -> tuple[Box | None, float]:
    """Paint ``stamp`` into ``image`` in place with every ink and geometric variation.

    Returns its box (None if nothing is visible) and its contrast: the mean over its well-inked
    pixels (alpha above half its peak) of the summed |change| of B, G, R.
    """
    ink = stamp._ink
    H, W = image.shape[:2]
    frac = _loguniform(rng, *cfg.scale) if scale is None else float(scale)
    # sized by area: a 3:1 text stamp as large as a round seal of the same ink box area, so it is
    # not a few pixels tall where the seal is well seen (its longer side: frac * sqrt(3))
    longer = max(frac * min(H, W) * ink.spread, 4.0)
    theta = math.radians(_uniform(rng, cfg.rotation))
    tilt = math.radians(_uniform(rng, cfg.tilt))
    axis = rng.uniform(0, math.pi)
    # camera distance in stamp sizes; half the time far enough to be affine (orthographic)
    distance = rng.uniform(1.5, 5.0) if rng.random() < 0.5 else math.inf
    stretch = math.exp(rng.uniform(-0.06, 0.06))
    for _ in range(4):
        level = ink.level_for(longer)
        src, dst = _projected_corners(
            level.shape[1], level.shape[0], longer, theta, tilt, axis, distance, stretch
        )
        bw, bh = np.ptp(dst, axis=0)
        if center is not None or (bw <= W and bh <= H):
            break
        longer *= 0.97 * min(W / bw, H / bh)
    sigma = _uniform(rng, cfg.ink_blur)
    pad = math.ceil(2 * sigma) + 2
    local = dst - dst.min(axis=0) + pad
    if center is None:  # a random sub-pixel phase; the integer place is chosen below
        local += rng.random(2)
    else:  # the corners' mean on `center`: integer part by placement, the rest by the warp
        shift = np.asarray(center, np.float64) - local.mean(axis=0)
        ox, oy = (int(v) for v in np.floor(shift))
        local += shift - np.floor(shift)
    local = local.astype(np.float32)
    pw = math.ceil(float(local[:, 0].max())) + pad + 1
    ph = math.ceil(float(local[:, 1].max())) + pad + 1
    if math.isinf(distance):  # affine: 2-3x faster than a perspective warp
        m = cv2.getAffineTransform(src[:3], local[:3])
        patch = cv2.warpAffine(level, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    else:
        m = cv2.getPerspectiveTransform(src, local)
        patch = cv2.warpPerspective(
            level, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )

    # where the patch goes: its top-left corner (ox, oy) in the image
    alpha = cv2.extractChannel(patch, 3)
    if center is None:
        ox, oy = _place(rng, cfg, alpha, W, H, allow_cut)

    # the ink, premultiplied 8-bit BGRA: opacity and imprint in one multiplication, then blur
    opacity = _uniform(rng, cfg.opacity)
    factor = _imprint_factor(rng, cfg, alpha)
    if factor is not None:
        f8 = cv2.convertScaleAbs(factor, alpha=255.0 * opacity)
        patch = cv2.multiply(patch, cv2.merge([f8, f8, f8, f8]), scale=1 / 255)
    elif opacity < 0.998:
        patch = cv2.convertScaleAbs(patch, alpha=opacity)
    if sigma > 0.5:  # below that the bilinear warp is soft enough
        k = 2 * math.ceil(2 * sigma) + 1
        patch = cv2.GaussianBlur(patch, (k, k), sigma)

    # clip to the image, measure the box, colour, blend (normal <-> multiply) in 8 bits
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + pw, W), min(oy + ph, H)
    if x1 <= x0 or y1 <= y0:
        return None, 0.0
    part = patch[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    a = cv2.extractChannel(part, 3)
    vx, vy, vw, vh = cv2.boundingRect(cv2.threshold(a, _ALPHA8_VISIBLE, 255, cv2.THRESH_BINARY)[1])
    if color is not None:  # one ink colour: premultiplied colour = colour * alpha, by table
        ramp = np.arange(256, dtype=np.float32) / 255.0
        pre = cv2.merge([cv2.LUT(a, np.round(ramp * c).astype(np.uint8)) for c in color])
    else:
        pre = cv2.cvtColor(part, cv2.COLOR_BGRA2BGR)
        if cfg.ink_shift > 0:  # per-channel gain and some desaturation
            gains = np.exp(rng.uniform(-cfg.ink_shift, cfg.ink_shift, 3))
            desat = rng.uniform(0, cfg.ink_shift)
            shift = gains[:, None] * ((1 - desat) * np.eye(3) + desat / 3.0)
            pre = cv2.transform(pre, shift.astype(np.float32))
    region = image[y0:y1, x0:x1]
    keep = cv2.multiply(region, cv2.bitwise_not(cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)), scale=1 / 255)
    multiply = _uniform(rng, cfg.ink_multiply)
    if multiply > 0.005:  # ink * surface: the surface's texture and tone show through the ink
        pre = cv2.multiply(
            pre, cv2.convertScaleAbs(region, alpha=multiply, beta=(1 - multiply) * 255), scale=1 / 255
        )
    out = cv2.add(keep, pre)
    _, peak, _, _ = cv2.minMaxLoc(a)
    solid = cv2.threshold(a, max(peak * 0.5, _ALPHA8_VISIBLE), 255, cv2.THRESH_BINARY)[1]
    contrast = float(sum(cv2.mean(cv2.absdiff(out, region), mask=solid)[:3]))
    region[...] = out
    if vw == 0 or vh == 0:
        return None, contrast
    return (float(x0 + vx), float(y0 + vy), float(x0 + vx + vw), float(y0 + vy + vh)), contrast


def _place(
    rng: np.random.Generator, cfg: SynthConfig, alpha: np.ndarray, W: int, H: int, allow_cut: bool
) -> tuple[int, int]:
    """Top-left corner for a patch: fully inside, or (``cut_share``) cut by an edge with at least
    ``min_visible`` of its ink inside."""
    ax0, ay0, bw, bh = cv2.boundingRect(alpha)
    ax1, ay1 = ax0 + bw, ay0 + bh

    def inside(lo: int, ext: int, size: int) -> int:
        if ext >= size:
            return -lo + (size - ext) // 2
        return -lo + int(rng.integers(0, size - ext + 1))

    ox, oy = inside(ax0, bw, W), inside(ay0, bh, H)
    if allow_cut and rng.random() < cfg.cut_share:
        side = int(rng.integers(0, 4))
        cut = rng.uniform(0.1, 0.45)
        cx, cy = ox, oy
        if side == 0:
            cx = -ax0 - round(cut * bw)
        elif side == 1:
            cx = W - ax1 + round(cut * bw)
        elif side == 2:
            cy = -ay0 - round(cut * bh)
        else:
            cy = H - ay1 + round(cut * bh)
        total = cv2.sumElems(alpha)[0]
        kx0, ky0 = max(cx, 0) - cx, max(cy, 0) - cy
        kx1, ky1 = min(cx + alpha.shape[1], W) - cx, min(cy + alpha.shape[0], H) - cy
        kept = cv2.sumElems(alpha[ky0:ky1, kx0:kx1])[0] if kx1 > kx0 and ky1 > ky0 else 0.0
        if kept >= cfg.min_visible * total:
            ox, oy = cx, cy
    return ox, oy


def composite(
    surface_bgr: np.ndarray,
    stamp: Stamp,
    rng: np.random.Generator,
    config: SynthConfig = DEFAULT_CONFIG,
    *,
    center: tuple[float, float] | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, Box | None]:
    """Paint one stamp with all ink and geometric variations onto a copy of ``surface_bgr``.

    ``center``: where the stamp's centre goes, pixels (default: random, fully inside or, for
    ``config.cut_share`` of calls, partly cut by an edge). ``scale``: its size as a fraction of the
    surface's shorter side, as ``SynthConfig.scale`` (default: drawn from ``config.scale``).
    Returns the image and the box of the stamp's visible pixels (see the module docstring), None
    if nothing is visible.
    """
    img = np.asarray(surface_bgr)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"composite: expected an HxWx3 uint8 BGR surface, got {img.shape} {img.dtype}")
    if scale is not None and not 0 < scale <= 10:
        raise ValueError(f"composite: expected scale in (0, 10], got {scale!r}")
    out = img.copy()
    box, _ = _paint(out, stamp, rng, config, center=center, scale=scale)
    return out, box


# -- loading stamps --------------------------------------------------------------------------------

_EXPECTED_STAMP = "expected a PNG with transparency, or a JPG/PNG of the stamp on a plain background"
#: A stamp narrower than this (its ink, px) is warned about: composites would enlarge it.
MIN_STAMP_SIDE = 64
#: A stamp PNG whose most opaque ink (99th percentile of its alpha) is below this share of full
#: opacity has its alpha scaled up to full strength.
SEMI_TRANSPARENT = 0.9
#: Stamp pictures are shrunk to this longer side first (composites are 160-640 px by default).
MAX_STAMP_PICTURE = 2048


@dataclass(frozen=True)
class _Keyed:
    """One key-out: the image with alpha, and what the fitted background was like."""

    rgba: np.ndarray
    background_lab: np.ndarray  # the background's median colour, CIE Lab (L 0-100)
    spread: float  # 90th percentile of the sampled pixels' distance from the fitted plane (Lab)
    kept: float  # share of the sampled pixels that fit the plane
    noise: float  # 99th percentile of the distance of the pixels that fit it: the background's grain
    soft: float  # the share of the outline of what the plane leaves that is soft (_soft_share)


def _key_out(
    img: np.ndarray, sample: np.ndarray, region: np.ndarray | None = None, relight: bool = False
) -> _Keyed:
    """Key out a plain background whose colour plane (it may have a lighting gradient) is fitted
    robustly to the pixels of ``sample``; alpha is 0 outside ``region`` (default: everywhere kept).
    ``relight``: where the plane leaves soft-edged areas that are not ink (vignetting, a shadow),
    correct it for the uneven lighting (:func:`_with_lighting`)."""
    h, w = img.shape[:2]
    ys, xs = np.nonzero(sample)
    step = max(1, ys.size // 6000)
    ys, xs = ys[::step], xs[::step]
    vals = img[ys, xs].astype(np.float64)
    design = np.stack([np.ones_like(xs, np.float64), xs / w, ys / h], axis=1)
    # robust plane fit: start from the median colour (ink may cover up to half the samples), then
    # refit on the pixels near the current plane
    resid = np.linalg.norm(vals - np.median(vals, axis=0), axis=1)
    keep = resid <= np.median(resid) * 2.0 + 2.0
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], vals[keep], rcond=None)
        resid = np.linalg.norm(vals - design @ coef, axis=1)
        keep = resid <= float(np.median(resid[keep])) * 3.0 + 2.0
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    coef = coef.astype(np.float32)
    bg = coef[0] + (gx / w)[..., None] * coef[1] + (gy / h)[..., None] * coef[2]
    bg = np.clip(bg, 0, 255)
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lab_bg = cv2.cvtColor(bg / 255.0, cv2.COLOR_BGR2Lab)
    dist = np.linalg.norm(lab - lab_bg, axis=2)
    sampled = dist[ys, xs]
    noise = float(np.percentile(sampled[keep], 99))  # the background's own spread
    t0 = max(noise * 1.2, 6.0)
    soft = _soft_share(dist if region is None else np.where(region, dist, 0), t0)
    lit = _with_lighting(img, bg, t0, region) if relight and soft >= SOFT_SHARE else None
    if lit is not None:
        bg = lit
        lab_bg = cv2.cvtColor(bg / 255.0, cv2.COLOR_BGR2Lab)
        dist = np.linalg.norm(lab - lab_bg, axis=2)
    inside = dist > t0 if region is None else (dist > t0) & region
    ink = dist[inside]
    if ink.size == 0:
        raise ValueError("nothing is left after keying out the background")
    strong = ink[ink > np.percentile(ink, 30)]  # empty when the ink is one flat colour
    t1 = max(t0 + 6.0, 0.7 * float(np.median(strong if strong.size else ink)))
    alpha = np.clip((dist - t0) / (t1 - t0), 0.0, 1.0)
    if region is not None:
        alpha[~region] = 0.0
    solid = alpha >= 0.5
    if solid.sum() < 16:
        raise ValueError("nothing is left after keying out the background")
    a3 = np.maximum(alpha, 1e-3)[..., None]
    colour = np.clip(bg + (img.astype(np.float32) - bg) / a3, 0, 255)
    colour[~solid] = np.median(colour[solid], axis=0)
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = np.round(colour)
    rgba[..., 3] = np.round(alpha * 255)
    return _Keyed(
        rgba,
        np.median(lab_bg[ys, xs][keep], axis=0),
        float(np.percentile(sampled, 90)),
        float(keep.mean()),
        noise,
        soft,
    )


#: Lighting (a phone's vignetting, a hand's shadow, a blown-out corner) is estimated on the
#: picture shrunk to this longer side, by a median over a window of a sixth of it ...
LIGHTING_SIDE = 128
#: ... and a region where that median departs from the fitted plane counts as ink, not light,
#: when the departure rises this steeply at its outline (median CIE Lab change per pixel at
#: LIGHTING_SIDE; measured: vignetting, shadows, blown-out corners 0.1-2.5, solid ink 8-11).
LIGHTING_EDGE = 4.0


#: The plane is corrected for uneven lighting when at least this share of the outline of what it
#: leaves (CIE Lab distance over 1.2 x its noise threshold) is soft: the distance rising by less
#: than a tenth of that threshold per pixel. Measured: scans 0-0.11 (0.10-0.11: kraft fibres, a
#: thin-lined seal; the correction leaves such pictures as they were), phone photos with
#: vignetting, a shadow or a blown-out corner 0.25-1.0.
SOFT_SHARE = 0.08


def _soft_share(dist: np.ndarray, t0: float) -> float:
    """The share of the outline of ``dist > 1.2 t0`` where ``dist`` changes slowly: the edge of
    light and shade rather than of ink."""
    slopes, _ = _outline_slopes(dist, dist > 1.2 * t0)
    return float((slopes < 0.1 * t0).mean()) if slopes.size else 0.0


def _outline_slopes(dist: np.ndarray, mask: np.ndarray, reach: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How steeply ``dist`` (smoothed) changes per pixel on the outline of ``mask``, away from the
    picture's edge (the steepest within ``reach`` pixels); and the smoothed ``dist``."""
    mask = mask.astype(np.uint8)
    outline = (mask > 0) & ~(cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0)
    outline[:3, :] = outline[-3:, :] = outline[:, :3] = outline[:, -3:] = False
    smooth = cv2.GaussianBlur(dist.astype(np.float32), (0, 0), 2.0)
    dx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    slope = np.hypot(dx, dy)
    if reach:
        slope = cv2.dilate(slope, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    return slope[outline] / 8.0, smooth


def _with_lighting(
    img: np.ndarray, plane: np.ndarray, t0: float, region: np.ndarray | None
) -> np.ndarray | None:
    """The background ``plane`` (HxWx3 float BGR) corrected for uneven lighting, or None when the
    lighting is even. A median filter over a wide window estimates the paper's colour around
    each pixel (strokes of ink are thinner than the window); where that estimate departs from
    the plane, the region is light and shade if the departure rises gently at its outline, and
    ink (a solid badge, a sheet or card on a desk) if it rises in a step: there the plane is kept."""
    h, w = img.shape[:2]
    scale = LIGHTING_SIDE / max(h, w)
    if scale >= 1.0:
        return None
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    src = img if region is None else np.where(region[..., None], img, np.round(plane).astype(np.uint8))
    small = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
    k = 2 * (LIGHTING_SIDE // 12) + 1
    median = cv2.medianBlur(small, k)
    local = cv2.GaussianBlur(median, (5, 5), 0).astype(np.float32)
    plane_small = cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
    lab_median = cv2.cvtColor(median.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lab_plane = cv2.cvtColor(plane_small / 255.0, cv2.COLOR_BGR2Lab)
    # how far the median departs from the plane: smoothly under light and shade, in a step at the
    # edge of solid ink (a median keeps edges)
    departs = np.linalg.norm(lab_median - lab_plane, axis=2)
    apart = departs > t0
    if not apart.any():
        return None
    edge = (
        np.hypot(cv2.Sobel(departs, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(departs, cv2.CV_32F, 0, 1, ksize=3))
        / 8
    )
    n, labels = cv2.connectedComponents(apart.astype(np.uint8), connectivity=8)
    light = np.ones(apart.shape, np.float32)
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    for k in range(1, n):
        part = _holes_filled(labels == k).astype(np.uint8)
        outline = (cv2.dilate(part, ring) > 0) & ~(cv2.erode(part, ring) > 0)
        outline[0, :] = outline[-1, :] = outline[:, 0] = outline[:, -1] = False  # the picture's edge
        if outline.any() and float(np.median(edge[outline])) > LIGHTING_EDGE:
            light[cv2.dilate(part, grow) > 0] = 0.0
    weight = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    local_full = cv2.resize(local, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(plane + weight * (local_full - plane), 0, 255)


def _without_edge_strips(alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``alpha`` without the thin strips along the edges of the picture that a scanner's lid or a
    crop leaves (long, at most a tenth of the picture deep, along one edge or around a corner,
    enclosing nothing as a frame would): they are not ink. A strip in the stamp's ink colour (a
    letter or an underline of a stamp cropped tight) stays unless it runs along nine tenths of
    the edge. ``colour``: the un-mixed BGR colour of the ink."""
    h, w = alpha.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats((alpha > 0).astype(np.uint8), connectivity=8)
    deep_y, deep_x = int(0.1 * h), int(0.1 * w)
    found = _stamp_mark(alpha, colour)
    ink_lab = None if found is None else found[3]
    out = alpha
    for k in range(1, n):
        x, y, bw, bh = stats[k, :4]
        along_side = (x == 0 or x + bw == w) and bw <= 0.1 * w and bh >= 0.3 * h
        along_top = (y == 0 or y + bh == h) and bh <= 0.1 * h and bw >= 0.3 * w
        around_corner = False
        if not (along_side or along_top) and (x == 0 or y == 0 or x + bw == w or y + bh == h):
            part = labels[y : y + bh, x : x + bw] == k
            inside = part[max(0, deep_y - y) : h - deep_y - y, max(0, deep_x - x) : w - deep_x - x]
            long = bw >= 0.3 * w or bh >= 0.3 * h
            hollow = _holes_filled(part).sum() > 1.5 * part.sum()  # a frame around something
            around_corner = long and inside.sum() <= 0.02 * part.sum() and not hollow
        if not (along_side or along_top or around_corner):
            continue
        solid = (labels == k) & (alpha >= 128)
        whole_edge = bh >= 0.9 * h or bw >= 0.9 * w
        if ink_lab is not None and solid.any() and not whole_edge:
            if np.linalg.norm(_median_lab(colour[solid]) - ink_lab) < SPECK_CONTRAST:
                continue  # the stamp's own ink, cut by the crop
        out = out.copy() if out is alpha else out
        out[labels == k] = 0
    return out


def _stamp_mark(
    alpha: np.ndarray, colour: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray] | None:
    """The marks (alpha > BOX_ALPHA_THRESHOLD) as (labels, stats without the background row, the
    index in stats of the largest mark clear of the picture's edge: the stamp's, its ink colour
    in CIE Lab from the median of its solid pixels); None if every mark touches the edge or the
    stamp's has no solid pixel. ``colour``: the un-mixed BGR colour of the ink."""
    h, w = alpha.shape
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (alpha > BOX_ALPHA_THRESHOLD * 255).astype(np.uint8)
    )
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    clear = ~((x == 0) | (y == 0) | (x + bw == w) | (y + bh == h))
    if not clear.any():
        return None
    k = int(np.flatnonzero(clear)[np.argmax(area[clear])])
    solid = (labels == k + 1) & (alpha >= 128)
    return (labels, stats[1:], k, _median_lab(colour[solid])) if solid.any() else None


def _holes_filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled (everything the outside cannot reach)."""
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    flood = pad.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (pad[1:-1, 1:-1] > 0) | (flood[1:-1, 1:-1] == 0)


#: A stamp picture whose background's grain (99th percentile of its distance from the fitted
#: colour plane, CIE Lab) exceeds this is refused: plain paper, cards and desks measured 1-10,
#: photos of products and animals 10-46.
BUSY_BACKGROUND = 15.0
#: A sheet's edge band must fit its colour plane this closely (90th percentile, CIE Lab) ...
SHEET_SPREAD = 10.0
#: ... and the ink found on it must be this much darker than the sheet, or differ this much from
#: the colour around the sheet (else it is the surrounding background showing through a solid
#: stamp's cut-out letters).
SHEET_INK_CONTRAST = 15.0
#: A sheet is solid: its own pixels cover at least this share of its outline (a stamp's ring or
#: frame around plain paper covers a few per cent).
SHEET_FILL = 0.5


def _soft_outline(img: np.ndarray, part: np.ndarray, around_lab: np.ndarray) -> bool:
    """Whether the outline of ``part`` (away from the picture's edge) is mostly soft: the colour
    distance from ``around_lab`` changes there by less than SOFT_OUTLINE of its step per pixel (a
    sheet's edge by about a sixth, after the smoothing)."""
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    dist = np.linalg.norm(lab - around_lab, axis=2)
    # the steepest within 2 px: a thin shadow line along a sheet's edge peaks on the outline
    slopes, smooth = _outline_slopes(dist, part, reach=2)
    if not slopes.size:
        return False
    step = float(np.median(smooth[part]))
    return float(np.median(slopes)) < SOFT_OUTLINE * step


#: See :func:`_soft_outline`. Measured: sheets and cards on desks 0.13-0.18 (a white sheet on a
#: white table 0.05), the edge of shade on a phone photo of a page 0.008.
SOFT_OUTLINE = 0.03


def _key_out_sheet(img: np.ndarray, solid: np.ndarray, around_lab: np.ndarray | None) -> _Keyed | None:
    """The stamp on a plain sheet that the first key-out kept whole (a sheet of paper photographed
    on a desk, an opaque white square in a PNG): the sheet's largest solid part, if its edge band
    is one plain colour and it holds a smaller mark of another colour, keyed out again with that
    band as the background. None if the solid part does not look like such a sheet.

    ``around_lab``: the colour around the sheet (None for a PNG's transparency: then the marks must
    be darker than the sheet, as ink is on paper of any colour)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid.astype(np.uint8), connectivity=8)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    bw, bh = stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]
    if min(bw, bh) < 32:
        return None
    filled = _holes_filled(labels == k)
    if stats[k, cv2.CC_STAT_AREA] < SHEET_FILL * filled.sum():
        return None  # mostly hollow: a ring or frame of the stamp drawn around plain paper
    if around_lab is not None and _soft_outline(img, filled, around_lab):
        return None  # the paper in shade (or in a glare), not a sheet on something else
    # The band whose colour is the sheet's: past the sheet's own edge, where a photo has shadow and
    # blur. A PNG's cut is clean past its anti-aliasing and the ink may come close to it (a disc cut
    # tight around a seal's ring): there the band just inside the cut is tried first.
    margins = [max(2, round(0.03 * min(bw, bh)))]
    if around_lab is None:
        margins.insert(0, 1)
    for margin in margins:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))
        inner = cv2.erode(filled.astype(np.uint8), kernel) > 0
        band = inner & ~(cv2.erode(inner.astype(np.uint8), kernel) > 0)
        if band.sum() < 64:
            continue
        try:
            keyed = _key_out(img, band, region=inner, relight=True)
        except ValueError:  # nothing on it
            if around_lab is not None and _lightness(img, band) > around_lab[0] + SHEET_INK_CONTRAST:
                raise ValueError("the picture shows a blank sheet: no stamp on it") from None
            return None
        if keyed.spread <= SHEET_SPREAD and keyed.kept >= 0.9:
            break
    else:
        return None  # the band is not one plain colour: a ring or a frame of the stamp itself
    marks = keyed.rgba[..., 3] >= 128
    if not marks.any() or (solid & ~filled).sum() > marks.sum():
        return None  # more ink outside than on it: a strip of desk below the stamped paper
    if around_lab is not None:
        lightness = _lab(img).reshape((*img.shape[:2], 3))[..., 0]
        if ((lightness < around_lab[0] - SHEET_INK_CONTRAST) & ~filled).sum() > marks.sum():
            # more ink darker than the desk outside it than on it: not a sheet but the paper inside
            # a seal's ring, lit more than the corners (a close-cropped phone photo's lens shade)
            return None
    if around_lab is None:
        # ink is darker than the paper it is on; a solid badge's cut-out letters are lighter
        return keyed if _lightness(img, marks) <= keyed.background_lab[0] - SHEET_INK_CONTRAST else None
    if marks.sum() > 0.5 * inner.sum():
        return None  # most of it differs from the band: a stamp with a thick frame
    mark_lab = _median_lab(img[marks])
    if mark_lab[0] <= keyed.background_lab[0] - SHEET_INK_CONTRAST:
        return keyed  # darker than the sheet, as ink is on paper (black ink on a black desk too)
    return keyed if np.linalg.norm(mark_lab - around_lab) >= SHEET_INK_CONTRAST else None


def key_out_background(image_bgr: np.ndarray) -> np.ndarray:
    """A stamp photographed or scanned on a plain background -> HxWx4 BGRA with the background keyed out.

    The background is a colour plane (it may have a lighting gradient) fitted robustly to the
    border pixels; alpha rises softly with the colour distance (CIE Lab) from it, from the
    border's noise level to about the ink's typical distance, so faded ink stays partly
    transparent. The ink colour is un-mixed from the background where alpha >= 0.5. Thin strips
    along an edge (a scanner's lid) are dropped, and a plain sheet kept whole (paper photographed
    on a desk) is keyed out again on its own colour (:func:`_key_out_sheet`; a sheet of nearly
    the desk's colour is looked for by its lightness, :func:`_lighter_part`); else uneven light
    is corrected (:func:`_with_lighting`). Then what touches the picture's edge in another colour
    than the stamp (a desk), sensor noise, the paper's specks and fibres, and print in another
    colour apart from a stamp in coloured ink (a form's text) are dropped.
    """
    img = np.asarray(image_bgr)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 8:
        raise ValueError(
            f"key_out_background: expected an HxWx3 uint8 image of at least 8x8, got {img.shape}"
        )
    h, w = img.shape[:2]
    b = max(2, round(0.03 * min(h, w)))
    border = np.zeros((h, w), bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    keyed = _key_out(img, border)
    keyed.rgba[..., 3] = _without_edge_strips(keyed.rgba[..., 3], keyed.rgba[..., :3])
    solid = keyed.rgba[..., 3] >= 128
    inverted = False
    if solid.mean() > 0.5 and _lightness(img, solid) > keyed.background_lab[0]:
        # most of the picture lighter than its border: cropped tight, the border is the stamp's own
        # frame and the paper inside is the background
        inverse = _key_out(img, solid)
        if (inverse.rgba[..., 3] >= 128).mean() < solid.mean():
            keyed, inverted = inverse, True
            solid = keyed.rgba[..., 3] >= 128
    if not solid.any():
        raise ValueError("nothing is left after keying out the background")
    final = _key_out_sheet(img, solid, keyed.background_lab)
    if final is None and not inverted and keyed.noise <= BUSY_BACKGROUND:
        # a sheet near the plain desk's colour keys out half-opaque: found by its lightness
        try:
            final = _key_out_sheet(img, _lighter_part(img, border), keyed.background_lab)
        except ValueError:  # found blank; the stamp may be elsewhere (a picture of many shapes)
            raise ValueError(
                "the lightest part of the picture (a sheet on a desk?) shows no stamp, and the rest "
                "is not plain paper: photograph the stamp on a plain sheet, or crop to it"
            ) from None
    if final is None and not inverted and keyed.soft >= SOFT_SHARE:  # uneven light
        final = _key_out(img, border, relight=True)
        final.rgba[..., 3] = _without_edge_strips(final.rgba[..., 3], final.rgba[..., :3])
    final = final or keyed
    if final.noise > BUSY_BACKGROUND:
        raise ValueError(
            f"the background is not plain (its colour varies by {final.noise:.0f} around the border, "
            f"a plain one by less than {BUSY_BACKGROUND:.0f}): a photo of a product, not of the stamp alone?"
        )
    final.rgba[..., 3] = _without_foreign_edges(final.rgba[..., 3], final.rgba[..., :3])
    final.rgba[..., 3] = _without_noise(final.rgba[..., 3])
    final.rgba[..., 3] = _without_specks(final.rgba[..., 3], final.rgba[..., :3], img, final.background_lab)
    final.rgba[..., 3] = _without_foreign_marks(final.rgba[..., 3], final.rgba[..., :3])
    return final.rgba


#: Marks of at most this share of the picture (and 2 px) are sensor noise, dropped anywhere.
NOISE_SPECK = 1e-5
#: Marks lying wholly in this outer band of the picture (share of its shorter side) show what the
#: paper's own texture leaves (fibres, specks): a stamp is photographed with a margin ...
SPECK_BAND = 0.1
#: ... unless they have the stamp's ink colour (CIE Lab distance below this).
SPECK_CONTRAST = 15.0


@dataclass(frozen=True)
class _Layout:
    """The marks of a keyed picture around the stamp's (see :func:`_layout`)."""

    labels: np.ndarray  # connected marks (alpha > BOX_ALPHA_THRESHOLD), 0 for none
    x: np.ndarray  # each mark's box, and its area
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    area: np.ndarray
    stamp: int  # the stamp's mark: the largest clear of the picture's edge
    ink_lab: np.ndarray  # its ink colour, CIE Lab
    apart: np.ndarray  # marks whose box is apart from the stamp's by more than ``gap``
    gap: int  # px: 2 % of the picture's shorter side
    solid: np.ndarray  # alpha >= 128

    def off_colour(self, k: int, colour: np.ndarray) -> bool | None:
        """Whether mark ``k``'s solid pixels differ from the stamp's ink in colour (None: it has
        none, so no colour of its own). ``colour``: the un-mixed BGR colour of the ink."""
        part = (self.labels == k + 1) & self.solid
        if not part.any():
            return None
        return bool(np.linalg.norm(_median_lab(colour[part]) - self.ink_lab) >= SPECK_CONTRAST)


def _layout(alpha: np.ndarray, colour: np.ndarray) -> _Layout | None:
    """The marks of ``alpha`` around the stamp's (None as :func:`_stamp_mark`)."""
    found = _stamp_mark(alpha, colour)
    if found is None:
        return None
    labels, stats, s, ink_lab = found
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    gap = round(0.02 * min(alpha.shape))
    apart = (
        (x > x[s] + bw[s] + gap) | (x + bw + gap < x[s]) | (y > y[s] + bh[s] + gap) | (y + bh + gap < y[s])
    )
    return _Layout(labels, x, y, bw, bh, area, s, ink_lab, apart, gap, alpha >= 128)


def _without_foreign_edges(alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``alpha`` without what touches the picture's edge in another colour than the stamp (the
    largest mark clear of the edge) and apart from it: the desk beside the sheet in a phone's
    close-up, a wall or a table's edge, or the desk all around a sheet (a quarter of the picture
    or more, or, round a sheet that fills most of the photo, most of the picture's edge with no
    pixel near the stamp). A smaller part in another colour that reaches over the stamp's box (a
    two-colour stamp's frame cut by the crop, a signature across it) stays.
    ``colour``: the un-mixed BGR colour of the ink."""
    h, w = alpha.shape
    m = _layout(alpha, colour)
    if m is None:
        return alpha
    s, labels, gap = m.stamp, m.labels, m.gap
    edge = (m.x == 0) | (m.y == 0) | (m.x + m.w == w) | (m.y + m.h == h)
    # edge parts in another colour than the stamp: what may be dropped; and faint ones (no pixel
    # half opaque, so no colour of their own: shade at the picture's edge, vignetting on a desk)
    foreign = [int(k) for k in np.flatnonzero(edge) if m.off_colour(k, colour) is not False]
    # a desk all around a sheet that fills most of the photo (most of the picture's edge, maybe
    # in pieces cut apart by the sheet's corners) has no pixel in the stamp's box widened by the
    # gap, though its own box holds the stamp's
    near = labels[max(m.y[s] - gap, 0) : m.y[s] + m.h[s] + gap, max(m.x[s] - gap, 0) : m.x[s] + m.w[s] + gap]
    rim = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    around = np.isin(rim, [k + 1 for k in foreign]).mean() > 0.5
    drop = [
        k for k in foreign if m.apart[k] or (around and not (near == k + 1).any()) or m.area[k] > 0.25 * h * w
    ]  # apart, or a desk all around
    return np.where(np.isin(labels, [k + 1 for k in drop]), 0, alpha).astype(alpha.dtype) if drop else alpha


#: CIE Lab chroma (a, b) from which an ink is coloured (red, blue, violet, green stamps: 30-80;
#: black or grey print, a form's text, lines and tables: 0-10)
INK_CHROMA = 20.0


def _without_foreign_marks(alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``alpha`` without the marks in another colour apart from a stamp in coloured ink (the
    largest mark clear of the edge): a form's printed text above or below a red or blue seal.
    Marks reaching near the stamp stay (a signature across it, a two-colour stamp's parts), and
    so do faint ones (their colour is unknown). When the largest mark is black or grey (a form's
    table, or a black stamp) nothing is dropped: it may not be the stamp.
    ``colour``: the un-mixed BGR colour of the ink."""
    m = _layout(alpha, colour)
    if m is None or np.hypot(*m.ink_lab[1:]) < INK_CHROMA:
        return alpha
    drop = [k + 1 for k in np.flatnonzero(m.apart) if m.off_colour(int(k), colour)]
    return np.where(np.isin(m.labels, drop), 0, alpha).astype(alpha.dtype) if drop else alpha


def _lab(bgr: np.ndarray) -> np.ndarray:
    """Nx3 uint8 BGR -> Nx3 CIE Lab (L 0-100)."""
    return cv2.cvtColor(bgr.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab).reshape(-1, 3)


def _median_lab(bgr: np.ndarray) -> np.ndarray:
    """The median CIE Lab colour (per channel) of Nx3 uint8 BGR pixels."""
    return np.median(_lab(bgr), axis=0)


def _without_noise(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` without single pixels of sensor noise (marks of at most NOISE_SPECK of the
    picture): no ink is that small, and one would stretch the stamp's box."""
    h, w = alpha.shape
    marks = (alpha > BOX_ALPHA_THRESHOLD * 255).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(marks)
    noise = np.concatenate([[False], stats[1:, cv2.CC_STAT_AREA] <= max(2, NOISE_SPECK * h * w)])
    if not noise.any() or noise[1:].all():
        return alpha
    return np.where(noise[labels], 0, alpha).astype(alpha.dtype)


def _without_specks(
    alpha: np.ndarray, colour: np.ndarray, img: np.ndarray, paper_lab: np.ndarray
) -> np.ndarray:
    """``alpha`` without the paper's specks and fibres: when at least three marks lie wholly in the
    picture's outer band, in another colour than the largest mark (the stamp's), which stays out
    of it, every mark no larger than the largest of those is dropped, anywhere (unless that would
    drop more than a quarter of the ink: then they are the stamp's own), and so is every pixel
    whose colour is off the line from the paper's colour (``paper_lab``, CIE Lab) to the ink's
    (fibres touching the stamp). ``colour``: the un-mixed BGR colour of the ink; ``img``: the
    picture."""
    h, w = alpha.shape
    band = max(2, round(SPECK_BAND * min(h, w)))
    marks = (alpha > BOX_ALPHA_THRESHOLD * 255).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(marks, connectivity=8)
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    outer = (x + bw <= band) | (y + bh <= band) | (x >= w - band) | (y >= h - band)
    if outer.sum() < 3:
        return alpha
    k = int(np.argmax(area))
    if x[k] < band or y[k] < band or x[k] + bw[k] > w - band or y[k] + bh[k] > h - band:
        return alpha  # the stamp itself reaches into the band: cropped tight, its marks are ink
    solid = alpha >= 128
    specks = np.isin(labels, 1 + np.flatnonzero(outer)) & solid
    ink_lab = _median_lab(colour[(labels == k + 1) & solid])
    if specks.any() and np.linalg.norm(_median_lab(colour[specks]) - ink_lab) < SPECK_CONTRAST:
        return alpha  # the marks in the band have the stamp's ink colour: a ring of dots
    small = np.concatenate([[False], area <= area[outer].max()])
    mass = np.bincount(labels.ravel(), weights=alpha.ravel().astype(np.float64), minlength=n)
    if mass[small].sum() > 0.25 * mass[1:].sum():
        return alpha
    out = alpha.copy()
    out[small[labels]] = 0
    # fibres touching the stamp: their colour lies off the line from the paper's to the ink's
    inked = out > 0
    toward = ink_lab - paper_lab
    toward /= max(float(np.linalg.norm(toward)), 1e-6)
    rel = _lab(img[inked]) - paper_lab
    off = np.linalg.norm(rel - np.outer(rel @ toward, toward), axis=1) > SPECK_CONTRAST
    drop = np.zeros_like(inked)
    drop[inked] = off
    out[drop] = 0
    # and what that cut off them
    n, labels, stats, _ = cv2.connectedComponentsWithStats((out > BOX_ALPHA_THRESHOLD * 255).astype(np.uint8))
    small = np.concatenate([[False], stats[1:, cv2.CC_STAT_AREA] <= area[outer].max()])
    out[small[labels]] = 0
    return out


def _lighter_part(img: np.ndarray, border: np.ndarray) -> np.ndarray:
    """The lighter of two parts of ``img`` (a sheet on a desk of nearly its colour): grey levels,
    median-smoothed over 5 px (a desk's grain), above Otsu's threshold among those at least as
    light as the ``border``'s median (the desk)."""
    light = cv2.medianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 5)
    desk = np.median(light[border])
    lighter = light[light >= desk]
    if lighter.size < 64:
        return np.zeros(border.shape, bool)
    t, _ = cv2.threshold(lighter.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return light > t


def _lightness(img: np.ndarray, mask: np.ndarray) -> float:
    """The median CIE L (0-100) of ``img``'s pixels under ``mask``."""
    return float(_median_lab(img[mask])[0])


def load_stamp(path: PathLike, label: str | None = None) -> Stamp:
    """A stamp image file -> Stamp. A PNG with transparency is used as is; any other image (or a
    PNG whose alpha is fully opaque) has its plain background keyed out (:func:`key_out_background`).
    A picture larger than ``MAX_STAMP_PICTURE`` on its longer side is shrunk to it first.
    ``label`` defaults to the file stem. ValueError naming the file if it cannot be used."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"stamp image {p}: file does not exist ({_EXPECTED_STAMP})")
    if p.is_dir():
        raise ValueError(f"stamp image {p}: is a folder, expected an image file (load_stamps takes folders)")
    img = _read_any(p, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"stamp image {p}: cannot be read as an image ({_EXPECTED_STAMP})")
    if img.ndim == 2 or img.shape[2] == 3:  # no alpha: read again with its EXIF orientation applied
        # (IMREAD_UNCHANGED ignores it; a phone's photo of a stamp may be stored mirrored)
        img = _read_any(p, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if min(img.shape[:2]) < 8:
        raise ValueError(f"stamp image {p}: is {img.shape[1]}x{img.shape[0]} px, expected at least 8x8")
    big = max(img.shape[:2]) > MAX_STAMP_PICTURE
    if big and img.ndim == 3 and img.shape[2] in (2, 4) and img[..., -1].min() == 0:
        # a stamp on a large transparent canvas (an A4 page at 300 dpi): cut to what is visible
        # before shrinking, which would take the stamp's detail with the empty canvas
        ys, xs = np.nonzero(img[..., -1])
        if ys.size:
            pad = 2
            img = img[
                max(0, ys.min() - pad) : ys.max() + pad + 1, max(0, xs.min() - pad) : xs.max() + pad + 1
            ]
    if max(img.shape[:2]) > MAX_STAMP_PICTURE:  # a phone's 4000x3000 photo: 7 s to key out, 48 MB kept
        f = MAX_STAMP_PICTURE / max(img.shape[:2])
        if min(img.shape[:2]) * f < 8:  # a line, not a stamp (20000x20: it would be 2 px thin)
            raise ValueError(
                f"stamp image {p}: is {img.shape[1]}x{img.shape[0]} px, too long and thin for a stamp "
                f"(shrunk to {MAX_STAMP_PICTURE} px on its longer side it would be under 8 px on the other)"
            )
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    alpha = img[..., -1] if channels in (2, 4) else None
    colour = img[..., :-1] if alpha is not None else img
    colour = cv2.cvtColor(colour, cv2.COLOR_GRAY2BGR) if colour.shape[2] == 1 else colour[..., :3]
    if alpha is not None and alpha.min() < 255:
        if not np.any(alpha > BOX_ALPHA_THRESHOLD * 255):
            raise ValueError(
                f"stamp image {p}: its alpha channel is (almost) fully transparent ({_EXPECTED_STAMP})"
            )
        peak = float(np.percentile(alpha[alpha > 0], 99))
        if peak < SEMI_TRANSPARENT * 255:
            # exported with the layer's opacity lowered (or from a background remover): the ink at
            # full strength, as the composites fade it themselves (else fading would hide it)
            _log.warning(
                "stamp image %s: its ink is at most %d %% opaque; taken as full-strength ink "
                "(the composites vary the ink's strength themselves)",
                p,
                round(100 * peak / 255),
            )
            alpha = np.clip(alpha.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)
        rgba = np.dstack([colour, alpha])
        sheet = _key_out_sheet(np.ascontiguousarray(colour), alpha >= 128, None)
        if sheet is not None:  # an opaque white square behind the stamp
            rgba = sheet.rgba
            rgba[..., 3] = np.minimum(rgba[..., 3], alpha)
    else:
        try:
            rgba = key_out_background(np.ascontiguousarray(colour))
        except ValueError as exc:
            raise ValueError(f"stamp image {p}: {exc} ({_EXPECTED_STAMP})") from None
    name = label if label is not None else p.stem.strip()  # ("red seal .png": "red seal")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a file name in an old archive's Latin-1: it would break every label file
        raise ValueError(
            f"stamp image {p}: its name is not valid UTF-8, and the label is the file name; rename the file"
        ) from None
    try:
        stamp = Stamp(name, np.ascontiguousarray(rgba))
    except ValueError as exc:
        raise ValueError(f"stamp image {p}: {exc}") from None
    ys, xs = np.nonzero(rgba[..., 3] > BOX_ALPHA_THRESHOLD * 255)
    across = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    if across < MIN_STAMP_SIDE:
        _log.warning(
            "stamp image %s: the stamp is only %d px across; composites blow it up into blur "
            "(a picture with the stamp %d px or more across is better)",
            p,
            across,
            4 * MIN_STAMP_SIDE,
        )
    return stamp


def load_stamps(paths: Sequence[PathLike]) -> list[Stamp]:
    """Stamp images (files, or folders of images taken in sorted order); labels are the file stems
    and must be unique."""
    if isinstance(paths, str | Path):
        paths = [paths]
    stamps: list[Stamp] = []
    seen: dict[str, Path] = {}
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = image_files(p, recursive=False)
            if not files:
                raise ValueError(
                    f"stamp folder {p}: holds no images (expected {', '.join(IMAGE_EXTENSIONS)} files)"
                )
            others = sorted(
                f.name for f in p.iterdir() if f.is_file() and not hidden_file(f) and f not in files
            )
            if others:  # an iPhone's .heic among the PNGs: one variant fewer, and nothing said
                _log.warning(
                    "stamp folder %s: skipped %d file(s) that are not stamp images (%s%s); a stamp is "
                    "a %s file",
                    p,
                    len(others),
                    ", ".join(others[:5]),
                    ", ..." if len(others) > 5 else "",
                    "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS),
                )
        else:
            files = [p]
        for f in files:
            stamp = load_stamp(f)
            if stamp.label in seen:
                raise ValueError(
                    f"stamp label {stamp.label!r} comes from both {seen[stamp.label]} and {f}; labels are "
                    "file stems and must be unique"
                )
            seen[stamp.label] = f
            stamps.append(stamp)
    if not stamps:
        raise ValueError("no stamp images given")
    return stamps


# -- product surfaces -------------------------------------------------------------------------------


def _random_colour(
    rng: np.random.Generator, sat: tuple[int, int], val: tuple[int, int]
) -> tuple[int, int, int]:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _filled(w: int, h: int, colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    cv2.rectangle(img, (0, 0), (w, h), colour, -1)  # 30x faster than numpy's broadcast fill
    return img


def _grainy(rng: np.random.Generator, coarse: np.ndarray, w: int, h: int, grain: float) -> np.ndarray:
    """A surface from a coarse BGR float image: upsampled, with grain (sigma ``grain`` grey levels)
    added at half resolution."""
    hw, hh = (w + 1) // 2, (h + 1) // 2
    half = cv2.resize(np.clip(coarse, 0, 255).astype(np.uint8), (hw, hh), interpolation=cv2.INTER_LINEAR)
    sigma = max(1, round(grain))
    pos, neg = _crop_at(rng, _sensor_banks(sigma), hh, hw * 3)
    flat = cv2.add(half.reshape(hh, hw * 3), pos)
    half = cv2.subtract(flat, neg, dst=flat).reshape(hh, hw, 3)
    return cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)


def _coarse(rng: np.random.Generator, base: np.ndarray, w: int, h: int, amount: float) -> np.ndarray:
    cells = int(rng.integers(3, 10))
    gh, gw = max(2, cells * h // max(w, h)), max(2, cells * w // max(w, h))
    return base * (1 + amount * (rng.random((gh, gw, 1)) - 0.5))


def _cardboard(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = np.array([95, 140, 185], np.float32) * rng.uniform(0.55, 1.1) + rng.normal(0, 8, 3)
    img = _grainy(rng, _coarse(rng, base, w, h, rng.uniform(0.03, 0.14)), w, h, rng.uniform(1.5, 5.0))
    n = max(8, (w * h) // int(rng.integers(1500, 4000)))
    ang = rng.uniform(0, np.pi) + rng.normal(0, 0.3, n)
    length = rng.uniform(3, 22, n)
    x0, y0 = rng.uniform(0, w, n), rng.uniform(0, h, n)
    seg = np.stack([x0, y0, x0 + length * np.cos(ang), y0 + length * np.sin(ang)], 1)
    seg = np.round(seg * _ONE).astype(np.int32).reshape(n, 2, 1, 2)
    half = n // 2
    dark = tuple(float(v) for v in np.clip(base * 0.75, 0, 255))
    light = tuple(float(v) for v in np.clip(base * 1.2, 0, 255))
    cv2.polylines(img, list(seg[:half]), False, dark, 1, cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, list(seg[half:]), False, light, 1, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.3:  # corrugation showing through
        period = rng.uniform(8, 24)
        wave = 1 - rng.uniform(0.02, 0.06) * (1 + np.sin(np.arange(w) * 2 * np.pi / period))
        row = np.repeat((wave * 255).astype(np.uint8)[None, :, None], 3, axis=2)
        img = cv2.multiply(img, cv2.resize(row, (w, h), interpolation=cv2.INTER_NEAREST), scale=1 / 255)
    return img


def _paper(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = np.clip(rng.uniform(215, 252) + rng.normal(0, 5, 3), 0, 255).astype(np.float32)
    return _grainy(rng, _coarse(rng, base, w, h, rng.uniform(0.0, 0.06)), w, h, rng.uniform(0.6, 2.6))


def _printed(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    if rng.random() < 0.5:  # a gradient between corner colours
        corners = np.array([_random_colour(rng, (40, 255), (60, 255)) for _ in range(4)], np.uint8).reshape(
            2, 2, 3
        )
        img = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        img = _filled(w, h, _random_colour(rng, (0, 255), (40, 255)))
    for _ in range(int(rng.integers(1, 5))):
        _block(rng, img)
    return img


def _block(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    colour = _random_colour(rng, (0, 255), (30, 255))
    kind = rng.random()
    x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
    if kind < 0.4:
        cv2.rectangle(
            img, (x0, y0), (x0 + int(rng.integers(w // 8, w)), y0 + int(rng.integers(h // 8, h))), colour, -1
        )
    elif kind < 0.7:
        band = int(rng.integers(max(2, h // 30), max(3, h // 4)))
        pts = np.array([[-w, y0], [2 * w, y0 + rng.integers(-h // 2, h // 2 + 1)]], np.int32)
        cv2.line(img, tuple(pts[0]), tuple(pts[1]), colour, band, cv2.LINE_AA)
    else:
        r = int(rng.integers(max(3, min(w, h) // 12), max(4, min(w, h) // 2)))
        cv2.circle(img, (x0, y0), r, colour, -1, cv2.LINE_AA)


def _text_lines(
    rng: np.random.Generator,
    img: np.ndarray,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    colour: tuple[int, int, int],
) -> None:
    fonts = (*_FONTS, cv2.FONT_HERSHEY_PLAIN)
    font = fonts[int(rng.integers(len(fonts)))]
    line_h = rng.uniform(6, max(7.0, min(28.0, (y1 - y0) / 2)))
    thickness = 1 if line_h < 16 else int(rng.integers(1, 3))
    scale = cv2.getFontScaleFromHeight(font, round(line_h), thickness)
    line_type = cv2.LINE_AA if line_h >= 12 else cv2.LINE_8  # small print: the camera blurs it anyway
    y, step = y0 + line_h, line_h * rng.uniform(1.4, 2.0)
    for _ in range(5):
        if y >= y1:
            break
        text = " ".join(_random_text(rng) for _ in range(int(rng.integers(1, 4))))
        cv2.putText(img, text, (x0, round(y)), font, scale, colour, thickness, line_type)
        y += step


def _label(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    lw, lh = int(w * rng.uniform(0.25, 0.7)), int(h * rng.uniform(0.2, 0.6))
    x0, y0 = int(rng.integers(-lw // 4, w - lw // 2)), int(rng.integers(-lh // 4, h - lh // 2))
    if rng.random() < 0.5:  # its drop shadow
        d = int(rng.integers(1, 5))
        cv2.rectangle(img, (x0 + d, y0 + d), (x0 + lw + d, y0 + lh + d), (60, 60, 60), -1)
    paper = rng.uniform(225, 252)
    cv2.rectangle(
        img, (x0, y0), (x0 + lw, y0 + lh), (paper, paper + rng.uniform(-5, 3), paper + rng.uniform(-3, 3)), -1
    )
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    if rng.random() < 0.4:
        cv2.rectangle(img, (x0 + 3, y0 + 3), (x0 + lw - 3, y0 + lh - 3), ink, 1)
    if rng.random() < 0.5:
        _barcode(rng, img, x0 + lw // 8, y0 + lh // 2, x0 + lw * 7 // 8, y0 + lh * 9 // 10)
        _text_lines(rng, img, x0 + 5, y0 + 3, x0 + lw, y0 + lh // 2, ink)
    else:
        _text_lines(rng, img, x0 + 5, y0 + 3, x0 + lw, y0 + lh, ink)


def _barcode(rng: np.random.Generator, img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 12 or y1 - y0 < 6:
        return
    unit = int(rng.integers(1, 4))
    widths = rng.integers(1, 5, (x1 - x0) // unit + 1) * unit
    bars = np.repeat(np.arange(widths.size) % 2, widths)[: x1 - x0]
    row = np.where(bars[:, None] == 1, 20, 245).astype(np.uint8)
    img[y0:y1, x0:x1] = row[None, :, :]


def procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A product surface, HxWx3 uint8 BGR: cardboard (brown, fibres, grain), printed packaging
    (colour blocks, gradients, logos, text), white labels with text lines, barcodes, and mixtures."""
    if width < 8 or height < 8:
        raise ValueError(f"procedural_background: expected at least 8x8 px, got {width}x{height}")
    turn = rng.random() < 0.25  # text and bars that run vertically
    w, h = (height, width) if turn else (width, height)
    kind = rng.random()
    if kind < 0.35:
        img = _cardboard(rng, w, h)
        overlays = ("label", "label", "text", "barcode", "tape")
    elif kind < 0.65:
        img = _printed(rng, w, h)
        overlays = ("text", "logo", "block", "barcode", "label")
    elif kind < 0.85:
        img = _paper(rng, w, h)
        overlays = ("text", "text", "barcode", "block", "logo")
    else:
        img = _filled(w, h, _random_colour(rng, (0, 120), (60, 250)))
        overlays = ("label", "text", "block", "barcode")
    for _ in range(int(rng.integers(0, 4))):
        what = overlays[int(rng.integers(len(overlays)))]
        if what == "label":
            _label(rng, img)
        elif what == "text":
            colour = _random_colour(rng, (0, 255), (0, 140))
            x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h * 3 // 4)))
            _text_lines(rng, img, x0, y0, w, min(h, y0 + int(rng.integers(h // 6, h // 2 + 2))), colour)
        elif what == "barcode":
            bw, bh = int(w * rng.uniform(0.2, 0.5)), int(h * rng.uniform(0.1, 0.3))
            x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
            pad = 4
            cv2.rectangle(img, (x0 - pad, y0 - pad), (x0 + bw + pad, y0 + bh + pad), (245, 245, 245), -1)
            _barcode(rng, img, x0, y0, x0 + bw, y0 + bh)
        elif what == "block":
            _block(rng, img)
        elif what == "logo":
            _logo(rng, img)
        else:
            _tape(rng, img)
    if turn:
        img = cv2.rotate(
            img, cv2.ROTATE_90_CLOCKWISE if rng.random() < 0.5 else cv2.ROTATE_90_COUNTERCLOCKWISE
        )
    return img


def _logo(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    r = int(rng.integers(max(4, min(w, h) // 12), max(5, min(w, h) // 4)))
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    colour = _random_colour(rng, (80, 255), (60, 255))
    shape = rng.random()
    if shape < 0.4:
        cv2.ellipse(
            img,
            (cx, cy),
            (r, int(r * rng.uniform(0.5, 1.0))),
            float(rng.uniform(0, 180)),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
    elif shape < 0.7:
        pts = np.array(
            [[cx + r * math.cos(a), cy + r * math.sin(a)] for a in rng.uniform(0, 2 * np.pi, 3)], np.int32
        )
        cv2.fillConvexPoly(img, pts, colour, cv2.LINE_AA)
    else:
        cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1, cv2.LINE_AA)
    letters = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(1, 4))))
    inv = tuple(255 - v for v in colour)
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    scale = cv2.getFontScaleFromHeight(font, max(4, r // 2), 2)
    (tw, th), _ = cv2.getTextSize(letters, font, scale, 2)
    cv2.putText(img, letters, (cx - tw // 2, cy + th // 2), font, scale, inv, 2, cv2.LINE_AA)


def _tape(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    band = int(rng.integers(max(4, h // 8), max(5, h // 3)))
    y = int(rng.integers(0, h))
    overlay = img.copy()
    colour = (int(rng.integers(60, 120)), int(rng.integers(130, 180)), int(rng.integers(170, 220)))
    cv2.line(
        overlay, (-10, y), (w + 10, y + int(rng.integers(-h // 4, h // 4 + 1))), colour, band, cv2.LINE_AA
    )
    a = rng.uniform(0.3, 0.7)
    cv2.addWeighted(overlay, a, img, 1 - a, 0, dst=img)


#: Photos smaller than this on a side are warned about: they are blown up into blurry surfaces.
MIN_BACKGROUND_SIDE = 64


class Backgrounds:
    """Product surfaces to stamp on: photos from ``folder`` (jpg/png/..., searched recursively,
    sorted; random crops, flips and resizes to the requested size), or procedural surfaces when
    ``folder`` is None. With a folder, ``procedural_share`` of the draws are procedural anyway.

    A photo is loaded when first drawn, shrunk to about ``max_side`` (a JPEG decoded at a half,
    quarter or eighth of its size where that is still near ``max_side``), and kept in memory as a
    JPEG of quality 95 (``packed_mb`` in all; past that, photos are read from their files again);
    the last ``cache_size`` are also kept decoded. A phone's 12-megapixel photo took 210 ms to
    decode and shrink, so a folder of them made 5 composites a second in place of several hundred;
    from memory it takes a few ms. Every draw sees the photo as that JPEG, kept or not, so what is
    drawn does not depend on what was in memory."""

    def __init__(
        self,
        folder: PathLike | None = None,
        *,
        procedural_share: float = 0.0,
        max_side: int = 1024,
        cache_size: int = 64,
        packed_mb: float = 1024.0,
    ) -> None:
        if not 0.0 <= procedural_share <= 1.0:
            raise ValueError(f"Backgrounds.procedural_share: expected [0, 1], got {procedural_share!r}")
        self.folder = None if folder is None else Path(folder)
        self.procedural_share = float(procedural_share)
        self.max_side = int(max_side)
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._packed: dict[Path, bytes] = {}
        self._packed_budget = int(packed_mb * 2**20)
        self._packed_bytes = 0
        #: a photo's longer side, about (from its check at an eighth of its size)
        self._sides: dict[Path, int] = {}
        self._bad: set[Path] = set()
        self.paths: tuple[Path, ...] = ()
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise ValueError(f"backgrounds folder {self.folder}: does not exist or is not a folder")
        self.paths = tuple(image_files(self.folder, recursive=True))
        unread = unread_photos(self.folder, recursive=True)
        if not self.paths:
            raise ValueError(
                f"backgrounds folder {self.folder}: holds no images "
                f"(expected {', '.join(IMAGE_EXTENSIONS)} files)"
                + (f"; {unread_photos_line(unread)}" if unread else "")
            )
        if unread:
            _log.warning("backgrounds folder %s: %s", self.folder, unread_photos_line(unread))
        self.paths = self._usable(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def _usable(self, paths: Sequence[Path]) -> tuple[Path, ...]:
        """The photos that decode (checked at an eighth of their size, about 1 ms each), with one
        warning for those skipped and one for those so small they are blown up into blur."""
        usable, skipped, small = [], [], []
        for path in paths:
            why, thumb = None, None
            try:
                data = path.read_bytes()
                why = incomplete(data) if data else "empty file (0 bytes)"
                if not why:
                    thumb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
            except OSError as exc:
                why = f"cannot be read ({exc.strerror or exc})"
            except cv2.error:  # under 8 px: nothing left at an eighth
                why = "under 16 px on a side"
            if thumb is None or min(thumb.shape[:2]) < 2:
                # (an eighth of a side under 16 px rounds to 1 px or less)
                why = why or ("cannot be read as an image" if thumb is None else "under 16 px on a side")
                skipped.append((path, why))
                continue
            usable.append(path)
            self._sides[path] = 8 * max(thumb.shape[:2])
            if min(thumb.shape[:2]) < MIN_BACKGROUND_SIDE // 8:
                small.append(path)
        if not usable:
            path, why = skipped[0]
            raise ValueError(
                f"backgrounds folder {self.folder}: holds no readable images ({len(paths)} tried; "
                f"{path.relative_to(self.folder)}: {why})"
            )
        if skipped:
            _log.warning(
                "backgrounds folder %s: %d of %d images skipped (%s)",
                self.folder,
                len(skipped),
                len(paths),
                listed([f"{path.relative_to(self.folder)}: {why}" for path, why in skipped]),
            )
        if small:
            _log.warning(
                "backgrounds folder %s: %d of %d images are under %d px on a side and are blown up "
                "into blurry surfaces, e.g. %s",
                self.folder,
                len(small),
                len(paths),
                MIN_BACKGROUND_SIDE,
                small[0].relative_to(self.folder),
            )
        return tuple(usable)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (e.g. for a worker pool) without the decoded images: each process loads its own."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_packed"] = {}
        state["_packed_bytes"] = 0
        return state

    def _load(self, path: Path) -> np.ndarray | None:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        if path in self._bad:
            return None
        packed = self._packed.get(path)
        if packed is None:
            packed = self._pack(path)
            if packed is None:
                self._bad.add(path)
                return None
            if self._packed_bytes + len(packed) <= self._packed_budget:
                self._packed[path] = packed
                self._packed_bytes += len(packed)
        img = cv2.imdecode(np.frombuffer(packed, np.uint8), cv2.IMREAD_COLOR)
        self._cache[path] = img
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return img

    def _pack(self, path: Path) -> bytes | None:
        """The photo at ``path`` shrunk to about ``max_side``, as a JPEG's bytes; None if it cannot
        be read."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        flags = cv2.IMREAD_COLOR
        if data[:2] == b"\xff\xd8":  # libjpeg decodes at 1/2, 1/4, 1/8 for a fraction of the time
            side = self._sides.get(path, 0)
            for reduce, flag in (
                (8, cv2.IMREAD_REDUCED_COLOR_8),
                (4, cv2.IMREAD_REDUCED_COLOR_4),
                (2, cv2.IMREAD_REDUCED_COLOR_2),
            ):
                if side / reduce >= 0.9 * self.max_side:
                    flags = flag
                    break
        img = decode_image(data, flags)
        if img is None or min(img.shape[:2]) < 8:
            return None
        f = self.max_side / max(img.shape[:2])
        if f < 1:
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        return buf.tobytes() if ok else None

    def draw(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A ``height`` x ``width`` x 3 uint8 BGR surface."""
        if not self.paths or (self.procedural_share > 0 and rng.random() < self.procedural_share):
            return procedural_background(rng, width, height)
        for _ in range(64):  # a file that went bad since: another, drawn alike (so all stay equally likely)
            img = self._load(self.paths[int(rng.integers(len(self.paths)))])
            if img is not None:
                return self._crop(rng, img, width, height)
        for path in self.paths:
            img = self._load(path)
            if img is not None:
                return self._crop(rng, img, width, height)
        raise ValueError(
            f"backgrounds folder {self.folder}: holds no readable images ({len(self.paths)} tried)"
        )

    @staticmethod
    def _crop(rng: np.random.Generator, img: np.ndarray, width: int, height: int) -> np.ndarray:
        ih, iw = img.shape[:2]
        aspect = width / height
        cw = min(iw, ih * aspect)  # the largest crop of the requested aspect, then 35..100% of its area
        f = math.sqrt(rng.uniform(0.35, 1.0))
        cw = max(1, round(cw * f))
        ch = max(1, min(ih, round(cw / aspect)))
        x = int(rng.integers(0, iw - cw + 1))
        y = int(rng.integers(0, ih - ch + 1))
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        inter = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=inter)


# -- the camera ---------------------------------------------------------------------------------------


def _camera(image: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Lighting and the camera, in the order light meets them: shadow, optics, sensor, ISP, codec."""
    h, w = image.shape[:2]
    if rng.random() < cfg.shadow_share:
        image = _shadow(image, rng, cfg)
    if rng.random() < cfg.blur_share:
        sigma = _uniform(rng, cfg.blur)
        k = 2 * math.ceil(2 * sigma) + 1  # +-2 sigma: OpenCV's default +-3 sigma costs 1.7x
        image = cv2.GaussianBlur(image, (k, k), sigma)
    if rng.random() < cfg.motion_blur_share:
        length = max(2.0, _uniform(rng, cfg.motion_blur) * max(h, w))
        k = int(math.ceil(length)) | 1
        kernel = np.zeros((k, k), np.float32)
        ang = rng.uniform(0, math.pi)
        dx, dy = math.cos(ang) * (length - 1) / 2, math.sin(ang) * (length - 1) / 2
        c = (k - 1) / 2
        cv2.line(
            kernel,
            (round((c - dx) * _ONE), round((c - dy) * _ONE)),
            (round((c + dx) * _ONE), round((c + dy) * _ONE)),
            1.0,
            1,
            cv2.LINE_AA,
            _SHIFT,
        )
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    sigma = round(_uniform(rng, cfg.noise))  # whole grey levels: one pair of noise banks each
    if sigma > 0:
        pos, neg = _crop_at(rng, _sensor_banks(sigma), h, w * 3)
        flat = cv2.add(image.reshape(h, w * 3), pos)
        image = cv2.subtract(flat, neg, dst=flat).reshape(h, w, 3)
    x = np.arange(256, dtype=np.float32) / 255.0
    x = (x - 0.5) * _uniform(rng, cfg.contrast) + 0.5 + _uniform(rng, cfg.brightness) / 255.0
    x = np.clip(x, 0, 1) ** _uniform(rng, cfg.gamma)
    if rng.random() < 0.25:  # else no white balance: one table for all channels, 3x faster
        gains = np.exp(rng.uniform(-cfg.white_balance, cfg.white_balance, 3)).astype(np.float32)
        lut = np.clip(np.round(x[:, None] * gains[None, :] * 255), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    else:
        lut = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut)
    if rng.random() < cfg.jpeg_share:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image


def _shadow(image: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    h, w = image.shape[:2]
    gh, gw = max(2, round(16 * h / max(h, w))), max(2, round(16 * w / max(h, w)))
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    yy, xx = yy / (gh - 1), xx / (gw - 1)
    depth = _uniform(rng, cfg.shadow)
    kind = rng.random()
    if kind < 0.7:  # a gradient (soft) or the edge of something casting a shadow (sharp)
        ang = rng.uniform(0, 2 * math.pi)
        d = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
        soft = rng.uniform(0.02, 0.15) if kind < 0.3 else rng.uniform(0.3, 1.0)
        shape = np.clip((d - rng.uniform(-0.3, 0.3)) / soft + 0.5, 0, 1)
    else:  # vignetting
        shape = np.clip(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2.0, 0, 1)
    small = np.repeat(((1.0 - depth * shape) * 255).astype(np.uint8)[..., None], 3, axis=2)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.multiply(image, field, scale=1 / 255)


# -- the generator ------------------------------------------------------------------------------------


def _belt(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A conveyor belt: a plain or faintly textured surface of any colour."""
    colour = np.array(_random_colour(rng, (0, 200), (25, 235)), np.float32)
    if rng.random() < 0.5:
        colour = colour * rng.uniform(0.2, 0.7)  # belts are mostly dark or muted
    belt = np.empty((height, width, 3), np.float32)
    belt[:] = colour
    if rng.random() < 0.5:  # weave or grooves along the direction of travel
        period = rng.uniform(2.0, 8.0)
        phase = np.sin(np.arange(width, dtype=np.float32) * (2 * np.pi / period))[None, :, None]
        belt += phase * rng.uniform(2.0, 10.0)
    belt += _noise(rng, height, width).astype(np.float32)[..., None] * rng.uniform(0.0, 0.15)
    return np.clip(belt, 0, 255).astype(np.uint8)


def _frame_on_belt(
    image: np.ndarray, box: Box | None, rng: np.random.Generator, cfg: SynthConfig
) -> tuple[np.ndarray, Box | None]:
    """The product (``image``) shrunk and placed off-centre on a belt, with a shadow band."""
    h, w = image.shape[:2]
    pw = max(8, round(w * _uniform(rng, cfg.framed_fill)))
    ph = max(8, round(h * _uniform(rng, cfg.framed_fill)))
    x0, y0 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    canvas = _belt(rng, w, h)
    sx, sy = rng.choice([-1, 1]), rng.choice([-1, 1])
    depth = max(1, round(min(w, h) * rng.uniform(0.0, 0.04)))
    if depth > 1:  # the product's shadow on the belt, on the side away from the light
        shadow = canvas.astype(np.float32)
        gx0, gy0 = min(max(x0 + sx * depth, 0), w), min(max(y0 + sy * depth, 0), h)
        shadow[gy0 : min(gy0 + ph, h), gx0 : min(gx0 + pw, w)] *= rng.uniform(0.35, 0.75)
        canvas = shadow.astype(np.uint8)
    canvas[y0 : y0 + ph, x0 : x0 + pw] = cv2.resize(image, (pw, ph), interpolation=cv2.INTER_AREA)
    if box is None:
        return canvas, None
    fx, fy = pw / w, ph / h
    return canvas, (x0 + box[0] * fx, y0 + box[1] * fy, x0 + box[2] * fx, y0 + box[3] * fy)


_ATTEMPTS = 8  # stamp placements tried before a low-contrast one is accepted


class Synthesizer:
    """Unlimited labelled samples of ``stamps`` on ``backgrounds``, varied by ``config``.

    Deterministic per ``(seed, index)`` (see :meth:`sample_at`), so parallel workers produce the
    same data. ``labels`` are the stamps' labels in order; a sample's class index points into them.
    """

    def __init__(
        self,
        stamps: Sequence[Stamp] | None = None,
        backgrounds: Backgrounds | None = None,
        config: SynthConfig = DEFAULT_CONFIG,
    ) -> None:
        stamps = [Stamp("stamp", default_stamp())] if stamps is None else list(stamps)
        if not stamps or not all(isinstance(s, Stamp) for s in stamps):
            raise ValueError(f"Synthesizer: expected one or more Stamp values, got {stamps!r}")
        labels = [s.label for s in stamps]
        if len(set(labels)) != len(labels):
            raise ValueError(f"Synthesizer: stamp labels must be unique, got {labels}")
        if not isinstance(config, SynthConfig):
            raise TypeError(f"Synthesizer: expected a SynthConfig, got {type(config).__name__}")
        self.stamps = tuple(stamps)
        self.labels = tuple(labels)
        self.backgrounds = backgrounds if backgrounds is not None else Backgrounds()
        self.config = config
        self._class = {label: i for i, label in enumerate(labels)}
        self._inks = _distractor_inks(self.stamps)
        #: the config of a last try at a stamp that every varied try made invisible
        self._clear_ink = replace(
            config, opacity=(1.0, 1.0), fade_share=0.0, partial_share=0.0, ink_blur=(0.0, 0.0)
        )

    def _size(self, rng: np.random.Generator) -> tuple[int, int]:
        longer = round(_loguniform(rng, *self.config.image_size))
        aspect = _loguniform(rng, *self.config.aspect)
        if aspect >= 1:
            return longer, max(8, round(longer / aspect))
        return max(8, round(longer * aspect)), longer

    def _distractor(self, image: np.ndarray, rng: np.random.Generator) -> None:
        pool = _distractor_pool()
        mark = pool[int(rng.integers(len(pool)))]
        base = self._inks[int(rng.integers(len(self._inks)))]
        colour = tuple(int(np.clip(v + rng.normal(0, 10), 0, 255)) for v in base)
        _paint(image, mark, rng, self.config, color=colour)

    def _scene(self, rng: np.random.Generator, width: int, height: int, distractor: bool) -> np.ndarray:
        image = self.backgrounds.draw(rng, width, height)
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"Backgrounds.draw: expected {(height, width, 3)} uint8, got {image.shape} {image.dtype}"
            )
        image = np.ascontiguousarray(image)
        if distractor:
            self._distractor(image, rng)
        return image

    def sample(self, rng: np.random.Generator, stamp: str | None = None) -> SynthSample:
        """One sample drawn with ``rng``; ``stamp``: the label of the stamp a positive carries
        (default: one drawn at random). The random stream is the same either way, so a sample
        differs from its randomly stamped twin only by the stamp (and what follows from it)."""
        if stamp is not None and stamp not in self._class:
            raise ValueError(f"Synthesizer.sample: stamp {stamp!r} is not one of {self.labels}")
        cfg = self.config
        width, height = self._size(rng)
        positive = rng.random() >= cfg.negative_share
        distractor = bool(
            rng.random() < (cfg.positive_distractor_share if positive else cfg.distractor_share)
        )
        if not positive:
            image = self._scene(rng, width, height, distractor)
            if rng.random() < cfg.framed_share:
                image, _ = _frame_on_belt(image, None, rng, cfg)
            return SynthSample(_camera(image, rng, cfg), None, None, distractor)
        drawn = int(rng.integers(len(self.stamps)))
        chosen = self.stamps[drawn if stamp is None else self._class[stamp]]
        box = None
        for attempt in range(_ATTEMPTS):
            if attempt % 2 == 0:  # a new surface every other attempt
                scene = self._scene(rng, width, height, distractor)
            image = scene.copy()
            box, contrast = _paint(image, chosen, rng, cfg)
            if box is not None and contrast >= cfg.min_contrast:
                break
        if box is None:  # thin, light ink (a signature) faded, cut or shrunk to nothing each time:
            # inked in full, whole and at least mid-size, as every stamp at load time can be
            clear = self._clear_ink
            best = -1.0
            for _ in range(_ATTEMPTS):
                tried = scene.copy()
                scale = _loguniform(rng, math.sqrt(clear.scale[0] * clear.scale[1]), clear.scale[1])
                painted, contrast = _paint(tried, chosen, rng, clear, scale=scale, allow_cut=False)
                if painted is not None and contrast > best:  # the clearest of them
                    box, image, best = painted, tried, contrast
                    if contrast >= cfg.min_contrast:
                        break
        if box is None:
            raise RuntimeError(
                f"Synthesizer: stamp {chosen.label!r} never became visible in {2 * _ATTEMPTS} attempts"
            )
        if rng.random() < cfg.framed_share:
            image, box = _frame_on_belt(image, box, rng, cfg)
        return SynthSample(_camera(image, rng, cfg), box, chosen.label, distractor)

    def sample_at(self, seed: int, index: int) -> SynthSample:
        """The sample number ``index`` of the stream ``seed``: the same in every process."""
        if int(seed) < 0 or int(index) < 0:
            raise ValueError(f"Synthesizer.sample_at: expected seed, index >= 0, got {seed}, {index}")
        return self.sample(np.random.default_rng([int(seed), int(index)]))

    def model_sample(self, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, float, int]:
        """What training consumes: (the model's input image via ``edge.contract.prepare_input``,
        the box normalised to [0, 1] as float32[4] (zeros for a negative), presence 0/1, class
        index into ``labels`` (-1 for a negative))."""
        s = self.sample_at(seed, index)
        image = prepare_input(s.image)
        if s.box is None:
            return image, np.zeros(4, np.float32), 0.0, -1
        h, w = s.image.shape[:2]
        x0, y0, x1, y1 = s.box
        box = np.array([x0 / w, y0 / h, x1 / w, y1 / h], np.float32)
        return image, box, 1.0, self._class[s.label]


def generate_arrays(synth: Synthesizer, seed: int, start: int, count: int) -> dict[str, np.ndarray]:
    """Samples ``start .. start + count - 1`` of stream ``seed`` as arrays (a chunk for a worker pool):
    ``images`` (N, H, W, 3) uint8 RGB, ``boxes`` (N, 4) float32, ``presence`` (N,) float32,
    ``classes`` (N,) int32."""
    if count < 0 or start < 0:
        raise ValueError(f"generate_arrays: expected start, count >= 0, got {start}, {count}")
    out = {
        "images": np.empty((count, *INPUT_SHAPE), np.uint8),
        "boxes": np.empty((count, 4), np.float32),
        "presence": np.empty(count, np.float32),
        "classes": np.empty(count, np.int32),
    }
    for i in range(count):
        image, box, presence, cls = synth.model_sample(seed, start + i)
        out["images"][i] = image
        out["boxes"][i] = box
        out["presence"][i] = presence
        out["classes"][i] = cls
    return out
