"""Second looks (``--refine``): a crop around the first box, mapped back; with the bundled model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge import contract, synth
from edge.cli.run import main as run_main
from edge.metrics import iou
from edge.runtime import (
    BUNDLED_MODEL,
    REFINE_MIN_PRESENCE,
    ModelError,
    TFLiteDetector,
    look_again,
    refine_for,
)
from edge.types import Prediction

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} not built yet")


@pytest.fixture(scope="module")
def detector() -> TFLiteDetector:
    return TFLiteDetector(threads=1)


@pytest.fixture(scope="module")
def samples() -> list[synth.SynthSample]:
    """Default-recipe images the bundled model was not trained on (its training seed is 0)."""
    s = synth.Synthesizer()
    return [s.sample_at(424_242, i) for i in range(120)]


def box_iou(a, b) -> float:
    return float(iou(np.asarray(a), np.asarray(b))[0])


def _truth(sample) -> tuple[float, float, float, float] | None:
    if sample.box is None:
        return None
    h, w = sample.image.shape[:2]
    x0, y0, x1, y1 = sample.box
    return x0 / w, y0 / h, x1 / w, y1 / h


def test_second_looks_make_the_boxes_tighter_and_presence_no_worse(detector, samples):
    firsts = detector.predict_batch([contract.prepare_input(s.image) for s in samples])
    ious, right = {}, {}
    for mode in ("off", "zoom", "zoom-flip"):
        preds = [look_again(detector, s.image, p, mode) for s, p in zip(samples, firsts, strict=True)]
        ious[mode] = np.mean(
            [box_iou(p.box, _truth(s)) for s, p in zip(samples, preds, strict=True) if s.box is not None]
        )
        right[mode] = np.mean(
            [(p.presence >= 0.5) == (s.box is not None) for s, p in zip(samples, preds, strict=True)]
        )
    # on 1,000 such images: README, "Second looks"
    assert ious["zoom"] > ious["off"] + 0.015, ious
    assert ious["zoom-flip"] > ious["zoom"] + 0.005, ious
    assert right["zoom-flip"] >= right["off"] - 0.01, right


def test_a_stamp_in_a_corner_is_found_again_where_it_is(detector):
    """The crop is pushed inside the view at its edges; the box maps back to the view's place."""
    s = synth.Synthesizer(config=synth.RECIPES["station"])
    stamp = synth.default_stamp()
    image = synth.procedural_background(np.random.default_rng(5), 480, 360)
    rng = np.random.default_rng(1)
    box, _ = synth._paint(image, synth.Stamp("stamp", stamp), rng, s.config, center=(390, 290), scale=0.22)
    truth = (box[0] / 480, box[1] / 360, box[2] / 480, box[3] / 360)
    first = detector.predict(contract.prepare_input(image))
    assert first.presence > 0.5 and box_iou(first.box, truth) > 0.5
    for mode in ("zoom", "zoom-flip"):
        again = look_again(detector, image, first, mode)
        assert box_iou(again.box, truth) > 0.8, (mode, again.box, truth)
        assert again.center == pytest.approx(
            ((again.box[0] + again.box[2]) / 2, (again.box[1] + again.box[3]) / 2)
        )
        assert again.presence > 0.5
        assert again.timings["invoke_ms"] > first.timings["invoke_ms"]  # every look is counted


def test_nothing_to_look_at_twice_is_returned_as_it_is(detector, samples):
    image = samples[0].image
    low = Prediction(presence=REFINE_MIN_PRESENCE / 2, box=(0.1, 0.1, 0.3, 0.3))
    assert look_again(detector, image, low, "zoom-flip") is low
    sure = Prediction(presence=0.9, box=(0.4, 0.4, 0.6, 0.6))
    assert look_again(detector, image, sure, "off") is sure
    # a box as large as the view: zoom has no closer look; zoom-flip adds the mirrored view
    whole = detector.predict(contract.prepare_input(image))
    whole = Prediction(presence=0.9, box=(0.0, 0.0, 1.0, 1.0), timings=whole.timings)
    assert look_again(detector, image, whole, "zoom") is whole
    flipped = look_again(detector, image, whole, "zoom-flip")
    assert flipped is not whole and flipped.timings["invoke_ms"] > whole.timings["invoke_ms"]
    # a view too small for any crop (a tiny region of interest) is looked at whole
    tiny = image[:6, :6]
    small = Prediction(presence=0.9, box=(0.2, 0.2, 0.4, 0.4))
    assert look_again(detector, tiny, small, "zoom") is small
    assert 0.0 <= look_again(detector, tiny, small, "zoom-flip").box[0] <= 1.0


