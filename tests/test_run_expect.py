"""``--expect`` and stamp variants in the runtime: the decider's vote on a product's variant (WRONG
vs OK vs MISSING, ties), WRONG in the log, snapshots and overlay, config and CLI errors, the demo
line's ground truth with variants, and end to end with a multi-variant model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge import contract
from edge.cli.run import main
from edge.config import MAX_VARIANTS, Config, ConfigError, DecisionConfig
from edge.decision import Decider, TriggerState
from edge.demo import OTHER_VARIANT_SHARE, DemoLine
from edge.overlay import AMBER, annotate_verdict, box_to_pixels
from edge.pipeline import Summary, compare_with_truth
from edge.runtime import BUNDLED_MODEL
from edge.sinks import FrameResult, SnapshotSink, verdict_record
from edge.synth import VARIANTS, variant_stamps
from edge.types import Frame, Outcome, Prediction

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: a model trained on the three procedural variants (edge-synth --write-stamps; edge-train --stamp)
VARIANTS_MODEL = FIXTURES / "variants_int8.tflite"
#: verdicts the model may get wrong on the 60 s demo line (a faint stamp missed, a variant taken for
#: another); the trigger's part (one verdict per product) must be exact
MAX_MODEL_ERRORS = 2

LABELS = ("approved", "inspected", "qc-passed")
META = contract.ModelMetadata(labels=LABELS).with_outputs(["presence", "box", "class"])  # direct form
BOX = (0.2, 0.3, 0.5, 0.6)


def head(presence: float, label: str, strength: float = 0.9) -> Prediction:
    """What the device decodes from a class head's outputs: ``label`` at probability ``strength``."""
    rest = (1.0 - strength) / (len(LABELS) - 1)
    scores = [strength if name == label else rest for name in LABELS]
    outputs = {"presence": np.array([[presence]]), "box": np.array([BOX]), "class": np.array([scores])}
    return contract.decode_outputs(outputs, META)


def frame(i: int) -> Frame:
    image = np.full((120, 160, 3), 90, np.uint8)
    return Frame(image, t_capture=i / 30, index=i)


def judge(preds: list[Prediction], expect: str | None = None, labels=LABELS, seq: int = 1):
    decider = Decider(0.5, DecisionConfig(expect=expect), first_seq=seq, labels=labels)
    for i, p in enumerate(preds):
        assert decider.update(frame(i), TriggerState(product=3), p) is None
    verdict = decider.update(frame(len(preds)), TriggerState(ended=3), None)
    assert verdict is not None
    return verdict


QC, INS, APP = "qc-passed", "inspected", "approved"


def seen(*labels: str, presence: float = 0.9) -> list[Prediction]:
    return [head(presence, label) for label in labels]


def sure(*labels: str) -> list[Prediction]:
    return [head(0.9, label, 0.95) for label in labels]


def unsure(*labels: str) -> list[Prediction]:
    return [head(0.9, label, 0.5) for label in labels]


