"""Flags without a test of their own until now: edge-train's --flip (what it does to the labelled
crops), --epochs (the steps it means, what the run records, with --steps) and --head (the outputs
of the model written, a combination refused); edge-bench's --amx and the runtime's AMX denial
(TFLiteDetector(amx=...)), measured through the kernel's own answer in a fresh process."""

from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_blob_voc

from edge import contract
from edge.datasets import DatasetWriter, ObjectLabel
from train.cli import build_parser, prepare_data, steps_for
from train.cli import main as train_main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

#: BGR colours of a two-tone object: yellow on its left, blue on its right, so a mirrored view
#: of it is told from the view itself
YELLOW, BLUE = (40, 230, 250), (250, 80, 30)


def _two_tone_voc(root: Path, n: int, seed: int) -> Path:
    """VOC photos of noise with a small two-tone square near the left edge: in every crop that
    keeps it whole, its mirror image's place holds no part of it."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, "voc", ["stamp"]) as w:
        for i in range(n):
            img = rng.integers(60, 140, (96, 160, 3)).astype(np.uint8)
            s = int(rng.integers(20, 28)) // 2 * 2
            x, y = int(rng.integers(4, 30)), int(rng.integers(0, 96 - s))
            img[y : y + s, x : x + s // 2] = YELLOW
            img[y : y + s, x + s // 2 : x + s] = BLUE
            w.add(f"img{i:03d}", img, [ObjectLabel("stamp", (x, y, x + s, y + s))])
    return root


def _two_tone_centres(root: Path, n: int, seed: int) -> Path:
    """Centre-point labels (labels.txt) of a two-tone disc near the left edge."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        img = rng.integers(60, 140, (120, 180, 3)).astype(np.uint8)
        cx, cy = int(rng.integers(14, 40)), int(rng.integers(14, 106))
        disc = cv2.circle(np.zeros(img.shape[:2], np.uint8), (cx, cy), 11, 1, -1) > 0
        img[disc] = YELLOW
        disc[:, :cx] = False
        img[disc] = BLUE
        cv2.imwrite(str(root / f"c{i:03d}.png"), img)
        lines.append(f"c{i:03d}.png {cx / 180:.4f} {cy / 120:.4f}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root / "labels.txt"


def _handedness(rgb: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    """How the two-tone object lies in ``rgb`` within the pixel rectangle (x0, y0)-(x1, y1):
    about -200 as drawn (yellow left of the middle, blue right of it), about +200 mirrored, near
    0 where the rectangle holds no part of it (background noise)."""
    ix0, iy0 = max(int(round(x0)), 0), max(int(round(y0)), 0)
    ix1, iy1 = min(int(round(x1)), rgb.shape[1]), min(int(round(y1)), rgb.shape[0])
    patch = rgb[iy0:iy1, ix0:ix1].astype(float)
    if patch.shape[0] < 2 or patch.shape[1] < 2:
        return 0.0
    yellowness = patch[..., 0] - patch[..., 2]  # R - B: + on yellow, - on blue, ~0 on grey noise
    side = np.sign(np.arange(patch.shape[1]) + 0.5 - patch.shape[1] / 2)  # -1 left half, +1 right
    return float((yellowness * side[None, :]).mean())


def _prepared(tmp_path: Path, data: Path, *flags: str):
    """The training pool exactly as edge-train builds it (train.cli.prepare_data) for these flags."""
    argv = ["--out", str(tmp_path / "run"), "--data", str(data), "--copies", "12", "--workers", "1"]
    args = build_parser().parse_args([*argv, "--quiet", *flags])
    return prepare_data(args)


def test_flip_mirrors_about_half_of_the_labelled_crops_with_their_boxes(tmp_path):
    """--flip had no test: a crop mirrored without its box (or a box mirrored without its crop)
    trains the model to point at the empty side, and the CLI not passing the flag on to the pool
    would leave every crop as photographed."""
    data = _two_tone_voc(tmp_path / "voc", 8, 5)
    for flags, mirrored_share in (((), (0.0, 0.0)), (("--flip",), (0.3, 0.7))):
        prep = _prepared(tmp_path, data, *flags)
        pool = prep.train
        assert prep.kind == "box" and len(pool) == 7 * 12 and pool.has_box.all()
        mirrored = 0
        for image, box in zip(pool.images, pool.boxes, strict=True):
            side = _handedness(image, *(box * contract.INPUT_WIDTH))
            # the box holds the object (one half of it at least: random erasing hides up to half)
            assert abs(side) > 40, (flags, box, side)
            mirrored += side > 0
        lo, hi = mirrored_share
        assert lo <= mirrored / len(pool) <= hi, (flags, mirrored)


def test_flip_mirrors_centre_point_labels_with_their_crops(tmp_path):
    """A centre-point set (labels.txt) trains a centre model: --flip must move the centre with the
    mirrored crop (a centre left where it was lands on the background)."""
    labels = _two_tone_centres(tmp_path / "c", 8, 6)
    for flags, mirrored_share in (((), (0.0, 0.0)), (("--flip",), (0.3, 0.7))):
        prep = _prepared(tmp_path, labels, *flags)
        pool = prep.train
        assert prep.kind == "center" and len(pool) == 7 * 12 and not pool.has_box.any()
        mirrored = 0
        for image, (cx, cy) in zip(pool.images, pool.centers * contract.INPUT_WIDTH, strict=True):
            side = _handedness(image, cx - 4, cy - 4, cx + 4, cy + 4)
            assert abs(side) > 40, (flags, cx, cy, side)
            mirrored += side > 0
        lo, hi = mirrored_share
        assert lo <= mirrored / len(pool) <= hi, (flags, mirrored)


# -- --epochs and --steps -------------------------------------------------------------------------


def _train(out: Path, data: Path, *flags: str, capsys) -> int:
    argv = ["--out", str(out), "--data", str(data), "--batch-size", "8", "--workers", "1", "--quiet"]
    rc = train_main([*argv, *flags])
    assert rc == 0, capsys.readouterr().err
    return rc


def test_epochs_runs_the_steps_that_many_passes_over_the_training_pool_take_and_records_them(
    tmp_path, capsys
):
    """--epochs had no test. An epoch is one pass over the training pool (the augmented crops,
    not the photos): 3 epochs of 4 photos x 3 crops in batches of 8 are ceil(36 / 8) = 5 steps,
    not 4 (a last part-batch counts), and config.json, metrics.json and history.json (the curves)
    say so."""
    data = write_blob_voc(tmp_path / "voc", 6, 1)
    out = tmp_path / "run"
    _train(
        out, data, "--val-split", "0.34", "--copies", "3", "--epochs", "3", "--eval-every", "2", capsys=capsys
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 4 * 3 and metrics["n_val"] == 2
    assert metrics["steps_run"] == 5 == math.ceil(3 * 12 / 8) and metrics["stop_reason"] == "steps done"
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and config["steps"] is None and config["total_steps"] == 5
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4, 5]  # validated every 2 steps and at the last one
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "model.json").read_text())["provenance"]["steps"] == metrics["best_step"]


