"""Multi-variant stamps on the data side: procedural variants, their labels through edge-synth
and every label format, and the demo line whose products carry different variants."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli.synth import main as synth_main
from edge.datasets import DatasetWriter, ObjectLabel, load_dataset
from edge.synth import (
    DEFAULT_VARIANTS,
    VARIANTS,
    Stamp,
    SynthConfig,
    Synthesizer,
    default_stamp,
    load_stamps,
    variant_stamps,
    write_stamps,
)

LABEL_FORMATS = ("voc", "yolo", "coco", "csv")


def ink_mask(stamp: Stamp, size: int = 64) -> np.ndarray:
    """The stamp's ink coverage at a common size, cropped to the ink (shape-only comparison)."""
    alpha = stamp.rgba[..., 3]
    ys, xs = np.nonzero(alpha > 128)
    crop = alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def ink_colour(stamp: Stamp) -> np.ndarray:
    return stamp.rgba[..., :3][stamp.rgba[..., 3] > 200].mean(axis=0)


# -- procedural variants ------------------------------------------------------------------------


def test_variants_are_deterministic_labelled_and_clearly_different() -> None:
    stamps = variant_stamps(len(VARIANTS))
    assert [s.label for s in stamps] == [v[0] for v in VARIANTS]
    assert [s.label for s in variant_stamps()] == ["qc-passed", "inspected", "approved"]
    again = variant_stamps(len(VARIANTS))
    assert all(np.array_equal(a.rgba, b.rgba) for a, b in zip(stamps, again, strict=True))
    # the first variant is the default stamp the bundled model was trained on
    assert np.array_equal(stamps[0].rgba, default_stamp())
    for i, a in enumerate(stamps):
        for j, b in enumerate(stamps[i + 1 :], i + 1):
            # another ink (at least 60 levels away in some channel) ...
            assert np.abs(ink_colour(a) - ink_colour(b)).max() > 60, (a.label, b.label)
            # ... and another text (same shape: 0.05-0.06 of the area differs) or, among the
            # first three (the default set), another shape as well (0.33 and more differs)
            diff = np.abs(ink_mask(a) - ink_mask(b)).mean()
            assert diff > (0.3 if j < DEFAULT_VARIANTS else 0.04), (a.label, b.label, diff)


@pytest.mark.parametrize("n", [0, len(VARIANTS) + 1, 2.5, True])
def test_variant_count_out_of_range_is_refused(n) -> None:
    with pytest.raises(ValueError, match=f"expected 1 to {len(VARIANTS)} variants"):
        variant_stamps(n)


def test_a_chosen_stamp_changes_only_the_stamp() -> None:
    synth = Synthesizer(variant_stamps(3), config=SynthConfig(negative_share=0.0))
    for seed in range(6):
        samples = {label: synth.sample(np.random.default_rng(seed), stamp=label) for label in synth.labels}
        assert {label: s.label for label, s in samples.items()} == {lb: lb for lb in synth.labels}
        assert len({s.image.shape for s in samples.values()}) == 1  # the same product, other stamp
        a, b = samples["qc-passed"].image, samples["inspected"].image
        assert not np.array_equal(a, b)
    # without a choice, the stamp drawn at random: all three turn up
    drawn = {synth.sample(np.random.default_rng(s)).label for s in range(30)}
    assert drawn == set(synth.labels)
    with pytest.raises(ValueError, match="'nope' is not one of"):
        synth.sample(np.random.default_rng(0), stamp="nope")


def test_written_stamps_load_back_with_their_labels_and_pixels(tmp_path: Path) -> None:
    stamps = variant_stamps(4)
    paths = write_stamps(stamps, tmp_path / "stamps")
    assert sorted(p.name for p in paths) == sorted(f"{s.label}.png" for s in stamps)
    png = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    assert png.shape[2] == 4 and png[..., 3].min() == 0  # PNG with transparency
    loaded = {s.label: s for s in load_stamps([tmp_path / "stamps"])}
    assert set(loaded) == {s.label for s in stamps}
    for s in stamps:
        assert np.array_equal(loaded[s.label].rgba, s.rgba)
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        write_stamps(stamps, tmp_path / "stamps")
    write_stamps(stamps, tmp_path / "stamps", overwrite=True)
    with pytest.raises(ValueError, match="holds other images"):
        write_stamps(stamps[:2], tmp_path / "stamps", overwrite=True)