@pytest.mark.parametrize(
    ("preds", "expect", "outcome", "label"),
    [
        (seen(QC, QC, QC, QC, QC), QC, Outcome.OK, QC),
        (seen(INS, INS, INS, INS, INS), QC, Outcome.WRONG, INS),
        (seen(APP, APP, APP, APP), QC, Outcome.WRONG, APP),
        # one frame that reads another variant changes nothing, either way
        (seen(QC, QC, INS, QC, QC), QC, Outcome.OK, QC),
        (seen(INS, INS, QC, INS, INS), QC, Outcome.WRONG, INS),
        # only the frames that saw the stamp vote: the class head says nothing without one
        (seen(QC, QC) + seen(INS, INS, INS, presence=0.1), QC, Outcome.OK, QC),
        (seen(INS, INS) + seen(QC, QC, QC, presence=0.1), QC, Outcome.WRONG, INS),
        # no stamp: MISSING, whatever the class head says (no variant, not WRONG)
        (seen(INS, INS, INS, INS, presence=0.05), QC, Outcome.MISSING, None),
        (seen(QC, INS, QC, INS, presence=0.05), QC, Outcome.MISSING, None),
        # without --expect every variant is OK, and the verdict says which
        (seen(INS, INS, INS, INS), None, Outcome.OK, INS),
        (seen(APP, APP, QC, APP), None, Outcome.OK, APP),
        (seen(INS, INS, INS, presence=0.05), None, Outcome.MISSING, None),
        # a tie goes to the higher mean class probability over the stamp frames
        ([*unsure(QC, QC), *sure(INS, INS)], QC, Outcome.WRONG, INS),
        ([*sure(QC), *unsure(INS), *sure(QC), *unsure(INS)], QC, Outcome.OK, QC),
        ([head(0.9, QC, 0.5), head(0.9, INS, 0.6), head(0.9, APP, 0.99)], INS, Outcome.WRONG, APP),
    ],
)
def test_the_majority_of_stamp_frames_decides_the_variant(preds, expect, outcome, label):
    v = judge(preds, expect)
    assert v.outcome is outcome
    assert v.label == label
    if label is None:
        assert v.label_votes == ()
    else:
        stamped = [p.label for p in preds if p.presence >= 0.5]
        assert dict(v.label_votes) == {name: stamped.count(name) for name in set(stamped)}
        assert v.label_votes[0][1] == max(stamped.count(name) for name in stamped)


def test_a_tie_without_the_label_list_goes_to_the_best_scoring_frame():
    preds = [head(0.7, QC), head(0.95, INS), head(0.8, QC), head(0.6, INS)]
    assert judge(preds, labels=()).label == INS
    preds = [head(0.7, QC), head(0.85, INS), head(0.99, QC), head(0.6, INS)]
    assert judge(preds, labels=()).label == QC


def test_wrong_evidence_is_the_best_view_of_the_other_stamp():
    preds = [head(0.7, INS), head(0.97, INS), head(0.8, INS), head(0.2, INS)]
    v = judge(preds, QC)
    assert v.outcome is Outcome.WRONG
    assert v.evidence is not None and v.evidence.index == 1
    assert v.evidence_prediction is preds[1] and v.score == pytest.approx(0.97)
    assert v.hits == 3 and v.box == pytest.approx(BOX)


def test_a_single_stamp_model_carries_no_label():
    single = contract.ModelMetadata().with_outputs(["presence", "box"])  # labels ("stamp",), no class head
    outputs = {"presence": np.array([[0.9]]), "box": np.array([BOX])}
    pred = contract.decode_outputs(outputs, single)
    assert pred.label == "stamp" and pred.class_scores is None
    v = judge([pred] * 4, labels=single.labels)
    assert v.outcome is Outcome.OK and v.label is None and v.label_votes == ()
    assert "label" not in verdict_record(v, (0, 0, 160, 120))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ((), r"expect 'qc-passed': the model has no class head .*\(its labels: none\)"),
        (("stamp",), r"expect 'qc-passed': the model has no class head .*\(its labels: stamp\)"),
        (("a", "b"), r"expect 'qc-passed': not one of the model's labels \(a, b\)"),
    ],
)
def test_the_decider_refuses_a_label_the_model_cannot_say(labels, message):
    with pytest.raises(ValueError, match=message):
        Decider(0.5, DecisionConfig(expect=QC), labels=labels)


# -- WRONG in the log, snapshots and overlay ------------------------------------------------------


