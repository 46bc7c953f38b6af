"""Where products begin and end (triggers), and one verdict per product (the decider).

Triggers
    A :class:`Trigger` looks at each frame and says which product it belongs to and which
    product has just ended. ``every-frame`` makes each frame its own product (fixture stations).
    ``occupancy`` is a software trigger: the region of interest, shrunk to ``GRID`` x ``GRID``
    cells, is compared with a learned image of the empty belt; the share of cells whose colour
    differs by more than ``level`` grey levels is the *occupancy*. A product begins when the
    occupancy reaches ``on`` and ends after ``exit_frames`` frames in a row below ``off``
    (hysteresis, so a product whose surface happens to match the belt in places is not split).
    A hardware trigger (photo-eye on a GPIO pin) fits the same one-method seam later.

    The empty-belt reference is the median of the first ``learn_frames`` still frames (start the
    station with the belt empty), then follows slow light changes while the belt is empty
    (``adapt_rate``). A product in view for more than ``max_product_s`` (``SUDDEN_HOLD_S`` when
    the whole region changed at once) is judged, and then the region is held until it matches
    the belt again or a new belt is learned; see :class:`OccupancyTrigger`. Measured on 37
    scenario videos (a stopped line, restarts with the line running, lights switched on, light
    steps, flicker, camera shifts, fast and touching products; 446 products): 373 were each one
    trigger segment of their own, against 200 when the reference was relearned blindly from the
    next frames after ``max_product_s``; ``scripts/bench_trigger.py`` (the demo line through a
    stop, a start while products pass, the lights switched on, a light step): 265 of 266
    (261 while a change of light was held rather than followed, ``LIGHT_STEP_S``), against 79.

    Chosen by measurement on the demo line (640x480, region 0.25, 0.1, 0.5, 0.8; seeds 0-4, 60 s
    each, 8950 frames after learning, every frame's true share of the region covered by a product
    known): with the belt empty the occupancy stays below 0.08 (p99.9 0.06; belt texture, seams
    and sensor noise average out over a cell); region half covered: median 0.48; region at least
    four fifths covered: median 0.88, p1 0.62. ``on`` = 0.5 begins a product when it covers about
    half of the region; ``off`` = 0.2 (2.5x the empty belt's maximum) ends it when four fifths
    have left, so products need a gap of about four fifths of the region's width. Result: each of
    the 129 products that crossed was exactly one trigger segment (none split, none missed).

Decider
    A product is judged on its frames where it fills the region: occupancy >= ``judge_share`` x
    the product's peak occupancy (all its frames with a trigger that has no occupancy). It is OK
    when at least ``min_hits`` of those frames, and at least ``min_hit_share`` of them, see the
    stamp (presence >= threshold); a product with fewer judged frames needs all of them. So one
    blurred frame neither flags a good product (the other frames still see the stamp) nor passes
    a bad one (one false hit is not two). The verdict carries the best score and box, the judged
    frames, and the evidence frame (best-scoring frame for OK, the fullest view for MISSING).

    ``min_hit_share`` measured with an early default model (bc7a61927086, before the bundled one)
    on the demo line, seeds 0-9, 60 s each, 262 products, 9-14 judged frames each: stamped
    products had hit shares of 0.38 and more (one at 0: the model never sees that stamp);
    products without a stamp 0.27 and less, except four with hard distractor marks or surfaces
    (0.36, 0.4, 0.82, 1.0). ``min_hits`` = 2 alone passed two of those bad products (0.17, 0.25);
    0.3 between the groups does not.
    ``judge_share`` 0.9 instead of 0.8 judged fewer, better-centred frames and was no better
    (6 wrong instead of 5).

Stamp variants (models with a class head)
    A product that carries a stamp gets the label of its stamp: the majority of the per-frame
    labels (the class head's arg-max) over its judged frames that saw the stamp, the same frames
    that made it OK, so one blurred or half-visible frame does not change it. A tie between
    labels goes to the one with the higher mean class probability over those frames (then to
    the label of the best-scoring frame). With ``expect`` (``edge-run --expect LABEL``) a product
    whose label differs is WRONG instead of OK, and one whose label cannot be told (no class
    scores) is WRONG too: an unverified variant never passes. MISSING stays MISSING: a product
    without a stamp has no variant. The verdict carries the label and the votes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from edge.config import DecisionConfig, TriggerConfig
from edge.overlay import score_text
from edge.region import SAME_REGION, region_iou
from edge.types import Frame, Outcome, Prediction, Verdict

_log = logging.getLogger(__name__)

GRID = 32
#: a run of frames is still while fewer than this share of the cells differ by more than
#: ``level`` from its first frame (a stopped line, or an empty belt: its texture averages out
#: over a cell)
STILL = 0.02
#: learning the empty belt waits this long at most for ``learn_frames`` still frames (a camera's
#: exposure settling, products passing), then takes what recurs in the last frames (``recurring``)
LEARN_WAIT_S = 2.0
#: held this long while things move in the region (no still frames to learn from), the belt is
#: learned again from what recurs in the last frames (``recurring``), whatever they show
HELD_BLIND_S = 10.0
#: frames kept to learn the belt from when none are still (``recurring``): 2 s at 30 fps
RECENT_FRAMES = 60
#: frames that moved (not a change of light) while the first empty belt was learned, from which
#: the run says a product may have passed unjudged
LEARN_MOTION_FRAMES = 3
#: a belt learned again while the region was held is trusted, and the one before it forgotten,
#: after this many products came and went against it
TRUSTED_AFTER = 3
#: an occupancy that jumps to this share of the region in one frame, in a way a change of light
#: explains (each colour channel of the belt scaled alike), is the light switched on or off: the
#: region is held after ``SUDDEN_HOLD_S`` instead of ``max_product_s`` (a product moved in at
#: once, as on an indexing line, is not explained so, and may stay)
SUDDEN = 0.9
SUDDEN_HOLD_S = 3.0
#: the most one colour channel's factor may exceed another's for a change to be the light's
LIGHT_TINT = 1.3
#: ... over at least this share of the region, each channel within this of its factor; and the
#: occupancy must jump by ``LIGHT_JUMP`` in that frame (a product in view then is judged
#: ``SUDDEN_HOLD_S`` after the change, not after ``max_product_s``)
LIGHT_BELT = 0.3
LIGHT_SPREAD = 0.15
LIGHT_JUMP = 0.3
#: on an empty belt the reference follows the light (a camera's automatic exposure settling or
#: hunting, a cloud, a dimmer) where one factor per colour channel (about white, ``LIGHT_TINT``)
#: explains the change since the last frame: at most ``FOLLOW_STEP`` a frame (a light switched
#: on or off, or a plain product moved in at once, is larger: see ``SUDDEN``); the factor is
#: measured on every ``FOLLOW_SAMPLE``-th cell lit ``FLICKER_LIT`` or more, once at least
#: ``FOLLOW_LIT`` of the region is; only once ``FOLLOW_OCC`` of the region differs from the
#: reference (a light that hunts about the reference's is left to it: followed to one end, the
#: other would differ), and taken where the factor halves (``FOLLOW_BETTER``) both the mean
#: difference from the reference and the share of the region that differs (to ``off`` or less)
FOLLOW_STEP = 0.2
FOLLOW_OCC = 0.05
FOLLOW_BETTER = 0.5
FOLLOW_SAMPLE = 3
FOLLOW_LIT = 0.3
#: a step of the light from one frame to the next (a light switched on or off, a door, the sun),
#: with or without a product in view: the median factor of the region's lit cells (those below
#: ``SATURATED`` in both frames, at least ``LIGHT_STEP_CLEAR`` of the region) differs from 1 by
#: ``FLICKER_CHANGE`` or more, about white (``LIGHT_TINT``), within ``LIGHT_STEP_RANGE``, and it
#: explains ``LIGHT_STEP_SHARE`` of the lit cells or more (each channel within ``FLICKER_SPREAD`` or
#: ``FLICKER_NOISE`` of it, clipped where it saturates): a product moving in view changes the rest.
#: For ``LIGHT_STEP_S`` after it (and while the light has changed one way only: flickering light
#: goes both) the empty belt's reference is scaled to the new light once the region matches it
#: so scaled as an empty belt matches its reference (all but ``LIGHT_MATCH`` of it): when the
#: product in view when the light changed has left. A step on an empty region begins a product
#: on trial, as a plain product the belt's colour made brighter, moved in at once, would: it is
#: dropped (the light) as soon as something rises against the belt under the new light, which
#: then begins a product of its own, or after ``SUDDEN_HOLD_S`` with nothing in view; it is
#: judged if the region matches the belt as it was again (a plain product that left). Before, a
#: product in view then stayed "in view" for ``max_product_s`` (30 s: a helper's recordings lost
#: the 13 products that passed meanwhile), and a step on an empty region was judged as a product
#: (a MISSING for nothing) that took the next real one in with it (judged on mostly empty
#: frames: a stamped one MISSING)
SATURATED = 220
LIGHT_STEP_CLEAR = 0.05
LIGHT_STEP_RANGE = (1 / 3, 3.0)
LIGHT_STEP_SHARE = 0.5
LIGHT_STEP_S = 10.0
LIGHT_MATCH = 0.1
LIGHT_OVERDUE = 2.0
#: with ``trigger.level_min`` set, each cell's own threshold (``OccupancyTrigger.occupancy``):
#: ``NOISE_K`` times how much the cell varies on the empty belt (root mean square of its
#: difference from the reference, each frame's clipped at the threshold, averaged at
#: ``NOISE_RATE`` a frame while the belt is empty: fewer than ``STILL`` of the cells off) plus
#: ``NOISE_FLOOR``, between ``level_min`` and ``level``: on a plain, steady belt products that
#: differ little from it are seen; a belt whose texture or light moves keeps ``level``. Not the
#: default: a plain belt's splice or stain (a stretch 15 % darker) then begins a product at every
#: pass, and soft shadows close the gaps between products (a helper's review)
NOISE_K = 4.0
NOISE_FLOOR = 4.0
NOISE_RATE = 0.01
#: the frames ``recurring`` compares at most (spread over those it is given)
RECURRING_SAMPLES = 30
#: the "product" a stopped product's leaving began against the belt learned with it in view is
#: dropped when the old belt shows again, unless something rose against the old belt meanwhile
#: (``FOLLOWER_RISE``: a product close behind) or it lasted longer than ``LEAVING_S`` (a slow
#: line takes seconds to clear the region)
LEAVING_S = 10.0
FOLLOWER_RISE = 0.25
#: a product in view this many times as many frames as the median of the recent ones (and at
#: least ``LONG_EXTRA`` frames more) is said to be several products merged
LONG_RATIO = 1.8
LONG_EXTRA = 4
#: ... once this many products have passed (5 before: a helper's recording merged products 4-6
#: into one, unsaid)
LONG_KNOWN = 3
#: an occupancy that rose to this share of ``on`` and fell back without a product beginning is
#: a near miss (``OccupancyTrigger.near_misses``)
NEAR_MISS = 0.6
#: flickering light (``OccupancyTrigger._flicker_frame``): a frame that differs from the belt
#: (occupancy ``off`` or more) and from the frame before, or ``FLICKER_LAG`` frames before, as
#: light that changed does: one brightness factor per row of cells explains
#: ``FLICKER_EXPLAINED`` of the region or more (each channel of each cell within
#: ``FLICKER_SPREAD`` or ``FLICKER_NOISE`` grey levels of it), and the factors differ from 1 by
#: ``FLICKER_CHANGE`` somewhere and by half of it in ``FLICKER_ROWS`` of the rows or more, and
#: vary smoothly down the region (no bend sharper than ``FLICKER_BEND`` of their range): bands of
#: a rolling shutter, or the whole frame pulsing. The light falls on the belt and the products
#: alike, so it shows with a product in view; an edge moving down the region changes a few rows,
#: with a sharp bend, and what moves across it does not follow rows. In ``FLICKER_SHARE`` of the
#: frames of the last ``FLICKER_WINDOW_S``, brighter and darker alike, the light flickers; it
#: has stopped after ``FLICKER_QUIET_S`` without such a frame. Measured: docs/raspberry-pi.md,
#: "Exposure, gain and flickering lights"
FLICKER_SPREAD = 0.1
FLICKER_CHANGE = 0.15
FLICKER_BOTH_WAYS = 0.25
BRIGHTER, DARKER = 1, 2
FLICKER_EXPLAINED = 0.5
FLICKER_BEND = 0.4
FLICKER_ROWS = 0.5
FLICKER_LAG = 4
FLICKER_WINDOW_S = 2.0
FLICKER_SHARE = 0.25
FLICKER_QUIET_S = 10.0
#: a cell of the belt darker than this (mean of its channels) tells nothing of the light; a
#: channel within this many grey levels of what its row's light makes of it is explained by it
#: (sensor noise, in a channel that is dark in a saturated colour)
FLICKER_LIT = 20
FLICKER_NOISE = 10
FLICKER_ADVICE = (
    "fix the camera's exposure to whole flicker periods of the lights (source.exposure_ms = 10 or 20 "
    "with 50 Hz mains, 8.33 or 16.67 with 60 Hz; or source.mains_hz), or light the line with lamps "
    "that do not flicker"
)


@dataclass(frozen=True)
class TriggerState:
    """What a trigger says about one frame.

    ``product``: the product this frame shows (None: belt empty or still learning).
    ``ended``: the product that is complete with this frame, to be judged now.
    ``occupancy``: share of the region that differs from the empty belt (occupancy trigger).
    """

    product: int | None = None
    ended: int | None = None
    occupancy: float | None = None
    learning: bool = False
    #: ``ended`` ended because the frames stopped while it was in view (``Frame.gap_s``)
    interrupted: bool = False
    #: ``product`` begins on the first frame after the frames stopped for this long: it was in
    #: view then, so it was seen only from here on (None: it was seen coming)
    resumed_s: float | None = None
    #: ``product`` has left the region on this frame (occupancy below the trigger's ``off``), which
    #: counts toward its end: the frame is the product's, but does not show it
    leaving: bool = False
    #: a product the trigger began that was not one (the empty belt it was measured against was
    #: wrong): dropped without a verdict
    voided: int | None = None
    #: why no product can begin now though the region is not empty (the occupancy trigger's
    #: region has differed from its empty belt for longer than ``max_product_s``); None: judging
    held: str | None = None
    #: ``held`` while things move in the region (products may pass unjudged), not a stopped line
    held_moving: bool = False


#: a product seen in fewer frames than this is seen too briefly for its verdict to be sure (one
#: false hit passes it, and where the loop drops frames the gaps between products go unseen, so
#: two merge into one)
FEW_FRAMES = 3
#: a product judged on fewer frames than this while the loop drops frames rests on a few looks:
#: on a CPU slowed to a fifth of a Pi 4's (a helper's cgroup quota), the demo's products were
#: judged on 2-6 frames (9-13 at full speed) and two verdicts of 155 flipped ("1 of 5 frames"),
#: unsaid, before any product fell below ``FEW_FRAMES``
SURE_FRAMES = 6


def seen_too_briefly(verdict: Verdict, state: TriggerState, dropping: bool) -> bool:
    """A product of a trigger that spans frames (one with an occupancy), its frames not stopped
    (that is ``interrupted_s``), seen in fewer than ``FEW_FRAMES`` frames, or judged on fewer than
    ``SURE_FRAMES`` while the loop drops frames (``dropping``: the loop, not the line, left it so
    few; then products also merge, and a merged one is seen long but judged on its fullest few)."""
    if state.occupancy is None or verdict.interrupted_s is not None:
        return False
    return (verdict.in_view or len(verdict.frames)) < FEW_FRAMES or (
        dropping and len(verdict.frames) < SURE_FRAMES
    )


class BriefProducts:
    """Counts the products seen too briefly (``seen_too_briefly``), telling from the source's
    dropped frames at each verdict whether the loop was dropping frames meanwhile."""

    def __init__(self) -> None:
        self.count = 0
        self._dropped = 0  # the source's dropped frames at the last verdict

    def add(self, verdict: Verdict, state: TriggerState, dropped: int) -> tuple[bool, bool]:
        """(seen too briefly, the loop dropping frames) for a verdict; the former counted."""
        dropping, self._dropped = dropped > self._dropped, dropped
        brief = seen_too_briefly(verdict, state, dropping)
        self.count += brief
        return brief, dropping


@dataclass(frozen=True)
class TriggerCounts:
    """What a trigger counted over a run, for the summary (0 where it has no such thing)."""

    #: the occupancy trigger: times it learned the empty belt again (the region differed from it
    #: for max_product_s), "products" it dropped (a stopped product leaving the belt learned with
    #: it in view), and products in view far longer than the recent ones (several merged?)
    relearned: int = 0
    dropped_products: int = 0
    long_products: int = 0
    #: frames in which things moved through the region while the first empty belt was learned
    #: (from ``LEARN_MOTION_FRAMES`` on, said: a product then passed unjudged)
    moved_while_learning: int = 0
    #: times the light began to flicker (bands or pulses the trigger takes for products)
    flicker: int = 0
    #: times the light stepped (switched on or off) and the empty belt's reference followed it
    light_steps: int = 0


class Trigger(Protocol):
    """Frame (and the model's view of its region, 128x128 RGB) -> which product it belongs to.

    ``idle`` is asked when no frame came for a while: ``stopped`` says the frames of a live
    source stopped for its ``stall_s`` or more. A product that ends then, without a frame (the
    one in view when the frames stopped, or a trigger window that has passed), is returned, to be
    judged at once on what was seen of it; else None."""

    def update(self, frame: Frame, view: np.ndarray) -> TriggerState: ...

    def idle(self, now: float, stopped: bool) -> TriggerState | None: ...

    def counts(self) -> TriggerCounts: ...


class EveryFrameTrigger:
    """Each frame is a product of its own, judged at once."""

    def __init__(self, first_product: int = 1):
        self._next = first_product

    def update(self, frame: Frame, view: np.ndarray) -> TriggerState:
        pid = self._next
        self._next += 1
        return TriggerState(product=pid, ended=pid)

    def idle(self, now: float, stopped: bool) -> TriggerState | None:
        return None  # each frame's product ended with it

    def counts(self) -> TriggerCounts:
        return TriggerCounts()


def white_gain(ratios: np.ndarray) -> np.ndarray | None:
    """The light's factor per colour channel: the median of ``ratios`` (cells x 3, a frame over
    the belt); None where the channels' factors differ by more than ``LIGHT_TINT`` (not about
    white light: a product's colour, not the light)."""
    gain = np.median(ratios, axis=0)
    return None if gain.max() > LIGHT_TINT * max(float(gain.min()), 1e-3) else gain


