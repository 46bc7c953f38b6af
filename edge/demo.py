"""A synthetic production line that knows its ground truth: ``edge-run --demo``.

Products ride a green belt from left to right through a fixed camera's 640x480 view. Each
product is a surface from the training recipe (``edge.synth``: cardboard, printed packaging,
paper, labels, barcodes) with the default stamp composited by the same code as the training
data, rendered once when it first comes into view and then pasted at its moving position, so a
frame costs a copy, a few pastes and a noise add. ``MISSING_SHARE`` of the products carry no
stamp; some of those (and a few stamped ones) carry a distractor mark instead (another seal, a
rectangular stamp, text or a scribble). Sensor noise varies per frame, and ``BLUR_SHARE`` of
the frames are motion-blurred or defocused, as a real camera's occasionally are.

With several stamp variants (``DemoLine(seed, stamps, expect)``, ``edge-run --demo-variants N``
or ``--demo-stamps DIR``) a stamped product carries the expected variant (``expect``, else the
first), except ``OTHER_VARIANT_SHARE`` of them, which carry one of the others (each alike); with
``expect`` given, their right verdict is WRONG. The single-stamp line is unchanged by this: the
variant is drawn from a random stream of its own.

Everything is deterministic under the seed: product ``i`` depends only on ``(seed, i)``, frame
``t`` only on ``(seed, t)``. :meth:`DemoLine.truth_at` says which product fills the region of
interest in a frame, :meth:`DemoLine.products_between` which products crossed it entirely.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge import synth

WIDTH, HEIGHT = 640, 480
FPS = 30.0
#: belt speed, px per frame: a product takes about 1.7 s to cross the region at 30 fps
SPEED = 12.0
#: the region the camera inspects: products fill it as they pass its middle
ROI = (0.25, 0.1, 0.5, 0.8)
BELT_Y = (40, 440)
#: product sizes, px, and the gaps between them (at least the region's width, so the occupancy
#: trigger sees the belt between two products)
PRODUCT_W = (270, 330)
PRODUCT_H = (330, 380)
GAP = (330, 640)
#: the belt is empty for this many frames at the start (the trigger learns it)
LEAD_IN_FRAMES = 45
#: layouts of the products that have left the view kept behind the first in view (a frame asked
#: for again, a little back, finds them; older ones are drawn afresh)
LAYOUTS_KEPT_BEHIND = 16
MISSING_SHARE = 0.25
#: of the products without a stamp, the share with a distractor mark; of those with, the share
MISSING_DISTRACTOR_SHARE = 0.4
OK_DISTRACTOR_SHARE = 0.1
#: with several stamp variants, the share of stamped products carrying another than the expected
OTHER_VARIANT_SHARE = 0.25
BLUR_SHARE = 0.04
NOISE_SIGMA = 3.0
#: a green PVC belt. A software (occupancy) trigger needs products that differ from the belt:
#: a product whose surface is largely belt-coloured is drawn again (about 3 in 100 of the
#: recipe's surfaces; a station with such products needs another belt colour or a photo-eye)
BELT_BGR = (58, 112, 52)
BELT_CONTRAST = 0.6

#: the training recipe, narrowed to what a fixed station camera sees (``edge.synth.RECIPES``)
PRODUCT_SYNTH = synth.STATION_CONFIG


@dataclass(frozen=True)
class TruthProduct:
    """One product of the line: where it is, and what the right verdict is."""

    id: int
    stamp: bool
    distractor: bool
    #: frames in which it overlaps the region of interest, inclusive
    first_frame: int
    last_frame: int
    #: the variant of its stamp (lines with several variants; None: the single default stamp)
    label: str | None = None
    #: the variant every product should carry (``edge-run --expect``); None: any is right
    expect: str | None = None

    @property
    def expected(self) -> str:
        if not self.stamp:
            return "MISSING"
        return "WRONG" if self.expect is not None and self.label != self.expect else "OK"

    @property
    def number(self) -> int:
        """Its number in the truth (from 1, as edge-run numbers the products it sees: a run from
        the line's start gives each product the same number in its verdict)."""
        return self.id + 1

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "product": self.number,
            "stamp": self.stamp,
            "distractor": self.distractor,
            "expected": self.expected,
        }
        if self.label is not None:
            out["label"] = self.label
        return out