def test_auto_refines_box_models_and_an_explicit_mode_needs_one():
    box, centre = contract.ModelMetadata(kind="box"), contract.ModelMetadata(kind="center")
    # a model without the measurement (converted before it, or with --no-verify) looks once
    assert refine_for(box, "auto", "m") == "off" and refine_for(centre, "auto", "m") == "off"
    assert refine_for(box, "zoom", "m") == "zoom" and refine_for(centre, "off", "m") == "off"
    with pytest.raises(ModelError, match=r"^c.tflite: refine zoom needs a box model; this one is a center"):
        refine_for(centre, "zoom", "c.tflite")
    with pytest.raises(ModelError, match="unknown"):
        refine_for(box, "twice", "m")
    # what edge-convert measured best for a model is what auto gives it
    measured = contract.ModelMetadata(kind="box", refine="zoom-flip")
    assert refine_for(measured, "auto", "m") == "zoom-flip" and refine_for(measured, "off", "m") == "off"
    assert refine_for(contract.ModelMetadata(kind="center", refine="zoom"), "auto", "m") == "off"
    again = contract.ModelMetadata.from_json(contract.ModelMetadata(kind="box", refine="zoom").to_json())
    assert refine_for(again, "auto", "m") == "zoom"
    with pytest.raises(contract.ContractError, match="refine must be one of"):
        contract.ModelMetadata(kind="box", refine="twice")


def test_the_bundled_model_carries_its_measured_second_looks(detector):
    assert detector.metadata.refine == "zoom"
    figures = detector.metadata.provenance["refine"]
    assert figures["zoom"]["iou_mean"] > figures["off"]["iou_mean"] + 0.01
    # zoom-flip's gain over zoom (IoU + presence) is under edge-convert's 0.01 margin, so zoom it is
    gain = sum(figures["zoom-flip"][k] - figures["zoom"][k] for k in ("iou_mean", "presence_accuracy"))
    assert gain < 0.01


def test_edge_bench_cold_starts_edge_run_with_the_mode_it_measures():
    from edge.cli.bench import edge_run_argv
    from edge.config import Config

    for mode in ("off", "zoom", "auto"):
        config = Config.load(None, {"source.kind": "demo", "model.refine": mode})
        argv = edge_run_argv(config, BUNDLED_MODEL, 1, Path("events.jsonl"))
        assert argv[argv.index("--refine") + 1] == mode