def test_cli_write_stamps_for_edge_train(tmp_path: Path, capsys) -> None:
    out = tmp_path / "stamps"
    assert synth_main(["--write-stamps", str(out)]) == 0
    assert "edge-train --stamp" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["approved.png", "inspected.png", "qc-passed.png"]
    assert synth_main(["--write-stamps", str(out)]) == 2
    assert "--write-stamps: " in capsys.readouterr().err
    assert synth_main(["--write-stamps", str(out), "--variants", "5", "--overwrite"]) == 0
    assert len(load_stamps([out])) == 5
    # with --out, the data set of the same variants too
    data = tmp_path / "data"
    argv = ["--write-stamps", str(tmp_path / "two"), "--variants", "2", "--out", str(data), "--n", "6"]
    assert synth_main([*argv, "--format", "yolo"]) == 0
    assert load_dataset(data).labels == ("qc-passed", "inspected")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["inspected.png", "qc-passed.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "7", "--out", "{tmp}/o", "--n", "2"], "--variants: expected 1 to 6, got 7"),
        (["--variants", "0", "--write-stamps", "{tmp}/s"], "--variants"),
        (["--variants", "2", "--stamp", "{tmp}/a.png", "--out", "{tmp}/o", "--n", "2"], "not allowed with"),
        (["--write-stamps", "{tmp}/s", "--stamp", "{tmp}/a.png"], "does not go with --stamp"),
        (["--write-stamps", "{tmp}/file.txt"], "is not a folder"),
        (["--out", "{tmp}/o"], "--n is required with --out"),
        (["--variants", "3", "--format", "centers", "--out", "{tmp}/o", "--n", "2"], "holds one class"),
    ],
)
def test_cli_variant_flags_bad_input(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    cv2.imwrite(str(tmp_path / "a.png"), default_stamp(48, "A"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert synth_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-synth: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


# -- class labels through every label format ------------------------------------------------------


def labels_written(synth: Synthesizer, seed: int, n: int) -> dict[str, str | None]:
    """What edge-synth writes for image i: Synthesizer.sample_at(seed, i)'s label."""
    return {f"synth_{i:06d}": synth.sample_at(seed, i).label for i in range(n)}


def assert_round_trip(out: Path, fmt: str, expected: dict[str, str | None], classes: tuple[str, ...]):
    data = load_dataset(out)
    assert data.format == fmt
    got = {}
    for record in data.records:
        assert len(record.objects) <= 1
        got[Path(record.name).stem] = record.primary().label if record.objects else None
    assert got == expected
    seen = {label for label in expected.values() if label is not None}
    assert seen == set(classes)  # the test set exercises every class
    if fmt in ("yolo", "coco"):  # they store the class list: its order is the writer's
        assert data.labels == classes
    else:  # VOC and CSV have none: the labels are those seen, in first-seen order
        assert set(data.labels) == set(classes)
        first_seen = list(dict.fromkeys(r.primary().label for r in data.records if r.objects))
        assert list(data.labels) == first_seen


@pytest.mark.parametrize("fmt", LABEL_FORMATS)
def test_edge_synth_variant_labels_round_trip(tmp_path: Path, fmt: str, capsys) -> None:
    out = tmp_path / fmt
    argv = ["--variants", "3", "--out", str(out), "--n", "14", "--format", fmt, "--seed", "3"]
    assert synth_main(argv) == 0
    synth = Synthesizer(variant_stamps(3), config=SynthConfig())
    assert_round_trip(out, fmt, labels_written(synth, 3, 14), synth.labels)


@pytest.mark.parametrize("fmt", LABEL_FORMATS)
def test_edge_synth_stamp_folder_labels_round_trip(tmp_path: Path, fmt: str, capsys) -> None:
    """Several --stamp images (here a folder of them): labels are their file stems."""
    folder = tmp_path / "stamps"
    write_stamps(variant_stamps(3), folder)
    out = tmp_path / fmt
    argv = ["--stamp", str(folder), "--out", str(out), "--n", "14", "--format", fmt, "--seed", "8"]
    assert synth_main(argv) == 0
    assert "stamps approved, inspected, qc-passed" in capsys.readouterr().out  # which were taken
    synth = Synthesizer(load_stamps([folder]), config=SynthConfig())
    assert synth.labels == ("approved", "inspected", "qc-passed")  # sorted file names
    assert_round_trip(out, fmt, labels_written(synth, 8, 14), synth.labels)


@pytest.mark.parametrize("fmt", LABEL_FORMATS)
def test_dataset_writer_keeps_awkward_labels(tmp_path: Path, fmt: str) -> None:
    """Labels from file stems may hold spaces, commas, quotes, markup or non-ASCII letters."""
    classes = ("QC passed", "lot,7", "ü-stamp", '<ok>&"q"', "x'y;z")
    image = np.full((60, 80, 3), 128, np.uint8)
    expected = {}
    with DatasetWriter(tmp_path / fmt, fmt, classes) as writer:
        for i, label in enumerate([*classes, None, *reversed(classes)]):
            objects = [] if label is None else [ObjectLabel(label, box=(5 + i, 5, 40, 30 + i))]
            writer.add(f"im{i:02d}", image, objects)
            expected[f"im{i:02d}"] = label
    assert_round_trip(tmp_path / fmt, fmt, expected, classes)
