"""Synthetic data: boxes match the visible ink, determinism, stamp loading, the edge-synth CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import synth
from edge.cli.synth import main as synth_main
from edge.contract import INPUT_SHAPE
from edge.synth import (
    BOX_ALPHA_THRESHOLD,
    Backgrounds,
    Stamp,
    SynthConfig,
    Synthesizer,
    composite,
    default_stamp,
    generate_arrays,
    load_stamp,
    load_stamps,
    procedural_background,
)

SURFACE = 110  # grey level of the plain test surface
# no colour change of the ink and no blending with the surface: the green channel then says alpha
EXACT_INK = {"ink_shift": 0.0, "ink_multiply": (0.0, 0.0)}
NO_CAMERA = {
    "blur_share": 0.0,
    "motion_blur_share": 0.0,
    "shadow_share": 0.0,
    "noise": (0.0, 0.0),
    "jpeg_share": 0.0,
    "brightness": (0.0, 0.0),
    "contrast": (1.0, 1.0),
    "gamma": (1.0, 1.0),
    "white_balance": 0.0,
}


@pytest.fixture(scope="module")
def green_stamp() -> Stamp:
    """A seal in pure green, a colour nothing else in the tests has."""
    rgba = default_stamp(160, "TEST SEAL", (0, 255, 0))
    return Stamp("green", rgba)


def visible_extent(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box of the pixels whose green channel says alpha > BOX_ALPHA_THRESHOLD on the grey surface."""
    alpha = (image[..., 1].astype(np.float32) - SURFACE) / (255 - SURFACE)
    ys, xs = np.nonzero(alpha > BOX_ALPHA_THRESHOLD)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def assert_box_close(box, expected, tol: float = 1.5) -> None:
    if box is None or expected is None:  # nothing visible: then both say so
        assert box is None and expected is None, (box, expected)
        return
    assert np.abs(np.subtract(box, expected)).max() <= tol, (box, expected)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"negative_share": 1.5}, "negative_share"),
        ({"distractor_share": -0.1}, "distractor_share"),
        ({"scale": (0.7, 0.2)}, "scale"),
        ({"scale": (0.0, 0.5)}, "scale"),
        ({"image_size": (160.5, 640)}, "image_size"),
        ({"image_size": (160,)}, "image_size"),
        ({"opacity": (0.0, 1.0)}, "opacity"),
        ({"jpeg_quality": (35, 101)}, "jpeg_quality"),
        ({"rotation": "any"}, "rotation"),
        ({"min_visible": 0.0}, "min_visible"),
        ({"noise": (0.0, float("nan"))}, "noise"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"SynthConfig.{field}"):
        SynthConfig(**kwargs)


def test_config_accepts_lists_and_normalises_them_to_tuples() -> None:
    cfg = SynthConfig(scale=[0.2, 0.4], image_size=[200, 300], jpeg_quality=[50.0, 60.0])
    assert cfg.scale == (0.2, 0.4) and cfg.image_size == (200, 300) and cfg.jpeg_quality == (50, 60)


# -- boxes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # every geometric and ink variation
        {"tilt": (0.0, 0.0), "rotation": (0.0, 0.0), "fade_share": 0.0, "partial_share": 0.0},
        {"scale": (0.6, 0.7), "cut_share": 1.0, "ink_blur": (1.0, 1.2)},
        {"scale": (0.15, 0.2), "partial_share": 1.0, "fade_share": 1.0, "opacity": (0.5, 0.6)},
        {"tilt": (35.0, 40.0), "rotation": (40.0, 50.0), "cut_share": 0.5},
    ],
)
def test_composite_box_is_the_extent_of_the_visible_ink(green_stamp: Stamp, overrides: dict) -> None:
    cfg = SynthConfig(**EXACT_INK, **overrides)
    cut = invisible = 0
    for seed in range(40):
        rng = np.random.default_rng([11, seed])
        h, w = (int(v) for v in rng.integers(90, 320, 2))
        surface = np.full((h, w, 3), SURFACE, np.uint8)
        image, box = composite(surface, green_stamp, rng, cfg)
        assert_box_close(box, visible_extent(image))
        assert np.array_equal(surface, np.full((h, w, 3), SURFACE, np.uint8)), "surface must not change"
        if box is None:  # a small, faint, blurred and partial imprint can fade below the threshold
            invisible += 1
            continue
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        cut += x0 == 0 or y0 == 0 or x1 == w or y1 == h
    assert invisible <= 3
    if overrides.get("cut_share") == 1.0:
        assert cut >= 30  # most placements cut by an edge (the rest would lose > 40% of the ink)


@pytest.mark.parametrize(
    ("center", "scale"),
    [((100.0, 70.0), 0.5), ((0.0, 0.0), 0.4), ((239.0, 159.0), 0.3), ((120.3, 80.7), 0.15)],
)
def test_composite_at_a_given_place_and_scale(green_stamp: Stamp, center, scale: float) -> None:
    surface = np.full((160, 240, 3), SURFACE, np.uint8)
    cfg = SynthConfig(**EXACT_INK, tilt=(0.0, 0.0), partial_share=0.0, fade_share=0.0)
    image, box = composite(surface, green_stamp, np.random.default_rng(3), cfg, center=center, scale=scale)
    assert_box_close(box, visible_extent(image))
    x0, y0, x1, y1 = box
    if x0 > 0 and y0 > 0 and x1 < 240 and y1 < 160:  # all in view: the asked size, centred there
        assert 0.85 * scale * 160 <= max(x1 - x0, y1 - y0) <= 1.15 * scale * 160
        # a pixel's centre is at +0.5 in box (edge) coordinates
        assert abs((x0 + x1) / 2 - 0.5 - center[0]) <= 2 and abs((y0 + y1) / 2 - 0.5 - center[1]) <= 2
    else:
        assert center in ((0.0, 0.0), (239.0, 159.0))