@pytest.mark.parametrize(
    ("steps", "epochs", "n_train", "batch", "expected"),
    [
        (None, None, 640, 64, 120),  # the default: 12 epochs
        (None, 1, 640, 64, 10),
        (None, 1, 65, 64, 2),  # a part-batch is a step
        (None, 2, 100, 64, 4),  # 200 images in batches of 64: 3 steps and a part-batch
        (7, None, 640, 64, 7),  # --steps as given, whatever the pool
    ],
)
def test_the_schedule_is_steps_as_given_or_epochs_over_the_pool(steps, epochs, n_train, batch, expected):
    """steps_for: the training length edge-train runs, records (config.json total_steps) and
    decays the learning rate over; 12 epochs when neither flag is given (as --epochs' help says)."""
    args = build_parser().parse_args(["--out", "o", "--batch-size", str(batch)])
    args.steps, args.epochs = steps, epochs
    assert steps_for(args, n_train) == expected


def test_steps_and_epochs_together_are_refused_in_one_line_with_exit_2(tmp_path, capsys):
    """Both flags name the length of the run: which one won would be a guess, so both are a usage
    error, said before anything is read or made."""
    with pytest.raises(SystemExit) as exit_:
        train_main(
            ["--out", str(tmp_path / "o"), "--data", str(tmp_path / "x"), "--steps", "3", "--epochs", "2"]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.strip() == "edge-train: error: give --steps or --epochs, not both"
    assert list(tmp_path.iterdir()) == []


# -- --head -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "labels", "kind", "outputs"),
    [
        # not the defaults (dense for box, grid for centre): the flag, not the kind, picks the head
        ("grid", "voc", "box", {contract.PRESENCE, contract.CELLS, contract.CELL_BOXES}),
        ("dense", "centres", "center", {contract.PRESENCE, contract.CENTER}),
    ],
)
def test_head_gives_the_model_written_the_outputs_of_that_head(tmp_path, capsys, head, labels, kind, outputs):
    """--head had no test through the CLI: the saved model.keras (what edge-convert converts and
    the device runs) has the outputs of the head asked for, in the form the contract accepts for
    its kind."""
    from train.model import head_of, load_model

    data = (
        write_blob_voc(tmp_path / "voc", 6, 2) if labels == "voc" else _two_tone_centres(tmp_path / "c", 6, 3)
    )
    out = tmp_path / "run"
    _train(out, data, "--head", head, "--copies", "2", "--steps", "1", capsys=capsys)
    model = load_model(out / "model.keras")
    assert set(model.output_names) == outputs and head_of(model) == head
    written = json.loads((out / "model.json").read_text())
    meta = contract.ModelMetadata(kind=written["kind"], labels=tuple(written["labels"]))
    assert meta.kind == kind
    meta.with_outputs(model.output_names).check_outputs(model.output_names)
    assert json.loads((out / "config.json").read_text())["head"] == head