def _lit(frame: np.ndarray) -> np.ndarray:
    """The cells of a frame (GRID x GRID x 3, float) lit enough to tell the light by
    (``FLICKER_LIT``; channels added as slices: numpy's reductions over small axes cost more)."""
    return frame[..., 0] + frame[..., 1] + frame[..., 2] >= 3 * FLICKER_LIT


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array, by partition (a quarter of its time on a region's cells)."""
    n, k = values.size, values.size // 2
    if n % 2:
        return np.partition(values, k)[k]
    p = np.partition(values, (k - 1, k))
    return (p[k - 1] + p[k]) / 2


def light_gain(cur: np.ndarray, before: np.ndarray) -> np.ndarray | None:
    """The light's factor per colour channel from ``before`` to ``cur`` (GRID x GRID x 3, float):
    each channel's median ratio over the lit cells where it is below ``SATURATED`` in both (at
    least ``LIGHT_STEP_CLEAR`` of the region; a channel with fewer, saturated under the new
    light, takes the others' mean: the light is about white); None where no channel has enough,
    or the factors differ by more than ``LIGHT_TINT``."""
    lit = _lit(before)
    gain = np.full(3, np.nan)
    for c in range(3):
        b, k = before[..., c], cur[..., c]
        clear = lit & (b < SATURATED) & (k < SATURATED)
        if np.count_nonzero(clear) >= LIGHT_STEP_CLEAR * GRID * GRID:
            gain[c] = _median(k[clear] / np.maximum(b[clear], 1.0))
    known = gain[~np.isnan(gain)]
    if not known.size or known.max() > LIGHT_TINT * max(float(known.min()), 1e-3):
        return None
    return np.where(np.isnan(gain), known.mean(), gain)


def recurring(frames: Sequence[np.ndarray], level: int) -> np.ndarray:
    """Per cell, the colour that recurs most often in ``frames`` (GRID x GRID x 3 each, at most
    ``RECURRING_SAMPLES`` of them spread over all): the median of the largest group of frames
    within ``level`` of one of them. Where products pass (each one other), the belt between them
    recurs, though it may show less than half the time (where a plain median takes the
    products); on an empty belt it is about the median."""
    if len(frames) > RECURRING_SAMPLES:
        frames = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, RECURRING_SAMPLES)]
    stack = np.stack(frames).astype(np.int16)  # (N, G, G, 3)
    counts = np.stack([(np.abs(stack - f).max(axis=-1) <= level).sum(axis=0) for f in stack])  # (N, G, G)
    best = np.take_along_axis(stack, counts.argmax(axis=0)[None, ..., None], axis=0)[0]  # (G, G, 3)
    members = np.abs(stack - best).max(axis=-1) <= level  # (N, G, G)
    values = np.where(members[..., None], stack, np.nan)
    return np.nanmedian(values, axis=0).astype(np.float32)