def test_a_wide_stamp_is_sized_by_area_like_a_round_one(green_stamp: Stamp) -> None:
    """A 3:1 text stamp at the same scale covers the box area of the round seal (its longer side
    sqrt(3) times the seal's), not a third of it: sized by its longer side, such a stamp was a few
    pixels tall in the model's input and customers' text stamps learned nothing."""
    ink = np.zeros((60, 180), np.uint8)
    cv2.rectangle(ink, (2, 2), (177, 57), 255, 3)
    cv2.putText(ink, "OK 07", (30, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.4, 255, 3)
    wide = np.zeros((60, 180, 4), np.uint8)
    wide[..., 1], wide[..., 3] = 255, ink
    cfg = SynthConfig(**EXACT_INK, rotation=(0.0, 0.0), tilt=(0.0, 0.0), partial_share=0.0, fade_share=0.0)
    boxes = {}
    for name, stamp in (("seal", green_stamp), ("wide", Stamp("wide", wide))):
        surface = np.full((200, 300, 3), SURFACE, np.uint8)
        rng = np.random.default_rng(5)
        image, box = composite(surface, stamp, rng, cfg, center=(150.0, 100.0), scale=0.3)
        assert_box_close(box, visible_extent(image))
        boxes[name] = box
    (sx0, sy0, sx1, sy1), (wx0, wy0, wx1, wy1) = boxes["seal"], boxes["wide"]
    seal_area, wide_area = (sx1 - sx0) * (sy1 - sy0), (wx1 - wx0) * (wy1 - wy0)
    assert 0.85 <= wide_area / seal_area <= 1.15
    assert 2.6 <= (wx1 - wx0) / (wy1 - wy0) <= 3.4  # its shape kept
    assert 0.85 * 0.3 * 200 * 3**0.5 <= wx1 - wx0 <= 1.15 * 0.3 * 200 * 3**0.5


def test_composite_rejects_a_bad_surface(green_stamp: Stamp) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        composite(np.zeros((10, 10), np.uint8), green_stamp, np.random.default_rng(0))


def test_sample_box_is_the_extent_of_the_visible_ink(green_stamp: Stamp, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "plain.png"), np.full((300, 400, 3), SURFACE, np.uint8))
    cfg = SynthConfig(
        negative_share=0.0,
        positive_distractor_share=0.0,
        min_contrast=0.0,
        framed_share=0.0,  # a belt of any colour may be green too: framing is tested below
        **EXACT_INK,
        **NO_CAMERA,
    )
    synth_ = Synthesizer([green_stamp], Backgrounds(tmp_path), cfg)
    for index in range(25):
        s = synth_.sample_at(5, index)
        assert s.label == "green" and not s.distractor
        assert_box_close(s.box, visible_extent(s.image))
        longer = max(s.image.shape[:2])
        assert cfg.image_size[0] <= longer <= cfg.image_size[1]


def test_negatives_carry_no_box() -> None:
    synth_ = Synthesizer(config=SynthConfig(negative_share=1.0, distractor_share=1.0))
    for index in range(6):
        s = synth_.sample_at(0, index)
        assert s.box is None and s.label is None and s.distractor
        image, box, presence, cls = synth_.model_sample(0, index)
        assert image.shape == INPUT_SHAPE and image.dtype == np.uint8
        assert box.dtype == np.float32 and not box.any() and presence == 0.0 and cls == -1


def test_positives_carry_a_normalised_box_and_class() -> None:
    stamps = [Stamp("red", default_stamp(128)), Stamp("blue", default_stamp(128, "CHECKED", (200, 80, 20)))]
    synth_ = Synthesizer(stamps, config=SynthConfig(negative_share=0.0))
    seen = set()
    for index in range(12):
        s = synth_.sample_at(1, index)
        image, box, presence, cls = synth_.model_sample(1, index)
        h, w = s.image.shape[:2]
        assert image.shape == INPUT_SHAPE
        assert presence == 1.0 and synth_.labels[cls] == s.label
        np.testing.assert_allclose(box, np.divide(s.box, [w, h, w, h]), rtol=1e-6)
        assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0
        seen.add(s.label)
    assert seen == {"red", "blue"}


# -- determinism ------------------------------------------------------------------------------------


def test_same_seed_and_index_give_the_same_sample_in_a_fresh_generator() -> None:
    a = Synthesizer()
    for index in range(8):  # history (caches, pools) must not matter
        a.sample_at(3, index)
    b = Synthesizer()
    for index in (7, 2):
        sa, sb = a.sample_at(3, index), b.sample_at(3, index)
        assert np.array_equal(sa.image, sb.image)
        assert (sa.box, sa.label, sa.distractor) == (sb.box, sb.label, sb.distractor)
    assert not np.array_equal(prep(a, 3, 2), prep(a, 3, 7))
    assert not np.array_equal(prep(a, 3, 2), prep(a, 4, 2))


def prep(s: Synthesizer, seed: int, index: int) -> np.ndarray:
    return s.model_sample(seed, index)[0]


def test_generate_arrays_is_a_chunk_of_model_samples() -> None:
    s = Synthesizer()
    chunk = generate_arrays(s, 9, 4, 3)
    assert chunk["images"].shape == (3, *INPUT_SHAPE) and chunk["images"].dtype == np.uint8
    assert chunk["boxes"].shape == (3, 4) and chunk["boxes"].dtype == np.float32
    assert chunk["presence"].dtype == np.float32 and chunk["classes"].dtype == np.int32
    for i in range(3):
        image, box, presence, cls = s.model_sample(9, 4 + i)
        assert np.array_equal(chunk["images"][i], image) and np.array_equal(chunk["boxes"][i], box)
        assert chunk["presence"][i] == presence and chunk["classes"][i] == cls
    assert generate_arrays(s, 9, 0, 0)["images"].shape == (0, *INPUT_SHAPE)


# -- stamps and surfaces ----------------------------------------------------------------------------


def test_default_stamp_looks_different_for_other_texts() -> None:
    a = default_stamp()
    assert a.shape == (256, 256, 4) and a.dtype == np.uint8
    assert (a[..., 3] > 128).mean() > 0.1 and tuple(a[0, 0, :3]) == (40, 40, 200)
    b = default_stamp(text="APPROVED")
    assert np.abs(a[..., 3].astype(int) - b[..., 3]).mean() > 10
    with pytest.raises(ValueError, match="size"):
        default_stamp(8)


def test_distractor_inks_avoid_the_stamps_colour_family() -> None:
    red = Stamp("red", default_stamp(96))
    for bgr in synth._distractor_inks([red]):
        h, s, v = synth._hsv(bgr)
        assert s < 70 or v < 60 or synth._hue_distance(h, 0.0) >= 25, bgr
    black = Stamp("black", default_stamp(96, "OK", (30, 30, 30)))
    for bgr in synth._distractor_inks([black]):
        _, s, v = synth._hsv(bgr)
        assert s >= 70 and v >= 60, bgr