@pytest.mark.parametrize("head", [["--head", "dense"], ["--init", "bundled"]])
def test_a_weak_model_with_the_dense_head_is_refused_in_one_line_with_exit_2(tmp_path, capsys, head):
    """--weak trains a cam model, whose presence is the peak of a grid's activation map: a dense
    head has no grid. The refusal is one line naming the fix, exit status 2, no model written."""
    labels = _two_tone_centres(tmp_path / "c", 6, 4)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(labels), "--weak", *head, "--steps", "1"]
    assert train_main([*argv, "--copies", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("edge-train: error: ") and "needs the grid head" in err and "--head grid" in err
    assert not out.exists()  # refused before the data is read: no preview, no run folder


def test_an_unknown_head_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--out", str(tmp_path / "o"), "--data", str(tmp_path / "x"), "--head", "sparse"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--head: invalid choice: 'sparse'" in err


# -- AMX ----------------------------------------------------------------------------------------------

#: run in a fresh process (the denial is for the life of a process, and this one may have had it
#: since an earlier test): ``request()`` asks the kernel for the AMX tile data permission, as
#: XNNPACK does, and says what it answered
_PROBE = textwrap.dedent(
    """
    import ctypes, errno, json, sys
    import edge.runtime as rt

    libc = ctypes.CDLL(None, use_errno=True)

    def request():  # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
        if libc.syscall(158, 0x1023, 18) == 0:
            return "granted"
        return errno.errorcode.get(ctypes.get_errno(), "?")

    if sys.argv[1] == "no-amx-cpu":  # the hardware boundary: a CPU without AMX
        rt.cpu_has_amx = lambda: False
    steps = {"cpu_has_amx": rt.cpu_has_amx()}
    for name in sys.argv[2:]:
        if name == "bench":
            from edge.cli.bench import main
            argv = ["--demo", "--invoke-only", "--frames", "3", "--warmup", "1"]
            rc = main([*argv, *sys.argv[sys.argv.index("bench") + 1 :]])
            steps["bench"] = [rc, request()]
            break
        detector = rt.TFLiteDetector(amx=name.startswith("amx"))
        steps[name] = [detector.amx_denied, request()]
    print(json.dumps(steps))
    """
)


def _probe(*argv: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _x86_linux() -> bool:
    import platform

    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def _x86_linux_and_fresh() -> None:
    """Skip off x86-64 Linux, and where this test process has refused AMX itself already: its
    children inherit the refusal (run the file alone, or the suite, which runs these first)."""
    from edge.runtime import amx_denied_in_this_process

    if not _x86_linux():
        pytest.skip("arch_prctl's AMX permission is x86-64 Linux's")
    if amx_denied_in_this_process():
        pytest.skip("this test process has refused AMX already (an interpreter was built before)")


@pytest.fixture
def _fresh_x86_linux() -> None:
    _x86_linux_and_fresh()


def needs_x86_linux(test):
    return pytest.mark.fresh_process(pytest.mark.usefixtures("_fresh_x86_linux")(test))


@needs_x86_linux
def test_amx_true_leaves_the_permission_and_the_default_denies_it_on_a_cpu_with_amx():
    """TFLiteDetector(amx=True) must leave XNNPACK free to take the AMX tiles (edge-bench --amx
    measures that path); the default refuses them (the int8 model is 1.3x slower with them), and
    ``amx_denied`` says which happened. Checked by asking the kernel, as XNNPACK does: EPERM is the
    seccomp filter's answer. On a CPU without AMX nothing is denied and the answer is the CPU's."""
    got = _probe("real", "amx", "default", "amx-after")
    has_amx = got["cpu_has_amx"]
    assert has_amx == (" amx_tile" in Path("/proc/cpuinfo").read_text())
    allowed_denied, allowed_answer = got["amx"]
    assert allowed_denied is False and allowed_answer != "EPERM"
    if has_amx:
        assert allowed_answer == "granted"
    assert got["default"] == ([True, "EPERM"] if has_amx else [False, allowed_answer])
    # a denial is for the process's life: a detector asking for AMX after it says it is denied
    assert got["amx-after"] == got["default"]


@needs_x86_linux
def test_the_default_denies_nothing_on_a_cpu_without_amx():
    """Off AMX CPUs there is nothing to refuse: no seccomp filter is installed (it is for the life
    of the process and its children, and says 'denied' in edge-bench's report)."""
    got = _probe("no-amx-cpu", "default")
    denied, answer = got["default"]
    assert denied is False and answer != "EPERM"


@needs_x86_linux
@pytest.mark.parametrize("amx", [True, False])
def test_edge_bench_amx_reaches_the_runtime_and_its_report_says_so(tmp_path, amx):
    """edge-bench --amx: the detector it measures is built with AMX allowed (the kernel still
    grants the permission after the run), and the JSON and the title say 'allowed' (or 'absent'
    on a CPU without it); without the flag, 'denied' where the CPU has AMX."""
    report_path = tmp_path / "bench.json"
    flags = ["--json", str(report_path), *(["--amx"] if amx else [])]
    got = _probe("real", "bench", *flags)
    rc, answer = got["bench"]
    assert rc == 0
    has_amx = got["cpu_has_amx"]
    denied = has_amx and not amx
    report = json.loads(report_path.read_text())
    assert report["cpu_has_amx"] == has_amx and report["amx_denied"] == denied
    assert [run["amx_denied"] for run in report["runs"]] == [denied]
    said = "denied" if denied else "allowed" if has_amx else "absent"
    assert report["title"].endswith(f"; AMX {said}") or f"; AMX {said};" in report["title"]
    assert (answer == errno.errorcode[errno.EPERM]) == denied