@dataclass(frozen=True)
class _Layout:
    id: int
    offset: float  # the product's left edge is at SPEED * t - offset
    width: int
    height: int
    y: int
    stamp: bool
    distractor: bool
    label: str | None = None


class DemoLine:
    """The synthetic line: frames and their truth by frame number.

    ``stamps``: the stamp variants products carry (default: the single default stamp);
    ``expect``: the variant they should carry (see the module docstring).
    """

    def __init__(self, seed: int = 0, stamps: Sequence[synth.Stamp] | None = None, expect: str | None = None):
        self.seed = int(seed)
        self.width, self.height, self.fps, self.roi = WIDTH, HEIGHT, FPS, ROI
        rx, ry, rw, rh = ROI
        self.roi_px = (round(rx * WIDTH), round(ry * HEIGHT), round(rw * WIDTH), round(rh * HEIGHT))
        #: the layouts from product ``_first_kept`` on (those far behind the view are dropped: a
        #: demo left running for weeks kept one per product, 0.5 KB each)
        self._layouts: list[_Layout] = []
        self._first_kept = 0
        self._hint = 0
        self._images: dict[int, tuple[np.ndarray, tuple[float, float, float, float] | None]] = {}
        if stamps is None:
            self._stamps = [synth.Stamp("stamp", synth.default_stamp())]
            self.labels: tuple[str, ...] = ()
        else:
            self._stamps = list(stamps)
            self.labels = tuple(s.label for s in self._stamps)
            if not self.labels or len(set(self.labels)) != len(self.labels):
                raise ValueError(f"DemoLine: expected stamps with unique labels, got {list(self.labels)}")
        #: a single-stamp line knows no labels: its stamped products carry the right one, whatever
        #: ``expect`` calls it
        self.expect = expect if self.labels else None
        #: the variant most products carry
        self.main_label = (expect if expect in self.labels else self.labels[0]) if self.labels else None
        rng = np.random.default_rng([self.seed, 0x5EED])
        self._belt = _belt_texture(rng, WIDTH + 256, HEIGHT)
        self._noise = [
            np.clip(rng.normal(128, NOISE_SIGMA, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
            for _ in range(8)
        ]

    # -- layout -----------------------------------------------------------------------------------

    def _layout(self, i: int) -> _Layout:
        if i < self._first_kept:  # dropped: drawn again from the first (the run's truth, at its end)
            return next(p for p in self.layouts() if p.id == i)
        while self._first_kept + len(self._layouts) <= i:
            self._layouts.append(self._next_layout(self._layouts[-1] if self._layouts else None))
        return self._layouts[i - self._first_kept]

    def layouts(self) -> Iterator[_Layout]:
        """Every product's layout from the first on, drawn afresh (none kept)."""
        prev = None
        while True:
            prev = self._next_layout(prev)
            yield prev

    def _forget_layouts_before(self, i: int) -> None:
        """Drop the layouts of products before ``i`` less a margin (they have left the view)."""
        drop = i - LAYOUTS_KEPT_BEHIND - self._first_kept
        if drop > LAYOUTS_KEPT_BEHIND:  # now and then, not at every frame
            del self._layouts[:drop]
            self._first_kept += drop

    def _next_layout(self, prev: _Layout | None) -> _Layout:
        """The layout of the product after ``prev`` (the first one after None)."""
        k = prev.id + 1 if prev is not None else 0
        rng = np.random.default_rng([self.seed, k, 1])
        w = int(rng.integers(PRODUCT_W[0], PRODUCT_W[1] + 1))
        h = int(rng.integers(PRODUCT_H[0], PRODUCT_H[1] + 1))
        if prev is None:
            offset = SPEED * LEAD_IN_FRAMES
        else:
            offset = prev.offset + prev.width + float(rng.integers(GAP[0], GAP[1] + 1))
        belt_mid = (BELT_Y[0] + BELT_Y[1]) // 2
        y = belt_mid - h // 2 + int(rng.integers(-8, 9))
        stamp = bool(rng.random() >= MISSING_SHARE)
        distractor = bool(rng.random() < (OK_DISTRACTOR_SHARE if stamp else MISSING_DISTRACTOR_SHARE))
        label = self._variant(k) if stamp else None
        return _Layout(k, offset, w, h, y, stamp, distractor, label)

    def _variant(self, k: int) -> str | None:
        """The stamp variant of product ``k`` (None on a single-stamp line)."""
        if self.main_label is None:
            return None
        others = [label for label in self.labels if label != self.main_label]
        rng = np.random.default_rng([self.seed, k, 4])  # a stream of its own: layouts stay as they were
        if others and rng.random() < OTHER_VARIANT_SHARE:
            return others[int(rng.integers(len(others)))]
        return self.main_label

    def _x(self, p: _Layout, t: int) -> float:
        """The left edge of product ``p`` in frame ``t`` (its right edge is at SPEED t - offset)."""
        return SPEED * t - p.offset - p.width

    def _in_view(self, t: int) -> list[_Layout]:
        """Products overlapping the frame at ``t``."""
        # products are ordered right to left; start from the first one not yet past at the last call
        i = self._hint
        while i > 0 and self._x(self._layout(i - 1), t) < WIDTH:
            i -= 1
        while self._x(self._layout(i), t) >= WIDTH:
            i += 1
        self._hint = i
        self._forget_layouts_before(i)
        out = []
        while self._x(p := self._layout(i), t) + p.width > 0:
            out.append(p)
            i += 1
        return out

    def _frames_overlapping(self, p: _Layout, x0: float, x1: float) -> tuple[int, int]:
        """First and last frame in which product ``p`` overlaps columns ``[x0, x1)``."""
        # overlap when x + w > x0 and x < x1, with x = SPEED t - offset - w
        first = math.floor((x0 + p.offset) / SPEED) + 1
        last = math.ceil((x1 + p.offset + p.width) / SPEED) - 1
        return first, last

    # -- products ---------------------------------------------------------------------------------

    def product_image(self, i: int) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
        """Product ``i`` rendered with the training recipe: image and stamp box (product px)."""
        cached = self._images.get(i)
        if cached is None:
            cached = self._images[i] = self._render_product(self._layout(i))
        return cached

    def _render_product(self, p: _Layout) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
        longer, aspect = max(p.width, p.height), p.width / p.height
        config = synth.SynthConfig(
            **{
                **PRODUCT_SYNTH.__dict__,
                "image_size": (longer, longer),
                "aspect": (aspect, aspect),
                "negative_share": 0.0 if p.stamp else 1.0,
                "distractor_share": 1.0 if p.distractor else 0.0,
                "positive_distractor_share": 1.0 if p.distractor else 0.0,
            }
        )
        rng = np.random.default_rng([self.seed, p.id, 2])
        generator = synth.Synthesizer(self._stamps, config=config)
        for _ in range(20):  # a product the colour of the belt is drawn again (see BELT_CONTRAST)
            sample = generator.sample(rng, stamp=p.label)
            if belt_contrast(sample.image) >= BELT_CONTRAST:
                break
        image, box = sample.image, sample.box
        h, w = image.shape[:2]
        if (h, w) != (p.height, p.width):
            image = cv2.resize(image, (p.width, p.height), interpolation=cv2.INTER_AREA)
            if box is not None:
                sx, sy = p.width / w, p.height / h
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        return image, box

    # -- frames -----------------------------------------------------------------------------------

    def render(self, t: int) -> np.ndarray:
        """Frame ``t`` of the line (BGR uint8, a new array)."""
        shift = int(SPEED * t) % 256
        frame = self._belt[:, 256 - shift : 256 - shift + WIDTH].copy()
        in_view = self._in_view(t)
        for old in [k for k in self._images if k < in_view[0].id] if in_view else []:
            del self._images[old]  # rendered once, dropped once it has left
        for p in in_view:
            image, _ = self.product_image(p.id)
            x = round(self._x(p, t))
            a, b = max(x, 0), min(x + p.width, WIDTH)
            # a soft shadow on the belt below and right of the product
            sa, sb = max(x + 10, 0), min(x + p.width + 10, WIDTH)
            if sb > sa:
                shadow = frame[p.y + 10 : p.y + p.height + 10, sa:sb]
                np.right_shift(shadow, 1, out=shadow)
            frame[p.y : p.y + p.height, a:b] = image[:, a - x : b - x]
        rng = np.random.default_rng([self.seed, t, 3])
        noise = self._noise[int(rng.integers(len(self._noise)))]
        cv2.addWeighted(frame, 1.0, noise, 1.0, -128.0 + rng.normal(0, 2.0), dst=frame)
        if rng.random() < BLUR_SHARE:
            if rng.random() < 0.5:
                k = int(rng.integers(9, 21))
                frame = cv2.blur(frame, (k, 1))
            else:
                frame = cv2.GaussianBlur(frame, (0, 0), float(rng.uniform(2.0, 4.0)))
        return frame

    def cover_at(self, t: int) -> tuple[TruthProduct | None, float]:
        """The product covering most of the region of interest in frame ``t`` and the share of
        the region it covers (0 and None: the belt is empty there)."""
        rx, ry, rw, rh = self.roi_px
        best, best_cover = None, 0.0
        for p in self._in_view(t):
            x = self._x(p, t)
            across = max(0.0, min(x + p.width, rx + rw) - max(x, rx))
            down = max(0, min(p.y + p.height, ry + rh) - max(p.y, ry))
            cover = across * down / (rw * rh)
            if cover > best_cover:
                best, best_cover = p, cover
        return (self._truth(best) if best is not None else None), best_cover

    def truth_at(self, t: int) -> Mapping[str, object] | None:
        """The truth of the product covering most of the region of interest in frame ``t``."""
        product, _ = self.cover_at(t)
        return product.as_dict() if product is not None else None

    def _truth(self, p: _Layout) -> TruthProduct:
        rx, _, rw, _ = self.roi_px
        first, last = self._frames_overlapping(p, rx, rx + rw)
        return TruthProduct(p.id, p.stamp, p.distractor, first, last, p.label, self.expect)

    def products_between(
        self, first: int, last: int, judged: Collection[object] = frozenset()
    ) -> list[TruthProduct]:
        """Products that entered and left the region of interest within frames first..last, and
        those of ``judged`` (product numbers) that entered from ``first`` on: a trigger may end a
        product a frame or two before its last pixels leave the region, and a run may stop there."""
        out = []
        for p in self.layouts():  # (drawn afresh: those that have left the view are not kept)
            truth = self._truth(p)
            if truth.first_frame > last:
                return out
            if truth.first_frame >= first and (truth.last_frame <= last or truth.number in judged):
                out.append(truth)
        raise AssertionError("unreachable: the line's products never end")


def belt_contrast(image: np.ndarray) -> float:
    """Share of an image's cells (16 x 16) whose colour differs from the belt by > 40 levels."""
    cells = cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    return float((np.abs(cells - np.array(BELT_BGR, np.int16)).max(axis=2) > 40).mean())


def _belt_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A green PVC belt between grey side rails, periodic over 256 px so it can scroll."""
    img = np.empty((height, width, 3), np.uint8)
    img[...] = (95, 100, 92)  # rails
    y0, y1 = BELT_Y
    base = np.array(BELT_BGR, np.float32)
    grain = rng.normal(0, 6, (y1 - y0, 256, 1)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 1.0)[..., None]
    tile = np.clip(base + grain, 0, 255).astype(np.uint8)
    cv2.line(tile, (40, 0), (40, tile.shape[0]), (48, 96, 44), 2)  # a splice seam
    reps = -(-width // 256)
    img[y0:y1] = np.tile(tile, (1, reps, 1))[:, :width]
    img[y0 - 4 : y0] = (60, 60, 60)
    img[y1 : y1 + 4] = (60, 60, 60)
    return img


class DemoCamera:
    """The demo line behind the :class:`edge.sources.Device` interface (frame ``t`` per grab)."""

    live = False

    def __init__(self, line: DemoLine):
        self.line = line
        self.name = f"demo line (seed {line.seed})"
        self.fps: float | None = line.fps
        self._t = 0

    def open(self) -> None:
        self._t = 0

    def grab(self) -> np.ndarray:
        image = self.line.render(self._t)
        self._t += 1
        return image

    def skip(self, n: int) -> None:
        """Leave the next ``n`` frames out (a paced run drawn too slowly keeps the line's pace)."""
        self._t += n

    def close(self) -> None:
        pass