def write_photo_of_stamp(path: Path, quality: int = 90) -> np.ndarray:
    """A red seal "scanned" on off-white paper with a lighting gradient and noise, as a JPEG."""
    rgba = default_stamp(200)
    alpha = rgba[..., 3:4].astype(np.float32) / 255
    pad = 30
    h, w = 200 + 2 * pad, 200 + 2 * pad
    gx = np.linspace(0, 12, w, dtype=np.float32)[None, :, None]
    paper = np.array([214, 226, 236], np.float32) + gx + np.random.default_rng(0).normal(0, 2, (h, w, 3))
    inner = paper[pad:-pad, pad:-pad]
    paper[pad:-pad, pad:-pad] = inner * (1 - alpha) + rgba[..., :3] * alpha
    cv2.imwrite(str(path), np.clip(paper, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    full = np.zeros((h, w), np.uint8)
    full[pad:-pad, pad:-pad] = rgba[..., 3]
    return full


@pytest.mark.parametrize("crop", [0, 35])  # 35: the ring runs out of the picture
def test_jpg_stamp_has_its_background_keyed_out(tmp_path: Path, crop: int) -> None:
    truth = write_photo_of_stamp(tmp_path / "qc seal.jpg")
    if crop:
        photo = cv2.imread(str(tmp_path / "qc seal.jpg"))[crop:-crop, crop:-crop]
        cv2.imwrite(str(tmp_path / "qc seal.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
        truth = truth[crop:-crop, crop:-crop]
    stamp = load_stamp(tmp_path / "qc seal.jpg")
    assert stamp.label == "qc seal" and stamp.rgba.shape == (*truth.shape, 4)
    alpha = stamp.rgba[..., 3]
    edge = np.ones(truth.shape, bool)
    edge[10:-10, 10:-10] = False
    far = cv2.dilate(truth, np.ones((5, 5), np.uint8)) == 0  # 2 px from the ink: JPEG ringing
    assert (alpha[edge & far] < 0.1 * 255).mean() > 0.98  # the border is background
    assert (alpha[truth > 200] > 0).mean() > 0.97
    assert (alpha[far] < 0.2 * 255).mean() > 0.98
    ink = stamp.rgba[truth > 200][:, :3].astype(int).mean(axis=0)
    assert ink[2] > ink[0] + 80  # still red ink


def test_a_stamp_photo_is_turned_as_its_exif_orientation_says(tmp_path: Path) -> None:
    """A phone stores a photo as its sensor read it and says in EXIF how to turn it (6: a quarter
    turn clockwise, 2: mirrored); the stamp is what a viewer shows, as for every other image."""
    from test_datasets import _with_exif_orientation

    write_photo_of_stamp(tmp_path / "seal.jpg")
    photo = cv2.imread(str(tmp_path / "seal.jpg"))[:, 20:]  # not square: a turn shows in the shape
    _ok, buf = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "seal.jpg").write_bytes(buf.tobytes())
    upright = load_stamp(tmp_path / "seal.jpg").rgba[..., 3].astype(int)
    for orientation, turn in ((6, lambda a: np.rot90(a, -1)), (2, lambda a: a[:, ::-1])):
        path = tmp_path / f"seal-{orientation}.jpg"
        path.write_bytes(_with_exif_orientation(buf.tobytes(), orientation))
        alpha = load_stamp(path).rgba[..., 3].astype(int)
        expected = turn(upright)
        assert alpha.shape == expected.shape, orientation
        assert np.abs(alpha - expected).mean() < 3, orientation


def _bench_keyout():
    """scripts/bench_keyout.py: its made-up stamp pictures are this test's cases too."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_keyout.py"
    spec = importlib.util.spec_from_file_location("bench_keyout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_stamp_is_kept_from_sheets_scans_and_pngs_with_a_white_square(tmp_path: Path) -> None:
    """A stamped sheet photographed on a desk (turned, running off the picture), a card on a
    table, a scan with the lid's dark strip (along one edge, or around a corner: box IoU
    0.32-0.41), an opaque white square behind the stamp in a PNG: the stamp alone is kept
    (before: the whole sheet or square, box IoU down to 0.16); solid badges with cut-out letters
    stay whole; a seal whose ring encloses plain paper is not taken for a sheet (it was cut to
    the ring: box IoU 0.04); in a phone photo with vignetting, a hand's shadow or a blown-out
    corner the light is not taken for ink (box IoU 0.35-0.44); a yellow square behind the stamp
    in a PNG is keyed like paper, a white one behind a red badge leaves the badge whole (box IoU
    0.45, 0.60); kraft paper's fibres are not ink, a seal's ring of dots cropped close is; a
    solid logo in a dim, noisy photo stays solid (ink IoU 0.55 when its solid areas were taken
    for shade); the desk showing at the edge of a close-up is not ink (box IoU 0.24-0.34); black
    ink on a sheet on a black desk is keyed on the sheet (box IoU 0.23); a two-colour stamp's
    frame and a digit cut by a tight crop stay (0.17, 0.82)."""
    bench = _bench_keyout()
    for name, (picture, truth) in bench.pictures(np.random.default_rng(0)).items():
        path = tmp_path / name
        cv2.imwrite(str(path), picture)
        alpha = load_stamp(path).rgba[..., 3]
        kept, ink = alpha >= 128, truth >= 128
        # on kraft, a black stamp keeps fibres of its colour touching it (box IoU 0.94 here; 0.35 before)
        fibres = name.startswith("kraft")
        assert (kept & ink).sum() / (kept | ink).sum() > (0.85 if fibres else 0.9), name
        assert bench.box_iou(bench.stamp_box(alpha), bench.stamp_box(truth)) > (0.9 if fibres else 0.95), name


def test_a_photo_of_a_product_is_refused_as_a_stamp(tmp_path: Path) -> None:
    """A busy picture (foliage, fur, a product shot) has no plain background to key out: keying
    it would paste the whole scene as the "stamp"."""
    rng = np.random.default_rng(0)
    scene = cv2.resize(
        rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC
    )
    cv2.circle(scene, (320, 240), 80, (40, 40, 200), 12)
    cv2.imwrite(str(tmp_path / "product.jpg"), scene)
    with pytest.raises(ValueError, match=r"product\.jpg: the background is not plain"):
        load_stamp(tmp_path / "product.jpg")


def test_shade_on_a_page_is_not_taken_for_the_edge_of_a_sheet() -> None:
    """The shaded half of a phone photo of a page, joined with a seal's ring, was taken for a
    sheet on a desk and the seal cut at its outline (box IoU 0.78): shade has a soft outline."""
    from edge.synth import _soft_outline

    x = np.arange(800, dtype=np.float32)
    shade = np.clip((x - 300) / 200, 0, 1)[None, :, None]  # dark on the left, over 200 px
    page = np.clip(np.full((600, 800, 3), 246.0) * (0.6 + 0.4 * shade), 0, 255).astype(np.uint8)
    dark = np.zeros((600, 800), bool)
    dark[:, :400] = True
    sheet = np.full((600, 800, 3), 60, np.uint8)
    sheet[100:500, 150:650] = 235
    on_desk = np.zeros((600, 800), bool)
    on_desk[100:500, 150:650] = True
    white = np.array([100.0, 0.0, 0.0])
    assert _soft_outline(page, dark, white)
    assert not _soft_outline(sheet, on_desk, np.array([25.0, 0.0, 0.0]))


@pytest.mark.parametrize(("diameter", "shade"), [(0.7, 0.05), (0.8, 0.05), (0.9, 0.03), (0.75, 0.1)])
def test_a_close_cropped_seal_in_the_lens_shade_keeps_its_ring(diameter: float, shade: float) -> None:
    """A phone photo cropped close to a round seal, its corners a few per cent darker (lens
    shade): the paper inside the ring keys out lighter than the corners and was taken for a sheet
    on a desk, so the ring was dropped as the desk and only the text inside kept (ink IoU 0.26)."""
    size = 600
    yy, xx = np.mgrid[0:size, 0:size]
    light = 1 - shade * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size**2 / 2)
    ink = np.zeros((size, size), np.uint8)
    r = round(diameter * size / 2)
    cv2.circle(ink, (size // 2, size // 2), r, 255, r // 14)
    corner = (size // 2 - round(0.7 * r), size // 2 + round(0.15 * r))
    cv2.putText(ink, "PASS", corner, cv2.FONT_HERSHEY_SIMPLEX, r / 75, 255, r // 18)
    a = (ink / 255.0)[..., None]
    photo = np.full((size, size, 3), 235.0) * light[..., None] * (1 - a) + np.array([40.0, 40.0, 190.0]) * a
    noisy = photo + np.random.default_rng(0).normal(0, 1.5, photo.shape)
    photo = cv2.imdecode(cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8))[1], cv2.IMREAD_COLOR)
    from edge.synth import key_out_background

    kept = key_out_background(photo)[..., 3] >= 128
    truth = ink > 0
    assert (kept & truth).sum() / (kept | truth).sum() > 0.9


def test_a_blank_sheet_on_a_desk_is_refused_as_a_stamp(tmp_path: Path) -> None:
    """A phone photo of the sheet before it was stamped: the whole sheet came back as the stamp."""
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(60, 6, (600, 800, 3)) + np.linspace(0, 30, 800)[None, :, None], 0, 255)
    cv2.fillPoly(photo, [np.array([[180, 90], [640, 120], [610, 540], [150, 500]])], (228, 232, 235))
    cv2.imwrite(
        str(tmp_path / "blank.jpg"), np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    )
    with pytest.raises(ValueError, match=r"blank\.jpg: the picture shows a blank sheet"):
        load_stamp(tmp_path / "blank.jpg")


def test_a_huge_stamp_picture_is_shrunk_before_keying(tmp_path: Path) -> None:
    page = np.full((600, 4200, 3), 245, np.uint8)
    cv2.circle(page, (2100, 300), 200, (30, 30, 200), 40)
    cv2.imwrite(str(tmp_path / "phone photo.jpg"), page)
    alpha = load_stamp(tmp_path / "phone photo.jpg").rgba[..., 3]
    assert alpha.shape == (293, 2048)  # 4200 -> 2048 (MAX_STAMP_PICTURE), the aspect kept
    xs = np.nonzero(alpha >= 128)[1]
    assert abs((xs.max() - xs.min()) - 440 * 2048 / 4200) <= 4  # the ring, at the new scale


def test_png_with_transparency_is_used_as_is(tmp_path: Path, caplog) -> None:
    rgba = default_stamp(64, "PNG", (200, 30, 30))
    cv2.imwrite(str(tmp_path / "seal.png"), rgba)
    with caplog.at_level("WARNING", logger="edge.synth"):
        stamp = load_stamp(tmp_path / "seal.png", label="mine")
    assert stamp.label == "mine" and np.array_equal(stamp.rgba, rgba)
    assert not caplog.records
    cv2.imwrite(str(tmp_path / "tiny.png"), default_stamp(32))
    with caplog.at_level("WARNING", logger="edge.synth"):
        load_stamp(tmp_path / "tiny.png")
    assert "tiny.png: the stamp is only" in caplog.text and "blow it up into blur" in caplog.text


def _blank_jpg(path: Path) -> None:
    cv2.imwrite(str(path), np.full((64, 64, 3), 230, np.uint8))


def _transparent_png(path: Path) -> None:
    cv2.imwrite(str(path), np.zeros((32, 32, 4), np.uint8))


def _not_an_image(path: Path) -> None:
    path.write_text("not an image")


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.png", None, "does not exist"),
        ("text.png", _not_an_image, "cannot be read as an image"),
        ("empty.jpg", _empty_file, "cannot be read as an image"),
        ("blank.jpg", _blank_jpg, "nothing is left after keying"),
        ("clear.png", _transparent_png, "transparent"),
    ],
)
def test_bad_stamp_files_are_named_in_the_error(tmp_path: Path, name: str, make, message: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(ValueError, match=message) as info:
        load_stamp(path)
    assert str(path) in str(info.value)


def test_load_stamps_takes_folders_sorted_and_refuses_duplicate_labels(tmp_path: Path) -> None:
    folder = tmp_path / "stamps"
    folder.mkdir()
    cv2.imwrite(str(folder / "b.png"), default_stamp(48, "B"))
    cv2.imwrite(str(folder / "a.png"), default_stamp(48, "A"))
    (folder / "notes.txt").write_text("ignored")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 a macOS AppleDouble file")  # copied from a Mac
    assert [s.label for s in load_stamps([folder])] == ["a", "b"]
    cv2.imwrite(str(tmp_path / "red seal .png"), default_stamp(48, "R"))  # a space before .png
    assert [s.label for s in load_stamps([tmp_path / "red seal .png"])] == [
        "red seal"
    ]  # edge-synth took it too
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), default_stamp(48, "C"))
    with pytest.raises(ValueError, match="'a' comes from both"):
        load_stamps([folder, other / "a.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_stamps([empty])


def test_backgrounds_from_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no images") as info:
        Backgrounds(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "broken.jpg").write_text("no image")
    with pytest.raises(ValueError, match="no readable images"):
        Backgrounds(tmp_path)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "box.png"), np.full((120, 200, 3), (20, 90, 160), np.uint8))
    bg = Backgrounds(tmp_path)
    assert len(bg) == 1  # the readable ones
    for width, height in [(300, 200), (64, 180)]:
        img = bg.draw(np.random.default_rng(width), width, height)
        assert img.shape == (height, width, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - (20, 90, 160)).max() <= 1


def test_unusable_background_photos_are_named_and_the_rest_drawn_equally(tmp_path: Path, caplog) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for k, colour in enumerate(colours):
        cv2.imwrite(str(tmp_path / f"{k}good.png"), np.full((120, 160, 3), colour, np.uint8))
    (tmp_path / "0broken.jpg").write_text("no image")  # sorted first: before, its draws went to the next
    whole = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))[1].tobytes()
    (tmp_path / "1cut.jpg").write_bytes(whole[: len(whole) // 2])
    cv2.imwrite(str(tmp_path / "2tiny.png"), np.full((5, 5, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "3small.png"), np.full((40, 50, 3), (90, 90, 90), np.uint8))
    with caplog.at_level("WARNING", logger="edge.synth"):
        bg = Backgrounds(tmp_path)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "3 of 7 images skipped" in said and "0broken.jpg: cannot be read" in said
    assert "2tiny.png: under 16 px on a side" in said  # (the check reads an eighth of each photo)
    assert "1 of 7 images are under 64 px" in said and "3small.png" in said
    assert len(bg) == 4
    rng = np.random.default_rng(0)
    kinds = np.array([*colours, (90, 90, 90)])
    # each draw's photo: the nearest colour (photos are kept as JPEGs of quality 95: +-2)
    draws = [bg.draw(rng, 32, 24)[12, 16].astype(int) for _ in range(800)]
    assert max(np.abs(kinds - d).max(axis=1).min() for d in draws) <= 3
    nearest = [int(np.abs(kinds - d).max(axis=1).argmin()) for d in draws]
    for k in range(len(kinds)):
        assert 0.2 < nearest.count(k) / len(draws) < 0.3


def test_big_photos_are_kept_shrunk_and_draws_do_not_depend_on_what_memory_held(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for k in range(4):  # a phone's photo: 4000 x 3000, some detail
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        photo = cv2.resize(small, (4000, 3000), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(tmp_path / f"p{k}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(tmp_path / "p4.png"), cv2.resize(small, (1600, 1200)))
    roomy = Backgrounds(tmp_path)
    for k in range(4):
        side = max(roomy._load(tmp_path / f"p{k}.jpg").shape[:2])
        assert side == 1000  # decoded at a quarter of its size (not decoded whole, then shrunk to 1024)
    assert max(roomy._load(tmp_path / "p4.png").shape[:2]) == 1024
    assert 0 < roomy._packed_bytes < 5 * 2**20  # five photos, kept as JPEGs
    # nothing kept (no memory to spare, one decoded photo at a time) draws the same surfaces
    tight = Backgrounds(tmp_path, cache_size=1, packed_mb=0)
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for width, height in [(640, 480), (320, 240), (200, 500)] * 4:
        assert np.array_equal(roomy.draw(a, width, height), tight.draw(b, width, height))
    assert tight._packed_bytes == 0 and len(tight._cache) == 1


@pytest.mark.parametrize(("width", "height"), [(160, 90), (640, 356), (200, 333), (17, 9)])
def test_procedural_backgrounds_have_the_asked_size(width: int, height: int) -> None:
    for seed in range(5):
        img = procedural_background(np.random.default_rng(seed), width, height)
        assert img.shape == (height, width, 3) and img.dtype == np.uint8


# -- the command line ---------------------------------------------------------------------------


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix in {".jpg", ".png"})


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco", "csv", "centers"])
def test_cli_writes_n_images_in_each_format(tmp_path: Path, fmt: str, capsys) -> None:
    datasets = pytest.importorskip("edge.datasets")
    out = tmp_path / fmt
    assert synth_main(["--out", str(out), "--n", "5", "--format", fmt, "--seed", "2"]) == 0
    assert count_images(out) == 5
    assert "wrote 5 images" in capsys.readouterr().out
    loaded = datasets.load_dataset(out)
    assert len(loaded) == 5 and loaded.labels == ("stamp",)


def test_cli_recipe_draws_the_training_recipe_images(tmp_path: Path, capsys) -> None:
    """A held-out set for a model trained with --recipe station comes from the same recipe."""
    import dataclasses

    from edge.datasets import load_dataset
    from edge.synth import RECIPES, Backgrounds, Synthesizer

    boxes = {}
    for recipe in ("station", "default"):
        out = tmp_path / recipe
        assert synth_main(["--out", str(out), "--n", "6", "--seed", "4", "--recipe", recipe]) == 0
        records = sorted(load_dataset(out).records, key=lambda r: r.image_path.name)
        boxes[recipe] = [r.objects[0].box if r.objects else None for r in records]
    config = dataclasses.replace(RECIPES["station"], negative_share=RECIPES["default"].negative_share)
    expected = [Synthesizer(None, Backgrounds(), config).sample_at(4, i).box for i in range(6)]
    assert [b is None for b in boxes["station"]] == [b is None for b in expected]
    for got, want in zip(boxes["station"], expected, strict=True):
        if want is not None:
            assert np.allclose(got, want, atol=1.0), (got, want)
    assert boxes["station"] != boxes["default"]


def test_cli_overwrites_only_its_own_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "set"
    args = ["--out", str(out), "--n", "2", "--negatives", "0"]
    assert synth_main(args) == 0
    assert synth_main([*args, "--overwrite"]) == 0
    (out / "mine.txt").write_text("keep me")
    assert synth_main([*args, "--overwrite"]) == 2
    assert (out / "mine.txt").exists()
    assert "refusing to delete" in capsys.readouterr().err
    # every format's own output is replaced
    for fmt in ("yolo", "coco", "csv", "centers"):
        fargs = ["--out", str(tmp_path / fmt), "--n", "2", "--negatives", "0", "--format", fmt]
        assert synth_main(fargs) == 0
        assert synth_main([*fargs, "--overwrite"]) == 0, capsys.readouterr().err
    # a user's photos are not edge-synth's, whether loose or in a data set's images/ folder
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "IMG_0001.jpg").write_bytes(b"a photo")
    voc = tmp_path / "voc"
    (voc / "images").mkdir(parents=True)
    (voc / "images" / "raccoon-1.jpg").write_bytes(b"a photo")
    (voc / "annotations").mkdir()
    (voc / "annotations" / "raccoon-1.xml").write_text("<annotation/>")
    for folder, kept in (
        (photos, "IMG_0001.jpg"),
        (voc, "images/raccoon-1.jpg"),
        (voc / "images", "raccoon-1.jpg"),
    ):
        assert synth_main(["--out", str(folder), "--n", "2", "--overwrite"]) == 2
        assert (folder / kept).read_bytes() == b"a photo"
        assert "refusing to delete" in capsys.readouterr().err


def _bad_input_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "no_images").mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    out = str(tmp_path / "out")
    return [
        (["--out", out, "--n", "3", "--stamp", str(tmp_path / "missing.png")], "does not exist"),
        (["--out", out, "--n", "3", "--backgrounds", str(tmp_path / "no_images")], "holds no images"),
        (["--out", out, "--n", "0"], "--n"),
        (["--out", str(full / "x.txt" / "set"), "--n", "2"], "x.txt/set/images: Not a directory"),
        (
            ["--out", out, "--n", "3", "--procedural-share", "0.5"],
            "--procedural-share goes with --backgrounds",
        ),
        (["--out", out, "--n", "-4"], "--n"),
        (["--out", out, "--n", "many"], "--n"),
        (["--out", str(full), "--n", "3"], "not empty"),
        (["--out", out, "--n", "3", "--format", "xml"], "--format"),
        (["--n", "3"], "--out"),
    ]


def test_cli_bad_input_is_one_line_and_status_2(tmp_path: Path, capsys) -> None:
    for argv, message in _bad_input_cases(tmp_path):
        assert synth_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("edge-synth: ") and err.count("\n") == 1, (argv, err)
        assert message in err and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "out").exists()


def test_cli_help_shows_defaults(capsys) -> None:
    assert synth_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--negatives SHARE" in text and "(default: 0.3)" in text


def test_importing_edge_synth_pulls_in_no_tensorflow() -> None:
    code = (
        "import sys, edge.synth, edge.cli.synth\n"
        "bad = [m for m in ('tensorflow', 'keras', 'picamera2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("seed", range(12))
def test_framing_on_a_belt_moves_the_box_with_the_product(seed: int) -> None:
    from edge.synth import _frame_on_belt

    rng = np.random.default_rng(seed)
    product = np.full((200, 300, 3), 128, np.uint8)
    product[50:90, 120:200] = (255, 0, 255)  # the "stamp": a magenta block no belt has exactly
    framed, box = _frame_on_belt(product, (120, 50, 200, 90), rng, SynthConfig())
    assert framed.shape == product.shape
    ys, xs = np.nonzero(np.all(np.abs(framed.astype(int) - (255, 0, 255)) < 40, axis=2))
    assert np.allclose(box, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), atol=1.5)
    assert _frame_on_belt(product, None, rng, SynthConfig())[1] is None


def test_a_picture_of_flat_shapes_with_a_blank_light_one_is_refused(tmp_path: Path) -> None:
    """Flat shapes in many colours on a plain ground, the seal on a darker one: the lightest shape
    is taken for a sheet on a desk and found blank, though the seal is there, so the message must
    not say there is no stamp at all (it was accepted, the shapes kept as the stamp)."""
    rng = np.random.default_rng(500)
    img = np.empty((700, 900, 3), np.float32)
    img[:] = rng.uniform(60, 200, 3)
    for _ in range(40):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        x, y = int(rng.integers(0, 900)), int(rng.integers(0, 700))
        if kind == 0:
            w, h = int(rng.integers(30, 300)), int(rng.integers(30, 300))
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(10, 120)), colour, -1, cv2.LINE_AA)
        else:
            cv2.putText(img, "SALE 50%", (x, y), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.8, 2.5), colour, 3)
    img += cv2.GaussianBlur(rng.normal(0, 25, img.shape).astype(np.float32), (0, 0), 3)
    seal = synth.default_stamp(220)
    a = seal[..., 3:].astype(np.float32) / 255
    img[240:460, 340:560] = img[240:460, 340:560] * (1 - a) + seal[..., :3] * a
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "shapes.jpg"), img)
    with pytest.raises(ValueError, match=r"shapes\.jpg: the lightest part of the picture .* shows no stamp"):
        synth.load_stamp(tmp_path / "shapes.jpg")


def test_faint_shade_at_the_pictures_edge_apart_from_the_stamp_is_dropped() -> None:
    """A wholly faint mark at the picture's edge (no pixel half opaque, so its colour is the
    ink's by default: vignetting or shade on a white table) stretched the stamp's box to the top
    edge (box IoU 0.26); one in another colour went already. A faint mark reaching into the
    stamp's box stays (a faded part of the stamp cut by the crop)."""
    from edge.synth import _without_foreign_edges

    alpha = np.zeros((400, 600), np.uint8)
    cv2.circle(alpha, (300, 220), 80, 255, 10)
    alpha[0:9, 450:533] = 80  # faint shade at the top edge, far from the seal
    alpha[140:144, 390:600] = 70  # a faint stroke from beside the seal's ring to the right edge
    colour = np.zeros((400, 600, 3), np.uint8)
    colour[:] = (40, 40, 200)  # the key-out's un-mixed colour: the ink's median where not solid
    out = _without_foreign_edges(alpha, colour)
    assert not out[0:9, 450:533].any()
    assert (out[140:144, 390:600] == 70).all()
    assert (out[alpha == 255] == 255).all()


def test_a_forms_table_larger_than_the_seal_does_not_get_the_seal_dropped() -> None:
    """The largest mark is taken for the stamp; on a dense form it can be a black table, and the
    red seal apart from it was dropped as print (a reviewer's photos: ink IoU 0.11-0.28 -> 0).
    Print is dropped only beside a stamp in coloured ink."""
    from edge.synth import _without_foreign_marks

    alpha = np.zeros((600, 800), np.uint8)
    colour = np.zeros((600, 800, 3), np.uint8)
    for i in range(6):  # a black table: ruled lines joined by its frame
        cv2.line(alpha, (40, 40 + 40 * i), (760, 40 + 40 * i), 255, 3)
    cv2.rectangle(alpha, (40, 40), (760, 240), 255, 3)
    colour[:] = (30, 30, 30)
    cv2.circle(alpha, (400, 430), 90, 255, 8)  # a red seal below it
    seal = np.zeros_like(alpha)
    cv2.circle(seal, (400, 430), 90, 255, 8)
    colour[seal > 0] = (40, 40, 200)
    assert (_without_foreign_marks(alpha, colour) == alpha).all()
    # the seal the larger: the table goes
    small = alpha.copy()
    small[:250] = 0
    for i in range(3):
        cv2.line(small, (40, 40 + 40 * i), (300, 40 + 40 * i), 255, 3)
    out = _without_foreign_marks(small, colour)
    assert not out[:250].any() and (out[seal > 0] == 255).all()


def test_cli_refuses_to_write_into_the_folders_it_reads(tmp_path: Path, capsys) -> None:
    """Composites written inside --backgrounds would be read as product photos (stamped
    "negatives") next time; stamps written inside it likewise. Nothing is written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "box.png"), np.full((96, 128, 3), 180, np.uint8))
    for argv, key in (
        (["--out", str(photos / "synth"), "--n", "2"], "--out"),
        (["--write-stamps", str(photos / "stamps"), "--variants", "2"], "--write-stamps"),
    ):
        assert synth_main([*argv, "--backgrounds", str(photos)]) == 2
        err = capsys.readouterr().err.strip()
        where = f"{key} {argv[1]}: inside --backgrounds {photos}"
        assert err == f"edge-synth: error: {where} (write it outside the data)"
    assert sorted(p.name for p in photos.iterdir()) == ["box.png"]


def test_stamp_pngs_as_design_tools_export_them(tmp_path: Path, caplog) -> None:
    """A layer exported at 43 % opacity (composites fading it further hid it: a traceback after 2
    images), paper cut out tight around a seal on a transparent canvas (the paper disc was pasted
    on every product), a small stamp on an A4 canvas at 300 dpi (shrunk with the canvas to 146 px
    of 355)."""
    red = (40, 40, 200)
    ink = np.zeros((400, 400), np.uint8)
    cv2.circle(ink, (200, 200), 168, 255, 16)
    cv2.putText(ink, "QC OK", (80, 224), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 255, 6)
    cv2.imwrite(
        str(tmp_path / "faint.png"), np.dstack([np.full((400, 400, 3), red, np.uint8), ink // 255 * 110])
    )
    with caplog.at_level("WARNING", logger="edge.synth"):
        faint = load_stamp(tmp_path / "faint.png")
    assert "faint.png: its ink is at most 43 % opaque" in caplog.text
    assert faint.rgba[..., 3].max() == 255 and (faint.rgba[..., 3] == 255).sum() == (ink > 0).sum()
    synth = Synthesizer([faint], config=SynthConfig(negative_share=0.0))
    assert all(synth.sample(np.random.default_rng(i)).box is not None for i in range(40))

    for name, margin in (("disc", 25), ("disc_tight", 5)):  # paper past the ring's outer edge, px
        paper = np.full((560, 560, 3), 236, np.uint8)
        cv2.circle(paper, (280, 280), 250, red, 14)  # the ring: radius 243-257
        cv2.putText(paper, "QC OK", (150, 300), cv2.FONT_HERSHEY_SIMPLEX, 2.5, red, 8)
        cut = np.zeros((560, 560), np.uint8)
        cv2.circle(cut, (280, 280), 257 + margin, 255, -1)
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.dstack([paper, cut]))
        rgba = load_stamp(tmp_path / f"{name}.png").rgba
        kept = rgba[..., 3] >= 128
        assert kept.mean() < 0.15, name  # the ring and letters, not the disc (76 % of the picture)
        assert (rgba[..., :3][kept].mean(axis=1) > 200).mean() < 0.05, name  # hardly any paper

    canvas = np.zeros((4961, 3508, 4), np.uint8)
    stamp = default_stamp(400, "QC", (200, 30, 30))
    canvas[2000:2400, 1500:1900] = stamp
    cv2.imwrite(str(tmp_path / "a4.png"), canvas)
    _, xs = np.nonzero(load_stamp(tmp_path / "a4.png").rgba[..., 3] >= 128)
    _, true_xs = np.nonzero(stamp[..., 3] >= 128)
    assert abs((xs.max() - xs.min()) - (true_xs.max() - true_xs.min())) <= 2  # full resolution


def test_stamp_folders_say_what_they_skip_and_odd_names_are_refused(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "stamps"
    folder.mkdir()
    cv2.imwrite(str(folder / "approved.png"), default_stamp(96, "A"))
    (folder / "released.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # an iPhone's photo
    (folder / "README.txt").write_text("our stamps")
    with caplog.at_level("WARNING", logger="edge.synth"):
        assert [s.label for s in load_stamps([folder])] == ["approved"]
    assert "skipped 2 file(s) that are not stamp images (README.txt, released.heic)" in caplog.text
    latin1 = os.fsdecode(b"Pr\xfcfung.png")  # a name from an old archive, not UTF-8
    cv2.imencode(".png", default_stamp(96, "P"))[1].tofile(str(tmp_path / latin1))
    with pytest.raises(ValueError, match="its name is not valid UTF-8"):
        load_stamp(tmp_path / latin1)
    cv2.imwrite(str(tmp_path / "dot.png"), np.full((3, 3, 4), 255, np.uint8))
    with pytest.raises(ValueError, match=r"dot.png: is 3x3 px, expected at least 8x8"):
        load_stamp(tmp_path / "dot.png")
    line = np.zeros((20, 20000, 3), np.uint8)  # a rule, not a stamp: under 8 px once shrunk
    cv2.imwrite(str(tmp_path / "rule.png"), line)
    with pytest.raises(ValueError, match=r"rule.png: is 20000x20 px, too long and thin for a stamp"):
        load_stamp(tmp_path / "rule.png")


def test_a_stamp_every_varied_try_makes_invisible_is_inked_in_full_rather_than_ending_training():
    """A thin signature stamp was faded, cut or shrunk below visibility in all 8 tries about once in
    10,000 images, and the RuntimeError ended edge-train (40,000 images) with a traceback. Ink so
    light that no varied try shows it (here: 5-10 % opacity) stands for that: a last round inks it
    in full and whole, and the box is still the tight box of its visible ink."""
    from edge.synth import SynthConfig, Synthesizer

    syn = Synthesizer(config=SynthConfig(opacity=(0.05, 0.1), negative_share=0.0))
    for i in range(6):
        sample = syn.sample(np.random.default_rng(i))
        assert sample.box is not None and sample.label == "stamp"
        x0, y0, x1, y1 = (int(v) for v in sample.box)
        assert 0 <= x0 < x1 <= sample.image.shape[1] and 0 <= y0 < y1 <= sample.image.shape[0]
    again = syn.sample(np.random.default_rng(3))
    assert np.array_equal(again.image, syn.sample(np.random.default_rng(3)).image)  # deterministic


def test_edge_synth_names_the_stamp_it_took_also_when_there_is_one(tmp_path, capsys):
    """The README says edge-synth and edge-train name the stamps they took; with one stamp (a
    file, or a folder holding one) neither did, so a wrong file went unnoticed."""
    stamp = tmp_path / "approved-07.png"
    rgba = np.zeros((40, 120, 4), np.uint8)
    cv2.rectangle(rgba, (4, 4), (115, 35), (200, 60, 20, 255), 3)
    cv2.imwrite(str(stamp), rgba)
    assert synth_main(["--out", str(tmp_path / "o"), "--n", "2", "--stamp", str(stamp)]) == 0
    said = "".join(capsys.readouterr())
    assert "as voc, stamp approved-07" in said, said


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_set_written_by_several_workers_stops_cleanly_and_loads(tmp_path: Path, stop: str) -> None:
    """Ctrl-C or SIGTERM with --workers 2 hung edge-synth for good (the workers had inherited its
    SIGTERM handler, and the pool ends them with SIGTERM): it ends now with the images written so
    far, a set that loads."""
    import signal
    import time

    from edge.datasets import load_dataset

    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "edge.cli.synth", "--out", str(out), "--n", "5000", "--workers", "2"]
    # (a child of a shell in the background ignores SIGINT: Ctrl-C's default given back)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(4)
    proc.send_signal(getattr(signal, stop))
    try:
        out_text, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-9", "-P", str(proc.pid)], check=False)
        proc.kill()
        pytest.fail(f"edge-synth --workers 2 hung after {stop}")
    assert proc.returncode == 130, err
    written = int(out_text.split("wrote ")[1].split(" images")[0])
    assert 0 < written < 5000 and f"after {written} of 5000 images" in err
    assert len(load_dataset(out)) == written


def _what_a_worker_has(_: int) -> tuple[bool, object, object]:
    import signal

    from edge.synth import worker_synthesizer

    return (
        worker_synthesizer() is not None,
        signal.getsignal(signal.SIGINT),
        signal.getsignal(signal.SIGTERM),
    )


def test_pool_workers_under_a_tools_stop_handlers_die_by_sigterm_and_leave_ctrl_c_to_the_parent() -> None:
    """edge-train's workers inherited its SIGTERM handler (a KeyboardInterrupt): the pool ends its
    workers with SIGTERM at every end, and one caught it and hung the training for good (CI, once in
    some hundred runs). Every pool of synthetic images now gives its workers SIGTERM's default and
    ignores Ctrl-C there (the parent stops the run), whatever handlers the parent had."""
    import signal

    from edge.cli.common import interrupt
    from edge.pipeline import stop_signals
    from edge.synth import synth_pool

    with stop_signals(interrupt), synth_pool(Synthesizer(), 2) as pool:
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        seen = pool.map(_what_a_worker_has, range(8), chunksize=1)
    assert seen and all(s == (True, signal.SIG_IGN, signal.SIG_DFL) for s in seen), seen


def test_synthetic_images_from_several_workers_are_the_ones_one_process_makes() -> None:
    """The pool's workers make exactly the images of the single-process path, also under the stop
    handlers edge-train runs them in (ten pools in a row, each ended with SIGTERM to its workers)."""
    from edge.cli.common import interrupt
    from edge.pipeline import stop_signals
    from train.data import synthetic_pool

    synth_ = Synthesizer()
    one, _ = synthetic_pool(synth_, 3, 12, workers=1, progress=False)
    with stop_signals(interrupt):
        for _ in range(10):
            two, _ = synthetic_pool(synth_, 3, 12, workers=2, progress=False)
            np.testing.assert_array_equal(two.images, one.images)
            np.testing.assert_array_equal(two.boxes, one.boxes)


@pytest.mark.parametrize(
    ("fmt", "fills_at", "suffix"),
    [
        ("voc", "images", "jpg"),
        ("voc", "annotations", "xml"),
        ("yolo", "labels", "txt"),
        ("coco", "images", "jpg"),
        ("csv", "images", "jpg"),
    ],
)
def test_a_disk_that_fills_ends_edge_synth_naming_the_file_with_a_set_that_loads(
    tmp_path: Path, monkeypatch, capsys, fmt: str, fills_at: str, suffix: str
) -> None:
    """A full disk said only "No space left on device" and left a cut image (or an image without
    its annotation, read as a negative), and a COCO, CSV or YOLO set without its index (a review's
    finding): now the file and the count are named, and the images written before form a set that
    loads, its index written, with no part-file left."""
    import errno

    from edge.datasets import load_dataset

    out = tmp_path / "set"
    real_write, files = os.write, set()

    def disk_fills_at_the_eleventh(fd: int, data) -> int:  # the disk is what is faked
        name = os.path.realpath(f"/proc/self/fd/{fd}")
        if f"/{fills_at}/" in name:
            files.add(name)
            if len(files) > 10:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_fills_at_the_eleventh)
    argv = ["--out", str(out), "--n", "40", "--workers", "1", "--negatives", "0", "--format", fmt]
    assert synth_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"edge-synth: error: {out / fills_at / f'synth_000010.{suffix}'}: "
        f"{os.strerror(errno.ENOSPC)} (after 10 of 40 images, a set that loads)"
    ), err
    monkeypatch.undo()
    assert len(load_dataset(out)) == 10
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"synth_{i:06d}.jpg" for i in range(10)]
    assert not [p for p in out.rglob(".*")]
