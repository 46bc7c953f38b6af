"""Centre models get a crosshair; --heatmap blends the model's grid over the region."""

from __future__ import annotations

import re

import numpy as np

from edge.overlay import AMBER, GREEN, OverlayState, draw_overlay, drawable
from edge.types import Outcome, Prediction, Verdict


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 30


def test_a_centre_model_gets_a_crosshair_at_its_centre():
    blank = np.full((240, 320, 3), 128, np.uint8)
    roi = (40, 20, 200, 200)  # the centre is normalised to the region, not the frame
    pred = Prediction(presence=0.9, center=(0.25, 0.75))
    out = draw_overlay(blank.copy(), roi, OverlayState(prediction=pred, footer=False))
    cx, cy = 40 + 50, 20 + 150
    for x, y in ((cx, cy), (cx + 3, cy), (cx, cy + 3)):  # the cross's middle and arms
        b, g, r = (int(v) for v in out[y, x])
        assert g > 150 and b < 100 and r < 100, (x, y, (b, g, r))  # green, antialiased
    assert not _changed(out[30:90, 170:230], blank[30:90, 170:230]).any()  # nothing drawn far from it
    unsure = Prediction(presence=0.2, center=(0.25, 0.75))
    out = draw_overlay(blank.copy(), roi, OverlayState(prediction=unsure, footer=False))
    assert tuple(int(v) for v in out[cy, cx]) == (128, 128, 128)  # below the threshold: no crosshair


def test_heatmap_is_blended_where_the_model_looks_and_only_when_asked():
    blank = np.full((240, 240, 3), 128, np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[12:, 12:] = 1.0  # the bottom-right quarter of the region's bottom-right quarter
    pred = Prediction(presence=0.1, heatmap=heat)
    roi = (0, 0, 240, 240)
    out = draw_overlay(blank.copy(), roi, OverlayState(prediction=pred, footer=False, heatmap=True))
    assert _changed(out[198:234, 198:234], blank[198:234, 198:234]).mean() > 0.9
    assert not _changed(out[6:72, 168:234], blank[6:72, 168:234]).any()  # cold cells: as they were
    plain = draw_overlay(blank.copy(), roi, OverlayState(prediction=pred, footer=False))
    assert not _changed(plain[198:234, 198:234], blank[198:234, 198:234]).any()


def test_a_label_outside_ascii_is_drawn_by_its_plain_letters_not_question_marks():
    """OpenCV's fonts draw ASCII only ("Prüfung" came out as "Pr??fung"): accents are dropped,
    typographic dashes and quotes made plain, and letters with no ASCII form are a short code of
    them (two such labels were both '??', a WRONG variant not told from the expected one)."""
    assert drawable("Zöllner\u2013Prüfung \u201cA\u201d") == 'Zollner-Prufung "A"'
    codes = {drawable(label) for label in ("株式", "合格", "合格")}
    assert len(codes) == 2 and all(re.fullmatch(r"#[0-9a-f]{4}", c) for c in codes)
    assert drawable("v2-合格") == "v2-" + drawable("合格")
    blank = np.full((240, 320, 3), 128, np.uint8)

    def drawn(label: str) -> np.ndarray:
        verdict = Verdict(1, 7, Outcome.WRONG, 0.0, 0.9, None, (3,), label=label)
        return draw_overlay(blank.copy(), (0, 0, 320, 240), OverlayState(verdict=verdict, footer=False))

    assert np.array_equal(drawn("Prüfung"), drawn("Prufung"))
    assert not np.array_equal(drawn("Prüfung"), drawn("Pr??fung"))


def test_the_counters_and_the_verdict_stay_inside_a_portrait_or_small_frame():
    """On a 480x640 portrait frame the footer ran past the right edge (its latency cut off), and
    on a small photo a long verdict badge began left of the frame: two lines, a smaller badge."""
    verdict = Verdict(1234, 1234, Outcome.WRONG, 0.0, 0.9, None, (3,), label="inspected")
    state = OverlayState(verdict=verdict, inspected=1234, missing=56, wrong=78, expect="qc-passed", fps=29.9)
    for h, w in ((640, 480), (160, 200), (480, 640)):
        blank = np.full((h, w, 3), 128, np.uint8)
        out = draw_overlay(blank.copy(), (10, 10, w - 20, h - 20), state)
        big = out.shape[1] // w  # (a small frame is drawn on blown up)
        edge = 4
        for side in (out[:, :edge], out[:, -edge:]):  # nothing drawn into the frame's side margins
            assert not _changed(side, np.full_like(side, 128)).any(), (h, w)
        rows = _changed(out, np.full_like(out, 128)).any(axis=1)
        assert rows[-40 * big :].any()  # the footer is drawn


def test_a_stamp_of_another_variant_than_expected_is_boxed_amber_while_inspected():
    """With --expect, another variant's stamp was boxed green while its product was inspected,
    then its verdict came amber (WRONG): amber from the first frame now."""
    blank = np.full((240, 320, 3), 128, np.uint8)
    roi = (0, 0, 320, 240)

    def box_colour(label: str, expect: str | None) -> tuple[int, ...]:
        pred = Prediction(presence=0.95, box=(0.25, 0.25, 0.75, 0.75), label=label, class_scores=(0.9, 0.1))
        out = draw_overlay(blank.copy(), roi, OverlayState(prediction=pred, expect=expect, footer=False))
        return tuple(int(v) for v in out[180, 160])  # on the box's lower edge (x 80-240, y 60-180)

    assert box_colour("approved", "qc-passed") == AMBER
    assert box_colour("qc-passed", "qc-passed") == GREEN
    assert box_colour("approved", None) == GREEN  # nothing expected: any stamp is the one