def test_wrong_is_logged_with_its_label_snapshotted_and_drawn_amber(tmp_path: Path):
    preds = [head(0.9, INS), head(0.95, INS), head(0.9, QC), head(0.92, INS)]
    wrong = judge(preds, QC, seq=1)
    ok = judge(seen(QC, QC, QC), QC, seq=2)
    missing = judge(seen(QC, QC, QC, presence=0.1), QC, seq=3)
    roi_px = (0, 0, 160, 120)
    rec = verdict_record(wrong, roi_px)
    assert rec["verdict"] == "WRONG" and rec["label"] == INS
    assert rec["label_votes"] == {INS: 3, QC: 1}
    assert verdict_record(ok, roi_px)["label"] == QC
    assert "label" not in verdict_record(missing, roi_px)
    with SnapshotSink(tmp_path / "snaps") as sink:
        for v in (ok, wrong, missing):
            sink.write(FrameResult(v.evidence, roi_px, None, TriggerState(ended=3), v))
    names = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert len(names) == 4  # clean + annotated of WRONG and of MISSING; none of OK
    assert {n.split("_")[1] for n in names} == {f"{wrong.seq:06d}", f"{missing.seq:06d}"}
    # the annotated WRONG frame shows the stamp's box in amber (MISSING shows no box)
    annotated = annotate_verdict(wrong.evidence.image, roi_px, wrong)
    f = annotated.shape[1] // 160  # a frame this small is drawn on blown up (overlay.MIN_OVERLAY_SIDE)
    x0, y0, _, y1 = box_to_pixels(BOX, tuple(v * f for v in roi_px))
    assert tuple(annotated[(y0 + y1) // 2, x0]) == AMBER
    assert tuple(annotate_verdict(missing.evidence.image, roi_px, missing)[(y0 + y1) // 2, x0]) != AMBER
    # the web view's list says which variant a product carried (it showed WRONG alone)
    from edge.station.status import StationStatus

    status = StationStatus()
    for v in (ok, wrong, missing):
        status.write(FrameResult(v.evidence, roi_px, None, TriggerState(ended=3), v))
    recent = {r["verdict"]: r["label"] for r in status.snapshot()["recent"]}
    assert recent == {"OK": QC, "WRONG": INS, "MISSING": None}


# -- config and command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decision.expect": ""}, "decision.expect: expected a non-empty string, got ''"),
        ({"decision.expect": " qc-passed"}, "decision.expect: expected a stamp label"),
        ({"decision.expect": 3}, "decision.expect: expected a non-empty string, got 3"),
        ({"demo.variants": 0}, r"demo.variants: expected a whole number in 1..6, got 0"),
        ({"demo.variants": 7}, r"demo.variants: expected a whole number in 1..6, got 7"),
        ({"demo.variants": "3"}, "demo.variants: expected a whole number, got '3'"),
        ({"demo.variants": 3, "demo.stamps": "stamps/"}, "expected either demo.variants or demo.stamps"),
    ],
)
def test_bad_expect_and_demo_keys_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(None, overrides)


def test_config_keys_for_variants(tmp_path: Path):
    assert len(VARIANTS) == MAX_VARIANTS
    path = tmp_path / "c.toml"
    path.write_text('[decision]\nexpect = "inspected"\n[demo]\nvariants = 3\n')
    config = Config.load(path)
    assert config.decision.expect == "inspected" and config.demo.variants == 3
    assert Config.load(path, {"decision.expect": "approved"}).decision.expect == "approved"


@pytest.fixture(scope="module")
def relabelled_model(tmp_path_factory) -> Path:
    """The bundled model's file with metadata claiming a three-variant class head: enough for the
    label check, which reads only the metadata (the model itself would fail at loading)."""
    tflite = pytest.importorskip("convert.tflite")
    meta = contract.read_embedded_metadata(BUNDLED_MODEL.read_bytes())
    relabelled = contract.ModelMetadata(kind=meta.kind, labels=LABELS, threshold=meta.threshold)
    assert contract.CLASS in relabelled.outputs
    path = tmp_path_factory.mktemp("relabelled") / "three_variants.tflite"
    path.write_bytes(tflite.embed_metadata(BUNDLED_MODEL.read_bytes(), relabelled))
    return path


def run_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-run: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_expect_with_a_model_without_class_head_is_one_line_exit_2(tmp_path: Path, capsys):
    events = tmp_path / "verdicts.jsonl"
    err = run_error(["--demo", "--expect", QC, "--max-frames", "5", "--events", str(events)], capsys)
    assert "'qc-passed'" in err and "no class head" in err and "(its labels: stamp)" in err
    assert not events.exists()  # refused before anything was opened


def test_expect_on_the_single_stamp_demo_line_is_refused(tmp_path: Path, capsys):
    """The demo line's one stamp names no variant: its ground truth called every stamped product
    OK, so the variants model's right WRONG verdicts were counted as mistakes (2 of 7 right)."""
    err = run_error(
        ["--demo", "--model", str(VARIANTS_MODEL), "--expect", "approved", "--max-frames", "5"], capsys
    )
    assert "decision.expect 'approved': the demo line with its one stamp names no variant" in err
    assert "--demo-variants N" in err


def test_expect_of_a_label_the_model_lacks_is_one_line_exit_2(tmp_path: Path, relabelled_model, capsys):
    err = run_error(["--demo", "--model", str(relabelled_model), "--expect", "QC-passed"], capsys)
    assert "'QC-passed'" in err and "not one of the model's labels (approved, inspected, qc-passed)" in err
    assert relabelled_model.name in err
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "{relabelled_model}"\n[decision]\nexpect = "passed"\n')
    err = run_error(["--check-config", str(config)], capsys)
    assert "decision.expect 'passed': not one of the model's labels" in err
    config.write_text(f'[model]\npath = "{relabelled_model}"\n[decision]\nexpect = "approved"\n')
    assert main(["--check-config", str(config)]) == 0


def test_demo_variant_flags_bad_input(tmp_path: Path, capsys):
    err = run_error(["--demo", "--demo-variants", "7", "--max-frames", "5"], capsys)
    assert "demo.variants: expected a whole number in 1..6, got 7" in err
    (tmp_path / "empty").mkdir()
    err = run_error(["--demo", "--demo-stamps", str(tmp_path / "empty"), "--max-frames", "5"], capsys)
    assert "demo.stamps: stamp folder" in err and "holds no images" in err
    for argv in (["--demo-variants", "0"], ["--demo-variants", "2", "--demo-stamps", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(["--demo", *argv])
        assert exc.value.code == 2


def test_a_demo_line_of_stamps_the_model_does_not_know_is_warned_about(tmp_path: Path, capsys):
    from edge.synth import write_stamps

    write_stamps(variant_stamps(3)[1:], tmp_path / "stamps")
    assert main(["--demo", "--demo-stamps", str(tmp_path / "stamps"), "--max-frames", "3"]) == 0
    err = capsys.readouterr().err  # the bundled model learned the default seal only ('stamp')
    assert "WARNING: the demo line's stamps ['approved', 'inspected'] are none of the model's labels" in err
    write_stamps(variant_stamps(2), tmp_path / "two")  # the default seal ('qc-passed') and another
    assert main(["--demo", "--demo-stamps", str(tmp_path / "two"), "--max-frames", "3"]) == 0
    assert (
        "WARNING: the demo line's stamps ['inspected'] are not among the model's labels"
        in capsys.readouterr().err
    )
    write_stamps(variant_stamps(1), tmp_path / "seal")
    assert main(["--demo", "--demo-stamps", str(tmp_path / "seal"), "--max-frames", "3"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert main(["--demo", "--demo-variants", "2", "--model", str(VARIANTS_MODEL), "--max-frames", "3"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    argv = ["--demo", "--demo-variants", "5", "--model", str(VARIANTS_MODEL), "--max-frames", "3"]
    assert main(argv) == 0  # the fixture knows three variants
    assert "stamps ['released', 'grade-a'] are not among the model's labels" in capsys.readouterr().err
    argv = ["--demo", "--demo-stamps", str(tmp_path / "stamps"), "--expect", "qc-passed", "--max-frames", "3"]
    assert main([*argv, "--model", str(VARIANTS_MODEL)]) == 0  # the line: approved, inspected
    assert "--expect 'qc-passed': no product on the demo line carries it" in capsys.readouterr().err


# -- the demo line with variants ------------------------------------------------------------------


def truth(seed: int, expect: str | None = QC, n: int = 3):
    return DemoLine(seed, variant_stamps(n), expect).products_between(0, 1799)


def test_a_known_share_of_stamped_products_carry_another_variant():
    products = [p for seed in range(6) for p in truth(seed)]
    stamped = [p for p in products if p.stamp]
    others = [p for p in stamped if p.label != QC]
    assert abs(len(others) / len(stamped) - OTHER_VARIANT_SHARE) < 0.08
    assert {p.label for p in others} == {INS, APP}
    for p in products:
        assert p.expected == ("MISSING" if not p.stamp else "OK" if p.label == QC else "WRONG")
        assert (p.label is None) == (not p.stamp)
        assert p.as_dict()["expected"] == p.expected and p.as_dict().get("label") == p.label
    # without --expect every stamped product is right as it is; the truth still names its variant
    assert {p.expected for p in truth(2, None)} == {"OK", "MISSING"}
    assert [p.label for p in truth(2, None)] == [p.label for p in truth(2)]
    # the expected variant is the one most products carry
    labels = [p.label for seed in range(3) for p in truth(seed, INS) if p.stamp]
    assert labels.count(INS) / len(labels) > 0.6


def test_variants_change_only_the_stamps_of_the_line():
    """Same products, places and times as the single-stamp line. A product's look follows its
    variant: swap the other variants for others and the products with the expected one stay
    exactly alike, the rest carry other stamps."""
    seed = 4
    plain, varied = DemoLine(seed), DemoLine(seed, variant_stamps(3), QC)
    a, b = plain.products_between(0, 1199), varied.products_between(0, 1199)
    key = [(p.id, p.stamp, p.distractor, p.first_frame, p.last_frame) for p in a]
    assert key == [(p.id, p.stamp, p.distractor, p.first_frame, p.last_frame) for p in b]
    assert all(p.label is None and p.expected in ("OK", "MISSING") for p in a)  # as before
    first, *_, released, grade_a, _ = variant_stamps(len(VARIANTS))
    swapped = DemoLine(seed, [first, released, grade_a], QC)
    c = swapped.products_between(0, 1199)
    assert [p.label == QC for p in b] == [p.label == QC for p in c]
    checked = {"same": 0, "other": 0}
    for p in b:
        if not p.stamp or p.distractor:  # distractor inks avoid every variant's colour: they differ
            continue
        same = np.array_equal(varied.product_image(p.id)[0], swapped.product_image(p.id)[0])
        assert same == (p.label == QC), p
        checked["same" if same else "other"] += 1
    assert min(checked.values()) >= 2
    # deterministic under the seed, whatever order frames are asked in
    again = DemoLine(seed, variant_stamps(3), QC)
    assert np.array_equal(again.render(700), varied.render(700))
    assert again.truth_at(700) == varied.truth_at(700)


def test_a_single_stamp_line_ignores_expect():
    plain, expecting = DemoLine(5).products_between(0, 1799), DemoLine(5, None, QC).products_between(0, 1799)
    assert [p.as_dict() for p in plain] == [p.as_dict() for p in expecting]


def test_the_summary_compares_wrong_verdicts_with_the_truth():
    products = truth(1)
    wrong = [p for p in products if p.expected == "WRONG"]
    ok = [p for p in products if p.expected == "OK"]
    judged = [(p.number, Outcome(p.expected)) for p in products]  # verdicts name the truth's number
    # the model passes one product of another variant and flags a right one
    judged = [
        (pid, Outcome.OK if pid == wrong[0].number else Outcome.WRONG if pid == ok[0].number else o)
        for pid, o in judged
    ]
    result = compare_with_truth(judged, products)
    assert result["truth_wrong"] == len(wrong) >= 3
    assert result["correct"] == len(products) - 2 and result["incorrect"] == 2
    assert result["truth_missing"] == sum(not p.stamp for p in products)
    summary = Summary("demo", "m", "r", products=len(products), wrong=len(wrong), expect=QC, truth=result)
    text = summary.format()
    assert f", {len(wrong)} WRONG (expected qc-passed)" in text
    assert f"{len(wrong)} with another variant" in text and "(2 wrong verdicts)" in text
    data = summary.to_dict()
    assert data["wrong"] == len(wrong) and data["incorrect"] == 2 and data["expect"] == QC


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not VARIANTS_MODEL.is_file(),
    reason=f"{VARIANTS_MODEL.name} not in tests/fixtures yet: train it on the three procedural "
    "variants (edge-synth --write-stamps DIR; edge-train --stamp DIR; edge-convert)",
)
def test_expect_yields_wrong_on_mismatched_variants_in_the_demo_line(tmp_path: Path, capsys):
    meta = contract.read_embedded_metadata(VARIANTS_MODEL.read_bytes())
    assert set(LABELS) <= set(meta.labels) and contract.CLASS in meta.outputs
    summary, events, snaps = tmp_path / "summary.json", tmp_path / "verdicts.jsonl", tmp_path / "snaps"
    argv = ["--demo", "--demo-variants", "3", "--expect", QC, "--model", str(VARIANTS_MODEL)]
    argv += ["--seed", "1", "--as-fast-as-possible", "--max-frames", "1800"]
    assert main([*argv, "--summary", str(summary), "--events", str(events), "--snapshots", str(snaps)]) == 0
    out = capsys.readouterr().out
    s = json.loads(summary.read_text())
    # the line's truth (seed 1: 7 of its 26 products carry another variant)
    crossed = truth(1)
    assert s["truth_products"] == len(crossed) >= 25
    assert s["truth_wrong"] == sum(p.expected == "WRONG" for p in crossed) >= 5
    # one verdict per product (the trigger's part): exact
    assert s["products"] == s["truth_products"], out
    assert s["unjudged"] == s["split"] == s["extra"] == 0, out
    # the model's part: at most MAX_MODEL_ERRORS verdicts differ from the truth
    assert s["incorrect"] <= MAX_MODEL_ERRORS, out
    assert s["correct"] >= s["truth_products"] - MAX_MODEL_ERRORS, out
    assert abs(s["wrong"] - s["truth_wrong"]) <= MAX_MODEL_ERRORS, out
    assert abs(s["missing"] - s["truth_missing"]) <= MAX_MODEL_ERRORS, out
    log = [json.loads(line) for line in events.read_text().splitlines()]
    right_wrong = [r for r in log if r["verdict"] == "WRONG" == r["truth"]["expected"]]
    assert len(right_wrong) >= s["truth_wrong"] - MAX_MODEL_ERRORS
    assert all(r["label"] != QC for r in log if r["verdict"] == "WRONG")
    stamped = [r for r in log if r["verdict"] != "MISSING" and r["truth"]["stamp"]]
    assert sum(r["label"] != r["truth"]["label"] for r in stamped) <= MAX_MODEL_ERRORS
    # flagged like MISSING: every WRONG and MISSING product snapshotted (clean + annotated)
    assert len(list(snaps.iterdir())) == 2 * (s["wrong"] + s["missing"])
    assert f"{s['wrong']} WRONG (expected qc-passed)" in out


@pytest.mark.parametrize("extra", [0, 1], ids=["a label too few", "a label too many"])
def test_a_model_whose_labels_do_not_match_its_class_head_is_refused_before_it_runs(tmp_path, capsys, extra):
    """A hand-edited label list one short died at the first stamp (IndexError, a restart loop under
    systemd), `--check-config` said ok; one too many ran, and --expect accepted a label the head
    can never give."""
    import dataclasses

    from convert.tflite import embed_metadata

    raw = VARIANTS_MODEL.read_bytes()
    meta = contract.read_embedded_metadata(raw)
    labels = (*meta.labels, "extra") if extra else meta.labels[:2]
    model = tmp_path / "edited.tflite"
    model.write_bytes(embed_metadata(raw, dataclasses.replace(meta, labels=labels)))
    config = tmp_path / "station.toml"
    config.write_text(f'[source]\nkind = "demo"\n[model]\npath = "{model}"\n')
    for argv in (["--check-config", str(config)], ["--demo", "--max-frames", "5", "--model", str(model)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{model}: its class output tells 3 stamps apart, but its metadata lists {len(labels)}" in err
        assert "Traceback" not in err
