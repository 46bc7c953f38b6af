"""Where products pass in the whole frame, to suggest a region of interest (``--roi``).

The occupancy trigger looks only at the region, which should be about one product in size where
the products pass (docs/raspberry-pi.md). A region that is the whole frame, or beside the
products' path, finds no product, and the run ends with a hint. :class:`RegionFinder` watches
the whole frame meanwhile, cheaply: every ``EVERY``-th frame shrunk to ``SIDE`` px on its long
side and compared with a running median of them (the scene without what moves through it); what
differs is foreground. Samples in which the foreground stands still (a stopped line) are left
out. Where foreground recurs is the products' path; the largest blob of each sample, where it
lies wholly inside the frame, gives a product's size. The suggestion is a region of nearly the
largest product's size (``SIZE_PERCENTILE``) in the middle of the path, so a product fills it as
it passes and the belt shows around it between products.

Measured: on the demo line the suggestion overlaps the demo's own region with IoU 0.91; on the
demo line set in a frame twice as wide and tall (products a quarter of the frame, so the whole
frame as the region finds none), 0.85, and that region gives one verdict per product, the same
verdicts as the demo's own region (``tests/test_run_region.py``). On the 37 scenario videos of
the trigger's review: IoU 0.76-0.93 with the truth on 26; none suggested on 10 (fast lines, an
empty belt, flicker over the whole frame, a queue of touching products: too little seen whole);
wrong on 1 (IoU 0.3: 4 products around a 60-s stop at the frame's edge). A review's scenes:
vertical, diagonal, 1080p, nearly frame-sized products, an arm reaching in now and then, a
person walking: IoU 0.79-0.93. Wrong: a belt with raised cleats (the belt taken for products),
a very slow line (the region too long), two lanes (one is suggested, the other not said), an
arm reaching into an empty line (a region where the arm was). Products of very different sizes
are said (``note``). It is only ever said (the hint, the summary's ``suggested_roi``): the
region in use is never changed.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

#: the long side of the sampled frames, px
SIDE = 64
#: one frame in this many is sampled (30 fps: six a second)
EVERY = 5
#: the background: the per-pixel median of the first ``MIN_BACKGROUND`` samples, then moved
#: toward each sample by at most ``STEP`` grey levels (an approximate running median: what shows
#: more than half the time wins, as the belt between passing products does; 20 levels a second)
MIN_BACKGROUND = 20
STEP = 2
#: a pixel differing from the background by more than this (grey levels, any channel) is foreground
LEVEL = 30
#: a blob smaller than this share of the frame is not a product (noise, a glint); one larger than
#: ``MAX_BLOB`` is the light or the camera changing, not a product
MIN_BLOB = 0.01
MAX_BLOB = 0.8
#: the path: where foreground recurs at least this share of the most active place's rate
PATH_SHARE = 0.4
#: a suggestion needs this many samples with a blob (3 s of products passing at 30 fps), and a
#: place on the path that showed foreground in this share of the samples at least
MIN_BLOB_SAMPLES = 30
MIN_ACTIVITY = 0.05
#: the region's size: this percentile of the products' (a product's stamp may be anywhere on
#: it, so the region takes in nearly the largest whole; smaller ones still fill half of it)
SIZE_PERCENTILE = 90
#: the blobs kept (the last ones: about 8 minutes of products passing at 30 fps; a station runs
#: for months)
MAX_BLOBS = 3000
#: a suggestion needs this many samples with a blob wholly inside the frame (a product, not
#: something reaching in from the edge)
MIN_WHOLE = 10
#: blobs under this share of the suggested region's area, this share of them or more, are said
#: in ``RegionFinder.note`` (they would not fill the region to ``trigger.on``)
SMALL = 0.5
SMALL_SHARE = 0.2
#: a suggestion this close to the region in use (IoU) is not worth saying
SAME_REGION = 0.7


class RegionFinder:
    """Watches whole frames (``update``) and suggests where the region should be (``suggest``)."""

    def __init__(self) -> None:
        self._count = 0
        self._size: tuple[int, int] | None = None  # (w, h) of the samples
        self._first: list[np.ndarray] = []  # the samples the background starts from
        self._background: np.ndarray | None = None  # int16
        self._activity: np.ndarray | None = None  # foreground counts per pixel
        self._watched = 0  # samples compared with a background (those with things standing: not)
        self._fg: np.ndarray | None = None  # the last sample's foreground
        #: (x, y, w, h) of the largest blob of each sample that had one, in sample pixels, and
        #: whether it touched the frame's edge (a product coming in or leaving)
        self._blobs: deque[tuple[int, int, int, int, bool]] = deque(maxlen=MAX_BLOBS)
        #: what to know about the last suggestion (``suggest``), else None
        self.note: str | None = None

    def update(self, image: np.ndarray) -> None:
        """A frame of the source (BGR, any size); most are skipped at once."""
        self._count += 1
        if self._count % EVERY:
            return
        h, w = image.shape[:2]
        if self._size is None:
            scale = SIDE / max(w, h)
            self._size = (max(8, round(w * scale)), max(8, round(h * scale)))
        sw, sh = self._size
        # nearest to twice the size, then averaged by 2: a fortieth of INTER_AREA's time on a
        # 1280x960 frame, and noise enough averaged out for LEVEL
        twice = cv2.resize(image, (2 * sw, 2 * sh), interpolation=cv2.INTER_NEAREST)
        small = cv2.resize(twice, self._size, interpolation=cv2.INTER_AREA).astype(np.int16)
        if self._background is None:
            self._first.append(small)
            if len(self._first) >= MIN_BACKGROUND:
                self._background = np.median(np.stack(self._first), axis=0).astype(np.int16)
                self._first = []
            return
        diff = small - self._background
        d = np.abs(diff)
        self._background += np.clip(diff, -STEP, STEP).astype(np.int16)
        fg = ((np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])) > LEVEL).astype(np.uint8)
        before, self._fg = self._fg, fg
        if self._activity is None:
            self._activity = np.zeros(fg.shape, np.int32)
        changed = np.count_nonzero(fg != before) if before is not None else fg.size
        if fg.any() and changed < MIN_BLOB * fg.size:
            return  # something stands in view (a stopped line): neither path nor product size
        self._activity += fg
        self._watched += 1
        n, _labels, stats, _centroids = cv2.connectedComponentsWithStats(fg, connectivity=8)
        if n < 2:
            return
        area = fg.size
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, bw, bh, a = (int(v) for v in stats[best])
        if not MIN_BLOB * area <= a <= MAX_BLOB * area:
            return
        edge = x == 0 or y == 0 or x + bw >= sw or y + bh >= sh
        self._blobs.append((x, y, bw, bh, edge))

    def suggest(self) -> tuple[float, float, float, float] | None:
        """The suggested region (x, y, w, h as shares of the frame), or None when too little was
        seen (not enough products passing wholly inside the frame, or nothing moving). Sets
        ``note``: what to know about it (products of very different sizes), else None."""
        self.note = None
        if self._activity is None or len(self._blobs) < MIN_BLOB_SAMPLES:
            return None
        rate = self._activity / max(self._watched, 1)
        peak = float(np.percentile(rate, 99))
        if peak < MIN_ACTIVITY:
            return None
        path = (rate >= PATH_SHARE * peak).astype(np.uint8)
        n, _labels, stats, _c = cv2.connectedComponentsWithStats(path, connectivity=8)
        # only what was seen wholly inside the frame: a product passing, not an arm reaching in
        whole = [b for b in self._blobs if not b[4]]
        if n < 2 or len(whole) < MIN_WHOLE:
            return None
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        pw, ph = int(stats[best][2]), int(stats[best][3])
        sw, sh = self._size  # type: ignore[misc]
        # products move along the path's longer side (relative to the frame's)
        along_x = pw / sw >= ph / sh
        length = float(np.percentile([b[2] if along_x else b[3] for b in whole], SIZE_PERCENTILE))
        across = float(np.percentile([b[3] if along_x else b[2] for b in whole], SIZE_PERCENTILE))
        w, h = (min(length, pw), min(across, ph)) if along_x else (min(across, pw), min(length, ph))
        # centred where the whole blobs were (the middle of their crossing, and of their lane)
        cx = float(np.median([b[0] + b[2] / 2 for b in whole]))
        cy = float(np.median([b[1] + b[3] / 2 for b in whole]))
        x, y = min(max(cx - w / 2, 0.0), sw - w), min(max(cy - h / 2, 0.0), sh - h)
        small = float(np.mean([b[2] * b[3] < SMALL * w * h for b in whole]))
        if small >= SMALL_SHARE:
            self.note = (
                f"{small:.0%} of what passed was under {SMALL:.0%} of its size (smaller products?), too "
                "little of it to reach trigger.on: a region their size finds them, and sees only part "
                "of the larger ones"
            )
        return (round(x / sw, 2), round(y / sh, 2), round(w / sw, 2), round(h / sh, 2))


def region_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two regions (x, y, w, h)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