class OccupancyTrigger:
    """Software trigger: occupancy of the region against a learned empty-belt reference.

    The reference is learned from ``learn_frames`` still frames (waiting up to ``LEARN_WAIT_S``
    for them, so a camera's exposure settling or products passing at the start are not learned;
    then from what recurs over the last frames). A product in view for longer than
    ``max_product_s`` (``SUDDEN_HOLD_S`` after a change of light, ``_light_explains``) is judged, and
    then the region is *held*: no product begins until the region matches the empty belt again
    (a stopped line moving on), or until ``learn_frames`` still frames give a new empty belt
    (the light or the camera changed, or a stopped product, learned for as long as it stays;
    after ``HELD_BLIND_S`` without still frames, what recurs). A belt learned again keeps the one
    before as a fallback until ``TRUSTED_AFTER`` products came and went against it: if the region
    matches the old one again (what was learned was a stopped product, which has now left), the
    old one comes back and the product begun against the new one is dropped (``voided``)."""

    def __init__(self, config: TriggerConfig | None = None, first_product: int = 1):
        self.config = config or TriggerConfig()
        self._next = first_product
        self._small = np.empty((GRID, GRID, 3), np.uint8)
        self._diff = np.empty((GRID, GRID, 3), np.uint8)
        self._cell = np.empty((GRID, GRID), np.uint8)
        #: whether each cell has its own threshold (``trigger.level_min`` set), the thresholds
        #: (``NOISE_K``), and the empty-belt variance they come from
        self._adaptive = self.config.level_min is not None and self.config.level_min < self.config.level
        self._level = np.empty((GRID, GRID), np.uint8)
        self._var = np.empty((GRID, GRID), np.float32)
        self._reset_noise()
        self._ref_f = np.zeros((GRID, GRID, 3), np.float32)
        self._ref = np.zeros((GRID, GRID, 3), np.uint8)
        #: the frames of the current still run (learning, or held), and the last few of any kind
        self._still: list[np.ndarray] = []
        self._recent: deque[np.ndarray] = deque(maxlen=max(self.config.learn_frames, RECENT_FRAMES))
        self._learn_began: float | None = None
        self._learned = False
        self._product: int | None = None
        self._started = 0.0
        self._below = 0
        self._in_view = 0
        self._last_occ = 0.0
        #: how long the product in view may stay before the region is held
        self._limit = self.config.max_product_s
        #: frames in view of the recent products (``LONG_RATIO``)
        self._lengths: deque[int] = deque(maxlen=20)
        #: how long the recent products were in view, s (``LIGHT_OVERDUE``)
        self._durations: deque[float] = deque(maxlen=20)
        #: since when the region is held (None: not held)
        self._held_since: float | None = None
        #: the empty belt before the last one learned while held (None: none, or trusted since)
        self._fallback: np.ndarray | None = None
        self._fallback_below = 0
        self._trust = 0
        #: against the old belt, over the product begun on trial: its lowest occupancy, and
        #: whether it rose again after (something followed the stopped product)
        self._fb_min = 1.0
        self._fb_follower = False
        #: the frame before this one (GRID x GRID), to tell a moving product from a standing one
        self._prev = np.zeros((GRID, GRID, 3), np.uint8)
        self.relearned = 0
        #: times a belt learned while held proved wrong and the one before came back, and the
        #: "products" then dropped (a stopped product leaving the belt learned with it in view)
        self.restored = 0
        self.voided = 0
        #: products in view much longer than the recent ones (several merged?)
        self.long_products = 0
        #: frames in which something moved through the region while the empty belt was being
        #: learned at the start (a product then passed unjudged), and how long that took, s
        self.moved_while_learning = 0
        self.learning_s = 0.0
        #: the highest occupancy seen with no product in view: says how near a missed product came
        self.idle_peak = 0.0
        #: times the occupancy rose to ``NEAR_MISS`` x ``on`` (and above ``off``) and fell back below
        #: ``off`` without a product beginning (something crossed unjudged?), and the highest of those
        self.near_misses = 0
        self.near_miss_peak = 0.0
        self._rise = 0.0
        #: flickering light: (line time, flickered) of the last frames, the last few frames (GRID
        #: x GRID), whether it flickers now, since when a frame last flickered, the times it
        #: began to, and the frames that flickered
        self._flicker: deque[tuple[float, int]] = deque()
        self._flicker_count = 0
        self._flicker_ways = [0, 0]  # of those, brighter, darker (bands: both)
        self._past: deque[np.ndarray] = deque(maxlen=FLICKER_LAG)
        self._last_flicker = -math.inf
        self.flickering = False
        self.flicker_frames = 0
        self.flicker_episodes = 0
        #: frames on which the empty belt's reference followed the light (``FOLLOW_STEP``)
        self.followed = 0
        #: when the light last stepped (``LIGHT_STEP_SHARE``; None: not within ``LIGHT_STEP_S``),
        #: and the times the empty belt's reference was scaled to a new light after such a step
        self._light_at: float | None = None
        self.light_steps = 0
        #: the product on trial begun by a step of the light on an empty region, and the
        #: reference scaled to the new light (see ``LIGHT_STEP_S``)
        self._light_pid: int | None = None
        self._lit_ref = np.zeros((GRID, GRID, 3), np.float32)

    @property
    def still_learning(self) -> int:
        """How many frames of the empty belt it has seen while still learning it (0: learned,
        or nothing seen yet)."""
        return 0 if self._learned else min(len(self._recent), self.config.learn_frames)

    def _cell_diff(self, ref: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """Each cell's largest channel difference of ``small`` (default: this frame's) from
        ``ref`` (in ``_cell``)."""
        cv2.absdiff(self._small if small is None else small, ref, dst=self._diff)
        return np.max(self._diff, axis=2, out=self._cell)

    def _share_off(
        self, ref: np.ndarray, small: np.ndarray | None = None, level: np.ndarray | None = None
    ) -> float:
        """Share of cells of ``small`` (default: this frame's) differing from ``ref`` by more
        than ``level`` (default: the configured ``level``; or each cell's own threshold) in any
        channel."""
        cell = self._cell_diff(ref, small)
        return float(np.count_nonzero(cell > (self.config.level if level is None else level))) / (GRID * GRID)

    def occupancy(self, view: np.ndarray) -> float:
        """Share of cells differing from the reference by more than ``level`` (or their own
        threshold, ``NOISE_K``) in any channel."""
        cv2.resize(view, (GRID, GRID), dst=self._small, interpolation=cv2.INTER_AREA)
        return self._share_off(self._ref, level=self._cells_level)

    @property
    def _cells_level(self) -> np.ndarray | None:
        """Each cell's threshold, or None (``level`` everywhere)."""
        return self._level if self._adaptive else None

    def _reset_noise(self) -> None:
        """Every cell's threshold back to ``level`` (a belt learned anew: its noise is unknown)."""
        self._level[:] = self.config.level
        self._var[:] = max(0.0, (self.config.level - NOISE_FLOOR) / NOISE_K) ** 2

    def _learn_noise(self) -> None:
        """This empty frame's differences from the reference, into each cell's threshold."""
        d = np.minimum(self._cell_diff(self._ref), self._level).astype(np.float32)
        self._var += NOISE_RATE * (d * d - self._var)
        level = NOISE_K * np.sqrt(self._var) + NOISE_FLOOR
        np.copyto(self._level, np.clip(level, self.config.level_min, self.config.level), casting="unsafe")

    def _track_still(self) -> bool:
        """Add this frame to the still run (starting a new run if it moved); True if still."""
        small = self._small.copy()
        self._recent.append(small)
        still = (
            not self._still or self._share_off(self._still[0], small) < STILL
        )  # (a first frame: no motion)
        if not still:
            self._still.clear()
        self._still.append(small)
        return still

    def _set_reference(self, small: np.ndarray) -> None:
        """The empty belt is ``small`` (float, or uint8) from now on."""
        if small is not self._ref_f:
            self._ref_f[:] = small
        np.copyto(self._ref, self._ref_f.round().astype(np.uint8))

    def update(self, frame: Frame, view: np.ndarray) -> TriggerState:
        cfg = self.config
        if not self._learned:
            cv2.resize(view, (GRID, GRID), dst=self._small, interpolation=cv2.INTER_AREA)
            before = self._recent[-1] if self._recent else None
            if not self._track_still() and before is not None:
                self._note_learning_motion(before)
            if self._learn_began is None:
                self._learn_began = frame.t_on_line
            if len(self._still) >= cfg.learn_frames:
                self._set_reference(np.median(np.stack(self._still), axis=0))
            elif (
                frame.t_on_line - self._learn_began >= LEARN_WAIT_S and len(self._recent) >= cfg.learn_frames
            ):
                _log.info(
                    "no %d still frames in %.0f s: the empty belt is what recurs in the last ones",
                    cfg.learn_frames,
                    LEARN_WAIT_S,
                )
                self._set_reference(recurring(list(self._recent), cfg.level))
            else:
                return TriggerState(learning=True)
            self._first_belt_learned(frame.t_on_line - self._learn_began)
            self._still.clear()
            self._learn_began = None
            self._learned = True
            return TriggerState(learning=True)
        if not frame.gap_s:
            return self._step(frame, view)
        # the frames stopped: what comes now may be another product, so the one in progress (if
        # ``idle`` did not end it when they stopped) is judged on what was seen of it, and this
        # frame begins afresh; a product in view on it was seen only from here on
        ended, self._product = self._product, None
        state = self._step(frame, view)
        resumed = frame.gap_s if state.product is not None else None
        return dataclasses.replace(state, ended=ended, interrupted=ended is not None, resumed_s=resumed)

    def _note_learning_motion(self, before: np.ndarray) -> None:
        """This frame (``_small``) moved from ``before`` while the belt is learned at the start:
        counted unless a change of light explains it (a camera's exposure settling)."""
        cur = self._small.astype(np.float32)
        if not self._light_changed(cur, before.astype(np.float32)):
            self.moved_while_learning += 1

    def _first_belt_learned(self, took_s: float) -> None:
        self.learning_s = took_s
        if self.moved_while_learning >= LEARN_MOTION_FRAMES:
            _log.warning(
                "learned the empty belt after %.1f s; things moved through the region before (%d "
                "frames): a product then was not judged (start the station with the belt empty)",
                took_s,
                self.moved_while_learning,
            )

    def idle(self, now: float, stopped: bool) -> TriggerState | None:
        """The frames stopped with a product in view: it ends now, not when they come back (if
        they ever do); the first frame after them begins afresh."""
        if not stopped or self._product is None:
            return None
        ended, self._product = self._product, None
        return TriggerState(ended=ended, interrupted=True)

    def counts(self) -> TriggerCounts:
        return TriggerCounts(
            self.relearned,
            self.voided,
            self.long_products,
            self.moved_while_learning,
            self.flicker_episodes,
            self.light_steps,
        )

    def _step(self, frame: Frame, view: np.ndarray) -> TriggerState:
        cfg = self.config
        occ = self.occupancy(view)
        small = self._small.astype(np.float32)  # (once: it is compared with the next frames too)
        lit = None  # (the reference scaled to a new light, the occupancy against it)
        if occ >= cfg.off:
            self._note_flicker(frame.t_on_line, self._flicker_frame(small))
            if self._held_since is None and self._light_pid is None:
                lit = self._light_candidate(frame.t_on_line, small)
        else:
            self._note_flicker(frame.t_on_line, 0)
        if lit is not None and (self._product is not None or occ < cfg.on):
            # the product in view when the light changed has left (or nothing begins)
            self._adopt_light(lit[0], self._product)
            occ, lit = lit[1], None
        last, self._last_occ = self._last_occ, occ
        # (whether a product in view moves: only for one in progress, not on every empty frame)
        moving = self._product is not None and self._share_off(self._prev) >= STILL
        light = occ >= SUDDEN and occ - last >= LIGHT_JUMP and self._light_explains(small, self._prev)
        np.copyto(self._prev, self._small)
        self._past.append(small)
        if self._fallback is not None and (restored := self._check_fallback(frame, occ)) is not None:
            return restored
        if self._held_since is not None:
            return self._held(frame, occ)
        if self._product is None:
            if occ >= FOLLOW_OCC and (followed := self._follow_light(occ)) is not None:
                occ = self._last_occ = followed
            self.idle_peak = max(self.idle_peak, occ)
            if cfg.off <= occ < cfg.on and occ >= NEAR_MISS * cfg.on:
                self._rise = max(self._rise, occ)
            elif occ < cfg.off and self._rise:
                self.near_misses += 1
                self.near_miss_peak = max(self.near_miss_peak, self._rise)
                self._rise = 0.0
            if occ >= cfg.on:
                self._rise = 0.0
                self._begin(frame.t_on_line)
                if light:
                    self._limit = min(SUDDEN_HOLD_S, cfg.max_product_s)
                if lit is not None:  # the light, or a plain product of the belt's colour: on trial
                    self._light_pid = self._product
                    self._lit_ref[:] = lit[0]
                return TriggerState(product=self._product, occupancy=occ)
            if occ < cfg.off:
                cv2.accumulateWeighted(self._small, self._ref_f, cfg.adapt_rate)
                self._set_reference(self._ref_f)
                if self._adaptive and occ < STILL:  # (not a product moving in or out)
                    self._learn_noise()
            return TriggerState(occupancy=occ)
        pid = self._product
        if pid == self._light_pid and occ >= cfg.off and (tried := self._light_trial(frame)) is not None:
            return tried
        self._below = self._below + 1 if occ < cfg.off else 0
        if self._below >= cfg.exit_frames:
            self._product = None
            if pid == self._light_pid:  # the belt as it was: a plain product, which has left
                self._light_pid = self._light_at = None
            self._durations.append(frame.t_on_line - self._started)
            self._ended_in_view(pid)
            return TriggerState(ended=pid, occupancy=occ)
        if not self._below and moving:  # frames of a product standing still (a stopped line) do
            self._in_view += 1  # not make it look like several merged
        if light:  # the light changed with a product in view: held soon, not after max_product_s
            self._limit = min(frame.t_on_line - self._started + SUDDEN_HOLD_S, self._limit)
        if frame.t_on_line - self._started > self._limit:
            _log.warning(
                "product %d in view for more than %.0f s%s: judged; no product begins until the region "
                "matches the empty belt again, or holds still for a new one to be learned (the line "
                "stopped, or the light or the camera changed)",
                pid,
                self._limit,
                " after the whole region changed at once" if self._limit < cfg.max_product_s else "",
            )
            self._product = None
            self._held_since = frame.t_on_line
            self._recent.clear()
            self._below = 0
            self._still.clear()
            return TriggerState(product=pid, ended=pid, occupancy=occ)
        return TriggerState(product=pid, occupancy=occ, leaving=self._below > 0)

    def _ended_in_view(self, pid: int) -> None:
        """A product left: say if it was in view far longer than the recent ones (merged?), and
        count it toward trusting a belt learned while held."""
        n, lengths = self._in_view, self._lengths
        if len(lengths) >= LONG_KNOWN:
            usual = float(np.median(lengths))
            if n >= LONG_RATIO * usual and n >= usual + LONG_EXTRA:
                self.long_products += 1
                _log.warning(
                    "product %d was in view for %d frames, %.1fx the %.0f of the recent products: "
                    "several products may have passed as one (touching, or too close together for the "
                    "region to show the belt between them: at least 4/5 of its width, more on a fast "
                    "line); space them out, or lower trigger.exit_frames to 1",
                    pid,
                    n,
                    n / usual,
                    usual,
                )
        lengths.append(n)
        if self._fallback is not None:
            self._trust += 1
            if self._trust >= TRUSTED_AFTER:
                self._fallback = None

    def _flicker_frame(self, cur: np.ndarray) -> int:
        """How the light changed from the frame before, or ``FLICKER_LAG`` frames before, to
        ``cur`` (this frame, float) as flickering light changes it (see ``FLICKER_SPREAD``): 0
        not so, else ``BRIGHTER``, ``DARKER`` or both (``BRIGHTER | DARKER``: bands)."""
        past = self._past
        for k in (1, FLICKER_LAG):
            if len(past) >= k and (how := self._light_changed(cur, past[-k])):
                return how
        return 0

    @staticmethod
    def _light_changed(cur: np.ndarray, before: np.ndarray) -> int:
        """How ``cur`` is ``before`` under another light (0: it is not): one brightness factor
        per row of cells, away from 1 by ``FLICKER_CHANGE`` somewhere and by half of it in most
        rows, explains most of the region (the light falls on the belt and on the products
        alike, so a product in view does not hide it; what moves does not follow rows), and the
        factors vary smoothly down the region (an edge moving down it bends them sharply)."""
        # (float frames; channels as slices and a partition for the median: numpy's reductions
        # over small axes cost several times as much)
        total = before[..., 0] + before[..., 1] + before[..., 2]
        lit = total >= 3 * FLICKER_LIT
        cell = np.where(lit, (cur[..., 0] + cur[..., 1] + cur[..., 2]) / np.maximum(total, 1.0), 1.0)
        rows = np.partition(cell, GRID // 2, axis=1)[:, GRID // 2]  # each row's median
        away = rows - 1.0
        moved = np.abs(away) >= FLICKER_CHANGE / 2
        if np.abs(away).max() < FLICKER_CHANGE or np.count_nonzero(moved) < FLICKER_ROWS * GRID:
            return 0  # the light the same, or changed in a few rows only (an edge moving down)
        near = lit.copy()
        for c in range(3):  # each channel as its row's light makes it, within noise
            made = before[..., c] * rows[:, None]
            near &= np.abs(cur[..., c] - made) < np.maximum(FLICKER_SPREAD * made, FLICKER_NOISE)
        if np.count_nonzero(near) < FLICKER_EXPLAINED * GRID * GRID:
            return 0
        span = float(rows.max() - rows.min())
        if span >= FLICKER_SPREAD and float(np.abs(np.diff(rows, 2)).max()) > FLICKER_BEND * span:
            return 0
        return (BRIGHTER if (away[moved] > 0).any() else 0) | (DARKER if (away[moved] < 0).any() else 0)

    def _note_flicker(self, t: float, how: int) -> None:
        """Count this frame toward the light flickering: ``FLICKER_SHARE`` of the frames of the
        last ``FLICKER_WINDOW_S`` changed so, brighter and darker alike (``FLICKER_BOTH_WAYS``:
        a camera's exposure settling, or a light dimming, goes one way); said when it begins to,
        and when it has stopped."""
        window = self._flicker
        if window and t < window[-1][0]:  # the time went back (a recording's timestamps): afresh
            window.clear()
            self._flicker_count, self._flicker_ways = 0, [0, 0]
        window.append((t, how))
        self._flicker_count += how != 0
        self._flicker_ways[0] += bool(how & BRIGHTER)
        self._flicker_ways[1] += bool(how & DARKER)
        while window and t - window[0][0] > FLICKER_WINDOW_S:
            _t, old = window.popleft()
            self._flicker_count -= old != 0
            self._flicker_ways[0] -= bool(old & BRIGHTER)
            self._flicker_ways[1] -= bool(old & DARKER)
        if how:
            self.flicker_frames += 1
            self._last_flicker = t
        n = self._flicker_count
        full = t - window[0][0] >= 0.9 * FLICKER_WINDOW_S  # (a share of a few frames says little)
        if (
            not self.flickering
            and full
            and len(window) >= 10
            and n >= FLICKER_SHARE * len(window)
            and min(self._flicker_ways) >= FLICKER_BOTH_WAYS * n
        ):
            self.flickering = True
            self.flicker_episodes += 1
            _log.warning(
                "the light flickers (or the camera's automatic exposure hunts): the region brightens "
                "and darkens from frame to frame (all of it, or in bands), which the trigger takes for "
                "products (several merged, or products where there are none); %s",
                FLICKER_ADVICE,
            )
        elif self.flickering and t - self._last_flicker > FLICKER_QUIET_S:
            self.flickering = False
            _log.warning("the light no longer flickers")

    def _follow_light(self, occ: float) -> float | None:
        """The empty belt's reference scaled to this frame's light, and the occupancy against it
        (``occ`` against the reference as it is); None when one factor per channel does not
        explain the change since the frame before (at most ``FOLLOW_STEP``) and since the
        reference."""
        if len(self._past) < 2:
            return None
        ref = self._ref_f
        sample = ref[::FOLLOW_SAMPLE, ::FOLLOW_SAMPLE]
        lit = sample.mean(axis=2) >= FLICKER_LIT
        if lit.mean() < FOLLOW_LIT:
            return None
        cur = self._past[-1][::FOLLOW_SAMPLE, ::FOLLOW_SAMPLE][lit]
        before = self._past[-2][::FOLLOW_SAMPLE, ::FOLLOW_SAMPLE][lit]
        step = np.median(cur / np.maximum(before, 1.0), axis=0)
        if np.abs(step - 1.0).max() > FOLLOW_STEP:
            return None
        gain = white_gain(cur / np.maximum(sample[lit], 1.0))
        if gain is None:
            return None
        scaled = np.clip(ref * gain, 0.0, 255.0)
        now = self._past[-1]
        if float(np.abs(now - scaled).mean()) > FOLLOW_BETTER * float(np.abs(now - ref).mean()):
            return None  # (a product moving in changes the light of a few cells: not explained)
        after = self._share_off(scaled.round().astype(np.uint8), level=self._cells_level)
        if after > min(self.config.off, FOLLOW_BETTER * occ):
            return None
        self._set_reference(scaled)
        self.followed += 1
        return after

    def _light_candidate(self, t: float, cur: np.ndarray) -> tuple[np.ndarray, float] | None:
        """After a step of the light (``LIGHT_STEP_SHARE``, this frame or within ``LIGHT_STEP_S``),
        or with a product in view for longer than ``LIGHT_OVERDUE`` x the recent ones (at least
        ``SUDDEN_HOLD_S``: a step that left nothing to measure, the region saturated under the
        new light, or a light changed slowly while it was in view): the empty belt's reference
        scaled to this frame's light, and the occupancy against it, where the region matches it
        so (``LIGHT_MATCH``); None otherwise."""
        if self.flickering or min(self._flicker_ways) > 0:  # (flickering light: both ways)
            return None
        if self._past and self._light_stepped(cur, self._past[-1]):
            self._light_at = t
        if self._light_at is not None and t - self._light_at > LIGHT_STEP_S:
            self._light_at = None
        if self._light_at is None:
            usual = LIGHT_OVERDUE * float(np.median(self._durations)) if self._durations else 0.0
            if self._product is None or t - self._started <= max(SUDDEN_HOLD_S, usual):
                return None
        ref = self._ref_f
        gain = light_gain(cur, ref)
        if gain is None or float(np.abs(gain - 1.0).max()) < FLICKER_CHANGE / 2:
            return None  # (the light is back as it was, or the region holds a product)
        scaled = np.clip(ref * gain, 0.0, 255.0)
        after = self._share_off(scaled.round().astype(np.uint8), level=self._cells_level)
        return (scaled, after) if after <= LIGHT_MATCH else None

    def _adopt_light(self, scaled: np.ndarray, left: int | None) -> None:
        """The empty belt's reference is ``scaled`` (the belt under a new light) from now on;
        ``left``: the product in view when the light changed, which has left."""
        gain = float(np.median(scaled / np.maximum(self._ref_f, 1.0)))
        self._set_reference(scaled)
        self._light_at = None
        self._light_pid = None
        self.light_steps += 1
        _log.info(
            "the light changed at once (x%.2f): the empty belt's reference follows it%s",
            gain,
            "" if left is None else f" (product {left}, in view then, has left)",
        )

    def _light_trial(self, frame: Frame) -> TriggerState | None:
        """The product on trial begun by a step of the light, the region unlike the belt as it
        was: dropped (the light) when something rises against the belt under the new light, which
        begins a product, or after ``SUDDEN_HOLD_S`` with nothing in view; None: it goes on as a
        product."""
        cfg = self.config
        occ = self._share_off(self._lit_ref.round().astype(np.uint8), level=self._cells_level)
        arrived = occ >= cfg.on
        if not arrived and (occ >= cfg.off or frame.t_on_line - self._started < SUDDEN_HOLD_S):
            return None
        pid = self._product
        self._adopt_light(self._lit_ref, None)
        self._product = None
        if not arrived:
            return TriggerState(occupancy=occ, voided=pid)
        self._begin(frame.t_on_line)
        return TriggerState(product=self._product, occupancy=occ, voided=pid)

    def _begin(self, t: float) -> None:
        """A product begins at line time ``t``: the next number, its clocks and counts afresh."""
        self._product = self._next
        self._next += 1
        self._started = t
        self._limit = self.config.max_product_s
        self._below = 0
        self._in_view = 1
        self._fb_min, self._fb_follower = 1.0, False

    @staticmethod
    def _light_stepped(cur: np.ndarray, before: np.ndarray) -> bool:
        """Whether ``cur`` (this frame, float) is ``before`` (the frame before) under a light
        stepped up or down (``LIGHT_STEP_SHARE``)."""
        gain = light_gain(cur, before)
        lo, hi = LIGHT_STEP_RANGE
        if (
            gain is None
            or float(np.abs(gain - 1.0).max()) < FLICKER_CHANGE
            or gain.min() < lo
            or gain.max() > hi
        ):
            return False
        lit = _lit(before)
        made = np.minimum(before[lit] * gain, 255.0)
        near = np.abs(cur[lit] - made) < np.maximum(FLICKER_SPREAD * made, FLICKER_NOISE)
        return float(np.count_nonzero(near.all(axis=1))) >= LIGHT_STEP_SHARE * np.count_nonzero(lit)

    def _light_explains(self, cur: np.ndarray, before: np.ndarray) -> bool:
        """Whether this frame is the belt under another light, in part at least: in
        ``LIGHT_BELT`` of the region or more, each colour channel of the reference is scaled by
        the same factor (within ``LIGHT_SPREAD``; the factors are those of the cells that showed
        the belt in the frame ``before``), and the factors of the channels are about the same
        (``LIGHT_TINT``: light is about white). A product that fills the region at once is
        another colour (another factor for each channel) or shows its own print; one in view
        when the light changes leaves the rest of the region to tell. ``cur``: this frame, float."""
        ref = self._ref_f
        ratio = cur / np.maximum(ref, 1.0)
        belt = np.abs(before.astype(np.float32) - ref).max(axis=2) <= self.config.level
        if belt.mean() < LIGHT_BELT:  # the frame before showed too little of the belt to tell
            return False
        gain = white_gain(ratio[belt])
        if gain is None:
            return False
        scaled = (np.abs(ratio / gain - 1.0) < LIGHT_SPREAD).all(axis=2) & (ref.min(axis=2) >= 20)
        return float(scaled.mean()) >= LIGHT_BELT

    def _check_fallback(self, frame: Frame, occ: float) -> TriggerState | None:
        """With a belt learned while held still on trial: back to the one before when the region
        matches it again, and not the new one (``exit_frames`` in a row). The "product"
        begun against the new belt is then dropped if it was only the stopped product leaving
        (short, nothing rising behind it), else judged. None: the new belt stays."""
        cfg = self.config
        old = self._share_off(self._fallback)
        if self._product is not None:
            if old < self._fb_min:
                self._fb_min = old
            elif old >= self._fb_min + FOLLOWER_RISE:
                self._fb_follower = True
        if occ < cfg.off or old >= cfg.off:
            self._fallback_below = 0
            return None
        self._fallback_below += 1
        if self._fallback_below < cfg.exit_frames:
            return None
        self._set_reference(self._fallback)
        self._reset_noise()
        self._fallback = None
        self.restored += 1
        pid, self._product = self._product, None
        self._held_since = None
        leaving = pid is not None and not self._fb_follower and frame.t_on_line - self._started <= LEAVING_S
        _log.warning(
            "the region matches the empty belt learned before again: what was learned since was not "
            "the belt (a stopped product?); back to the one before%s",
            ""
            if pid is None
            else f", product {pid} dropped (the stopped one leaving)"
            if leaving
            else f", product {pid} judged (the stopped one leaving and what followed it)",
        )
        if pid is None:
            return TriggerState(occupancy=old)
        if leaving:
            self.voided += 1
            return TriggerState(occupancy=old, voided=pid)
        return TriggerState(ended=pid, occupancy=old)

    def _held(self, frame: Frame, occ: float) -> TriggerState:
        """The region differs from the empty belt beyond ``max_product_s``: wait for it to match
        again, or for still frames to learn a new belt from."""
        cfg = self.config
        self._below = self._below + 1 if occ < cfg.off else 0
        held_s = frame.t_on_line - self._held_since
        since = frame.t_on_line - self._started  # the region has differed from the belt this long
        if self._below >= cfg.exit_frames:
            self._held_since = None
            _log.warning(
                "the region matches the empty belt again after %.0f s: products are judged again", since
            )
            return TriggerState(occupancy=occ)
        still = self._track_still()
        blind = not still and held_s > HELD_BLIND_S and len(self._recent) >= cfg.learn_frames
        if len(self._still) >= cfg.learn_frames or blind:
            if self._fallback is None:  # (one on trial already: it stays, the last belt trusted)
                self._fallback = self._ref.copy()
            self._fallback_below = 0
            self._trust = 0
            if blind:
                self._set_reference(recurring(list(self._recent), cfg.level))
            else:
                self._set_reference(np.median(np.stack(self._still), axis=0))
            self._reset_noise()
            self._still.clear()
            self._held_since = None
            self.relearned += 1
            _log.warning(
                "the region differed from the empty belt for %.0f s: learned it again from %s (if a "
                "stopped product was learned, the old one comes back when the region matches it)",
                since,
                f"{cfg.learn_frames} still frames"
                if not blind
                else "what recurs in the last frames (none still)",
            )
            return TriggerState(occupancy=self._share_off(self._ref))
        why = f"the region has differed from the empty belt for {since:.0f} s" + (
            " and holds still: a stopped line? products are judged again when it clears"
            if still
            else f" while things move in it: the light flickers; {FLICKER_ADVICE}"
            if self.flickering
            else " while things move in it: the light or the camera changed? products pass unjudged "
            "until the belt is learned again"
        )
        return TriggerState(occupancy=occ, held=why, held_moving=not still)


def no_product_hint(
    trigger: object,
    products: int,
    suggestion: Sequence[float] | None = None,
    roi: Sequence[float] | None = None,
    note: str | None = None,
) -> str | None:
    """Why an occupancy trigger found no product, or may have missed some, although something
    crossed the region (its occupancy rose well above the empty belt's but never to ``on``), or
    merged some (a region larger than a product), and what to change. ``suggestion``: where
    products passed in the whole frame (``edge.region.RegionFinder``), said as a region to try
    when it is not about ``roi``, with ``note`` (``RegionFinder.note``)."""
    if not isinstance(trigger, OccupancyTrigger):
        return None
    cfg, peak = trigger.config, trigger.idle_peak
    try_it = ""
    if suggestion is not None and region_iou(suggestion, roi or (0.0, 0.0, 1.0, 1.0)) < SAME_REGION:
        try_it = (
            f"; things moved through the frame about --roi {','.join(f'{v:g}' for v in suggestion)} (a "
            "product's size, in the middle of where they passed): try it" + (f"; {note}" if note else "")
        )
    if products:
        if trigger.long_products and try_it:
            return (
                f"{trigger.long_products} product(s) were in view far longer than the recent ones (several "
                f"merged?): a region of one product's size shows the belt between them{try_it}"
            )
        if not trigger.near_misses:
            return None
        shown = score_text(trigger.near_miss_peak)  # rounded down: never shown as reaching on
        return (
            f"{trigger.near_misses} time(s) something covered up to {shown} of the "
            f"region and left without reaching the occupancy trigger's on level {cfg.on:g}: products may "
            "have passed unjudged; narrow the region to where they pass (--roi x,y,w,h) or lower "
            f"trigger.on{try_it}"
        )
    if trigger.still_learning:
        return (
            f"the run ended while the occupancy trigger was still learning the empty belt "
            f"({trigger.still_learning} of trigger.learn_frames = {cfg.learn_frames} frames), so nothing was "
            "judged (a run of a line must last longer than that); for photos of single products use "
            "--trigger every-frame (trigger.kind)"
        )
    if peak < max(cfg.off, cfg.on / 2):
        if try_it:
            return (
                f"no product filled the region (its peak occupancy was {peak:.2f}, trigger.on "
                f"{cfg.on:g}){try_it}"
            )
        return None
    if peak >= cfg.on:  # products began (and were dropped, or are judged in another run's frames)
        return None
    return (
        f"no product reached the occupancy trigger's on level {cfg.on:g} (the region's peak was "
        f"{peak:.2f}): products cover too little of it; narrow the region to where they pass (--roi "
        f"x,y,w,h) or lower trigger.on, or use --trigger every-frame for photos of single products{try_it}"
    )


# -- the decider ----------------------------------------------------------------------------------


@dataclass
class _Seen:
    index: int
    presence: float
    box: tuple[float, float, float, float] | None
    occupancy: float | None
    #: the class head's label and probabilities (None: a model without one)
    label: str | None = None
    class_scores: tuple[float, ...] | None = None
    center: tuple[float, float] | None = None
    #: the frame is below the trigger's ``off``: counted toward the product's end, not in view
    leaving: bool = False


@dataclass
class _Product:
    pid: int
    #: seen only after the frames stopped for this long (``TriggerState.resumed_s``)
    resumed_s: float | None = None
    seen: list[_Seen] = field(default_factory=list)
    # at most three frames kept per product: the two best-scoring of those that may still be
    # judged (their occupancy at the judging floor of the fullest view so far) and the fullest view
    best: list[tuple[float, Frame, Prediction, float]] = field(default_factory=list)
    fullest: tuple[float, Frame, Prediction] | None = None
    truths: Counter = field(default_factory=Counter)
    truth_of: dict = field(default_factory=dict)


def expect_problem(expect: str, labels: Sequence[str], class_head: bool = True) -> str | None:
    """What is wrong with expecting the variant ``expect`` of a model with ``labels`` (None: fine).
    It must be one of the labels of a class head (``class_head``, two or more labels)."""
    if len(labels) < 2 or not class_head:
        return (
            f"the model has no class head to tell stamp variants apart (its labels: "
            f"{', '.join(labels) or 'none'}); use a model trained on several stamps"
        )
    if expect not in labels:
        return f"not one of the model's labels ({', '.join(labels)})"
    return None


class Decider:
    """Aggregates a product's frames into one :class:`Verdict` (see the module docstring)."""

    def __init__(
        self,
        threshold: float,
        config: DecisionConfig | None = None,
        first_seq: int = 1,
        model_id: str = "",
        labels: Sequence[str] = (),
    ):
        """``labels``: the model's class labels, in the order of its class scores (a model
        with a class head has two or more); ``config.expect`` must be one of them."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold: expected a number in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.config = config or DecisionConfig()
        self.model_id = model_id
        self.labels = tuple(labels)
        self.expect = self.config.expect
        problem = expect_problem(self.expect, self.labels) if self.expect is not None else None
        if problem:
            raise ValueError(f"expect {self.expect!r}: {problem}")
        self._label_index = {label: i for i, label in enumerate(self.labels)}
        self._seq = first_seq
        self._current: _Product | None = None
        self.abandoned = 0
        #: products the trigger began and then found were none (``TriggerState.voided``)
        self.voided = 0

    @property
    def in_progress(self) -> int | None:
        return self._current.pid if self._current is not None else None

    def hits_so_far(self) -> int:
        """Frames of the product in progress that saw the stamp among those its verdict would
        judge if it ended now (for the overlay: it counted every frame, and a product shown
        "inspecting (3 hits)" could end MISSING with 1 hit in its log)."""
        if self._current is None:
            return 0
        return sum(s.presence >= self.threshold for s in self._judged(self._current.seen))

    def _judged(self, seen: Sequence[_Seen]) -> list[_Seen]:
        """The frames a verdict rests on: those whose occupancy is at least ``judge_share`` of
        the fullest view's (all of them when the trigger gives no occupancy)."""
        occs = [s.occupancy for s in seen if s.occupancy is not None]
        if not occs:
            return list(seen)
        floor = self.config.judge_share * max(occs)
        return [s for s in seen if s.occupancy is None or s.occupancy >= floor]

    def update(self, frame: Frame, state: TriggerState, prediction: Prediction | None) -> Verdict | None:
        """Add this frame to its product; a Verdict when a product ended with it (or, the frames
        having stopped, before it)."""
        verdict = None
        if state.voided is not None and self._current is not None and self._current.pid == state.voided:
            self._current = None  # not a product: the trigger's empty belt was wrong
            self.voided += 1
        if state.ended is not None and state.ended != state.product:
            verdict = self._end(state.ended, frame.gap_s if state.interrupted else None)
        if state.product is not None:
            cur = self._current
            if cur is None or cur.pid != state.product:
                if cur is not None:
                    self.abandoned += 1  # a trigger that never ended it; not judged on a guess
                cur = self._current = _Product(state.product, resumed_s=state.resumed_s)
            if prediction is not None:
                self._add(cur, frame, state, prediction)
        if state.ended is not None and state.ended == state.product:
            verdict = self._end(state.ended, None)
        return verdict

    def end(self, state: TriggerState, stopped_s: float | None) -> Verdict | None:
        """The verdict on a product a trigger ended without a frame (``Trigger.idle``);
        ``stopped_s``: for how long the frames have stopped (None: they had not)."""
        if state.ended is None:
            return None
        return self._end(state.ended, stopped_s if state.interrupted else None)

    def _end(self, pid: int, interrupted_s: float | None) -> Verdict | None:
        """Judge product ``pid`` if it is the one in progress and was seen."""
        if self._current is None or self._current.pid != pid:
            return None
        product, self._current = self._current, None
        if not product.seen:
            return None
        return self._judge(product, interrupted_s if interrupted_s is not None else product.resumed_s)

    def _add(self, cur: _Product, frame: Frame, state: TriggerState, pred: Prediction) -> None:
        label = pred.label if pred.class_scores is not None else None
        cur.seen.append(
            _Seen(
                frame.index,
                pred.presence,
                pred.box,
                state.occupancy,
                label,
                pred.class_scores,
                pred.center,
                state.leaving,
            )
        )
        occ = state.occupancy if state.occupancy is not None else 1.0
        if cur.fullest is None or occ > cur.fullest[0]:
            cur.fullest = (occ, frame, pred)
        # a frame below the judging floor of the fullest view so far is never judged (_judge):
        # kept among the best, it pushed out the judged frame the verdict's box is from, and the
        # snapshot showed another frame than the log's box
        floor = self.config.judge_share * cur.fullest[0]
        cur.best = [b for b in cur.best if b[3] >= floor]
        if occ >= floor:
            cur.best.append((pred.presence, frame, pred, occ))
            cur.best.sort(key=lambda t: -t[0])
            del cur.best[2:]
        if frame.truth is not None and "product" in frame.truth:
            key = frame.truth["product"]
            cur.truths[key] += 1
            cur.truth_of[key] = frame.truth

    def _judge(self, product: _Product, interrupted_s: float | None = None) -> Verdict:
        seen = product.seen
        judged = self._judged(seen)
        hits = sum(s.presence >= self.threshold for s in judged)
        need = min(max(self.config.min_hits, math.ceil(self.config.min_hit_share * len(judged))), len(judged))
        outcome = Outcome.OK if hits >= need else Outcome.MISSING
        label, votes = None, ()
        if outcome is Outcome.OK:
            label, votes = self._variant_of([s for s in judged if s.presence >= self.threshold])
            if self.expect is not None and label != self.expect:
                outcome = Outcome.WRONG
        top = max(judged, key=lambda s: s.presence)
        by_index = {s.index: s for s in judged}
        evidence: tuple[float, Frame, Prediction] | None = product.fullest
        if outcome is not Outcome.MISSING:  # the best view of the stamp it carries
            best = next((b for b in product.best if b[1].index in by_index), None)
            if best is not None:
                evidence = best[:3]
                if best[0] >= top.presence:  # (a tie: the frame shown is the one logged)
                    top = by_index[best[1].index]
        truth: Mapping[str, object] | None = None
        if product.truths:
            truth = product.truth_of[product.truths.most_common(1)[0][0]]
        verdict = Verdict(
            seq=self._seq,
            product_id=product.pid,
            outcome=outcome,
            wall_time=time.time(),
            score=top.presence,
            box=top.box,
            center=top.center,
            frames=tuple(s.index for s in judged),
            label=label,
            label_votes=votes,
            evidence=evidence[1] if evidence else None,
            evidence_prediction=evidence[2] if evidence else None,
            truth=truth,
            hits=hits,
            model_id=self.model_id,
            interrupted_s=interrupted_s,
            in_view=sum(not s.leaving for s in seen),
        )
        self._seq += 1
        return verdict

    def _variant_of(self, stamped: Sequence[_Seen]) -> tuple[str | None, tuple[tuple[str, int], ...]]:
        """The label of a product's stamp from its frames that saw it, and the votes (most first);
        see the module docstring. (None, ()) when no frame carries a class-head label."""
        voters = [s for s in stamped if s.label is not None]
        if not voters:
            return None, ()
        votes = Counter(s.label for s in voters)
        most = max(votes.values())
        tied = [label for label, n in votes.items() if n == most]

        def strength(label: str) -> tuple[float, float]:
            i = self._label_index.get(label)
            probs = [
                s.class_scores[i]
                for s in voters
                if i is not None and s.class_scores is not None and len(s.class_scores) == len(self.labels)
            ]
            mean = sum(probs) / len(probs) if probs else 0.0
            return mean, max(s.presence for s in voters if s.label == label)

        label = tied[0] if len(tied) == 1 else max(tied, key=strength)
        return label, tuple(votes.most_common())