def test_edge_run_refines_on_the_demo_line_and_refuses_a_bad_mode(tmp_path: Path, capsys):
    summary = tmp_path / "summary.json"
    argv = ["--demo", "--seed", "1", "--as-fast-as-possible", "--max-frames", "900"]
    assert run_main([*argv, "--summary", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["refine"] == "zoom"  # auto: what the bundled model's metadata says
    assert s["products"] == s["truth_products"] >= 10
    assert s["correct"] == s["truth_products"], capsys.readouterr().out
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_main(["--demo", "--refine", "twice"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--refine" in err
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nrefine = "twice"\n')
    assert run_main(["--check-config", str(config)]) == 2
    assert "model.refine" in capsys.readouterr().err


def test_check_config_reads_the_model_and_refuses_a_refine_it_does_not_fit(tmp_path: Path, capsys):
    data = BUNDLED_MODEL.read_bytes()
    assert b'"kind": "box"' in data
    cam = tmp_path / "cam.tflite"
    cam.write_bytes(data.replace(b'"kind": "box"', b'"kind": "cam"'))  # its metadata says cam
    config = tmp_path / "station.toml"
    for path, refine, message in (
        (cam, "zoom", r"station\.toml: model\.refine: .*cam\.tflite: refine zoom needs a box model"),
        (tmp_path / "none.tflite", "auto", r"model\.path: cannot read .*none\.tflite"),
    ):
        config.write_text(f'[model]\npath = "{path}"\nrefine = "{refine}"\n')
        assert run_main(["--check-config", str(config)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    config.write_text(f'[model]\npath = "{cam}"\nrefine = "auto"\n')
    assert run_main(["--check-config", str(config)]) == 0
    said = capsys.readouterr().out
    assert re.search(r"model cam\.tflite [0-9a-f]{12} \(cam\), threshold 0\.5, second looks off", said)
    config.write_text("[model]\n")  # the bundled model: what its metadata says
    assert run_main(["--check-config", str(config)]) == 0
    assert "second looks zoom)" in capsys.readouterr().out


def _spot_model(batch: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in centre model with a grid head: its strongest cell is the input's brightest
    pixel, as sure as that pixel is bright, with the cell's offset pointing at the pixel."""
    n, g = len(batch), contract.GRID_SIZE
    bright = batch.max(axis=3).astype(np.float32)
    cells = np.full((n, g, g), -20.0, np.float32)
    offsets = np.full((n, g, g, 2), 0.5, np.float32)
    for i, im in enumerate(bright):
        y, x = np.unravel_index(int(np.argmax(im)), im.shape)
        r, c = y // contract.GRID_STRIDE, x // contract.GRID_STRIDE
        cells[i, r, c] = im[y, x] / 32.0
        for k, (p, cell) in enumerate(((x, c), (y, r))):
            shift = (p + 0.5) / contract.INPUT_WIDTH - (cell + 0.5) / g
            offsets[i, r, c, k] = (shift * g / contract.GRID_SHIFT + 1) / 2
    presence = np.ones((n, 1), np.float32)
    return {contract.PRESENCE: presence, contract.CELLS: cells, contract.CELL_OFFSETS: offsets}


def test_tiles_keep_the_surest_look_and_map_its_centre_back():
    """A small bright spot the first look sees diluted (its resize averages it with the dark
    around it) loses to a larger dimmer patch; the tile holding it sees it sharper and wins."""
    from edge.runtime import TILE_SIDE, CallableDetector

    seen = []  # images the model was given
    det = CallableDetector(
        lambda x: seen.append(len(x)) or _spot_model(x), contract.ModelMetadata(kind="center")
    )
    image = np.zeros((480, 640, 3), np.uint8)
    image[100:120, 100:120] = 145  # the patch, brightest in its middle, (110, 110)
    image[108:112, 108:112] = 150
    image[380:384, 500:504] = 255  # the spot: (502, 382)
    first = det.predict(contract.prepare_input(image))
    assert first.center == pytest.approx((110 / 640, 110 / 480), abs=0.01)
    again = look_again(det, image, first, "tiles")
    assert again.center == pytest.approx((502 / 640, 382 / 480), abs=0.01)
    assert again.presence == first.presence and again.heatmap is first.heatmap  # where, not whether
    assert sum(seen) == 5 and again.timings["set_input_ms"] > 0  # four more looks, their crops timed
    # with the spot gone, the patch is the answer again, wherever the surest look saw it
    image[380:384, 500:504] = 0
    plain = det.predict(contract.prepare_input(image))
    assert look_again(det, image, plain, "tiles").center == pytest.approx((110 / 640, 110 / 480), abs=0.01)
    # the spot in the top-left tile only, placed where the tiles' corners put it
    image[:] = 0
    image[40:43, 30:33] = 255
    image[400:420, 600:620] = 145
    image[408:412, 608:612] = 150
    first = det.predict(contract.prepare_input(image))
    assert first.center == pytest.approx((610 / 640, 410 / 480), abs=0.01)
    assert look_again(det, image, first, "tiles").center == pytest.approx((31.5 / 640, 41.5 / 480), abs=0.01)
    assert 0.5 < TILE_SIDE < 1.0
    # a centre model without a heatmap (a direct centre output) has nothing to tell the looks by
    direct = Prediction(presence=0.9, center=(0.3, 0.3))
    assert look_again(det, image, direct, "tiles") is direct


def test_tiles_are_for_centre_models_with_a_heatmap():
    grid_centre = contract.ModelMetadata(kind="center")
    assert grid_centre.refine_choices == ("off", "tiles")
    assert refine_for(contract.ModelMetadata(kind="center", refine="tiles"), "auto", "m") == "tiles"
    assert refine_for(grid_centre, "tiles", "m") == "tiles" and refine_for(grid_centre, "auto", "m") == "off"
    direct = contract.ModelMetadata(kind="center", outputs={"presence": "p", "center": "c"})
    assert direct.refine_choices == ("off",)
    with pytest.raises(ModelError, match=r"^d.tflite: refine tiles needs a centre or cam model with a"):
        refine_for(direct, "tiles", "d.tflite")
    with pytest.raises(ModelError, match=r"refine tiles needs a centre or cam .* this one is a box model"):
        refine_for(contract.ModelMetadata(kind="box"), "tiles", "b.tflite")
    # a box model's metadata naming a centre model's looks (or the other way) looks once
    assert refine_for(contract.ModelMetadata(kind="box", refine="tiles"), "auto", "m") == "off"
