"""Running a ``.tflite`` model on the device: LiteRT (``ai_edge_litert``), else ``tflite_runtime``.

Never TensorFlow. The interpreter is built once per model, outputs are found by their names in
the serving signature, and the model's embedded metadata sets the contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import contract
from edge.contract import ContractError, ModelMetadata
from edge.files import native_stderr_held
from edge.types import Prediction

_log = logging.getLogger(__name__)

BUNDLED_MODEL = Path(__file__).with_name("models") / "stamp_int8.tflite"


_AMX_DENIED = False

#: lines the native runtimes print on stderr when they build an interpreter, which tell an
#: operator nothing (the runtime in use is reported by name instead)
RUNTIME_BANNERS = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def runtime_banners_dropped():
    """Run the block with what the native runtime writes on stderr held, then pass it on without
    the lines of ``RUNTIME_BANNERS``: a service's journal gets the runtime's warnings and errors,
    not its start-up banner."""
    return native_stderr_held(keep=lambda line: line.rstrip() not in RUNTIME_BANNERS)


def cpu_has_amx() -> bool:
    """True on x86-64 Linux CPUs with AMX tiles (Sapphire Rapids and later Xeons)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def amx_denied_in_this_process() -> bool:
    """Whether :func:`deny_amx` has refused AMX to this process (and so to children it starts)."""
    return _AMX_DENIED


def deny_amx() -> bool:
    """Refuse this process the AMX tile permission (a seccomp filter on one arch_prctl call).

    XNNPACK asks for it when its first delegate starts and, refused, uses its AVX512-VNNI int8
    kernels. On this network AMX is the slow path: its 16x64 tiles are mostly empty for the thin
    early layers (the 3->8 first convolution took 0.24 ms with AMX, 0.04 ms without), which made
    the int8 model 1.3x slower than float32; without AMX it is 0.85-0.9x. Call before the first
    interpreter is created; irreversible for the process (and its children). Returns whether it
    is in force; never raises (off x86 Linux there is nothing to deny).
    """
    global _AMX_DENIED
    if _AMX_DENIED:
        return True
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    import ctypes
    import struct

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    prog = b"".join(
        [
            ins(ld, 0, 0, 4),  # seccomp_data.arch
            ins(jeq, 1, 0, 0xC000003E),  # AUDIT_ARCH_X86_64
            ins(ret, 0, 0, allow),
            ins(ld, 0, 0, 0),  # seccomp_data.nr
            ins(jeq, 0, 3, 158),  # __NR_arch_prctl
            ins(ld, 0, 0, 16),  # args[0], low 32 bits
            ins(jeq, 0, 1, 0x1023),  # ARCH_REQ_XCOMP_PERM
            ins(ret, 0, 0, eperm),
            ins(ret, 0, 0, allow),
        ]
    )

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            return False
    except (OSError, AttributeError):
        return False
    _AMX_DENIED = True
    return True


class ModelError(RuntimeError):
    """A model that cannot be loaded or run (missing, corrupt, unknown contract, no runtime)."""


class NoRuntime(ModelError):
    """No TFLite runtime to run a model with: the install's (or ``model.runtime``'s), not the model's."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    interpreter_cls: type


def find_runtime(prefer: str | None = None) -> RuntimeInfo:
    """The TFLite interpreter to use: LiteRT first, then tflite-runtime; never TensorFlow."""
    candidates = [
        ("ai_edge_litert", "ai_edge_litert.interpreter"),
        ("tflite_runtime", "tflite_runtime.interpreter"),
    ]
    if prefer:
        candidates = [c for c in candidates if c[0] == prefer]
        if not candidates:
            raise NoRuntime(f"unknown runtime {prefer!r} (expected ai_edge_litert or tflite_runtime)")
    errors = []
    for name, module in candidates:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        pkg = importlib.import_module(name)
        version = getattr(pkg, "__version__", "unknown")
        if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2 and version.startswith("2.1"):
            errors.append(
                f"tflite_runtime {version} was built for numpy 1 and fails with numpy {np.__version__}"
            )
            continue
        return RuntimeInfo(name, version, mod.Interpreter)
    if prefer == "tflite_runtime":
        fix = "install it with `pip install tflite-runtime 'numpy<2'`, or leave the runtime to choose"
    elif prefer:
        fix = "install it with `pip install ai-edge-litert`, or leave the runtime to choose"
    else:
        fix = "install one with `pip install ai-edge-litert`, or `pip install tflite-runtime 'numpy<2'`"
    raise NoRuntime(f"no usable TFLite runtime ({'; '.join(errors)}); {fix}")


#: the most interpreter threads a tool or config accepts: more than any board has cores, and a
#: typo such as 99999 crashed the process starting them (exit 139)
MAX_THREADS = 64


def model_id(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()[:12]


class TFLiteDetector:
    """A ``.tflite`` model behind the one-method detector interface: image -> Prediction."""

    def __init__(
        self, path: str | Path | None = None, threads: int = 1, runtime: str | None = None, amx: bool = False
    ):
        self.path = Path(path) if path is not None else BUNDLED_MODEL
        try:
            model_bytes = contract.read_model(self.path)
        except FileNotFoundError:
            raise ModelError(f"{self.path}: model file not found") from None
        except OSError as exc:
            raise ModelError(f"{self.path}: cannot read model ({exc.strerror})") from None
        except ContractError as exc:
            raise ModelError(str(exc)) from None
        try:
            self.metadata = contract.read_embedded_metadata(model_bytes, str(self.path))
        except ContractError as exc:
            raise ModelError(str(exc)) from None
        self.model_id = model_id(model_bytes)
        self.runtime = find_runtime(runtime)
        # AMX makes this network's int8 path slower, not faster (see deny_amx); allow it on request
        # (a denial is for the process's life: a detector built after one with it is denied too)
        self.amx_denied = _AMX_DENIED or ((not amx) and cpu_has_amx() and deny_amx())
        try:
            with runtime_banners_dropped():  # XNNPACK announces itself when tensors are allocated
                self._interp = self.runtime.interpreter_cls(
                    model_content=model_bytes, num_threads=int(threads)
                )
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: {self.runtime.name} cannot load it ({exc})") from None
        self.threads = int(threads)
        self._bind_tensors()

    def _bind_tensors(self) -> None:
        signatures = self._interp.get_signature_list()
        if not signatures:
            raise ModelError(f"{self.path}: model has no serving signature; convert it with edge-convert")
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = self._interp.get_signature_runner(key)
        inputs = runner.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, found {sorted(inputs)}")
        self._input = next(iter(inputs.values()))
        shape = tuple(int(s) for s in self._input["shape"])
        if shape != (1, *contract.INPUT_SHAPE):
            raise ModelError(f"{self.path}: input shape {shape} != expected {(1, *contract.INPUT_SHAPE)}")
        outputs = runner.get_output_details()
        try:
            self.metadata = self.metadata.with_outputs(list(outputs))  # grid or direct form
            self.metadata.check_outputs(list(outputs))
        except ContractError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        self._outputs = {name: outputs[name] for name in self.metadata.outputs}
        if contract.CLASS in self._outputs:
            classes = int(self._outputs[contract.CLASS]["shape"][-1])
            if classes != len(self.metadata.labels):
                raise ModelError(
                    f"{self.path}: its class output tells {classes} stamps apart, but its metadata "
                    f"lists {len(self.metadata.labels)} labels {list(self.metadata.labels)}; convert it "
                    "again with edge-convert"
                )
        self.input_dtype = np.dtype(self._input["dtype"])
        scale, zero = self._input["quantization"]
        self._in_q = (float(scale), int(zero)) if scale else None
        del runner

    def set_input(self, image_rgb: np.ndarray) -> None:
        """Put one 128x128x3 RGB uint8 image into the input tensor (quantizing if needed)."""
        if image_rgb.shape != contract.INPUT_SHAPE:
            raise ValueError(f"model input: expected {contract.INPUT_SHAPE}, got {image_rgb.shape}")
        x = image_rgb[None]
        if self.input_dtype == np.uint8 and self._in_q == (1.0, 0):
            pass  # camera pixels go in as they are
        elif self.input_dtype in (np.uint8, np.int8) and self._in_q:
            scale, zero = self._in_q
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max)
            x = x.astype(self.input_dtype)
        else:
            x = x.astype(self.input_dtype)
        self._interp.set_tensor(self._input["index"], x)

    def invoke(self) -> None:
        self._interp.invoke()

    def read_outputs(self) -> dict[str, np.ndarray]:
        out = {}
        for name, det in self._outputs.items():
            raw = self._interp.get_tensor(det["index"])
            scale, zero = det["quantization"]
            if scale and raw.dtype != np.float32:
                raw = (raw.astype(np.float32) - zero) * scale
            out[name] = raw
        return out

    def predict(self, image_rgb: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        self.set_input(image_rgb)
        t1 = time.perf_counter()
        self.invoke()
        t2 = time.perf_counter()
        pred = contract.decode_outputs(self.read_outputs(), self.metadata)
        t3 = time.perf_counter()
        object.__setattr__(
            pred,
            "timings",
            {
                "set_input_ms": (t1 - t0) * 1e3,
                "invoke_ms": (t2 - t1) * 1e3,
                "postprocess_ms": (t3 - t2) * 1e3,
            },
        )
        return pred

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [self.predict(im) for im in images]


class CallableDetector:
    """Any batch function (N,128,128,3 uint8 -> outputs by name) behind the detector interface.

    Training and conversion wrap their Keras model in this, so they decode outputs exactly as
    the device does.
    """

    def __init__(self, fn: Callable[[np.ndarray], Mapping[str, np.ndarray]], metadata: ModelMetadata):
        self._fn = fn
        self.metadata = metadata

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int = 64) -> list[Prediction]:
        preds: list[Prediction] = []
        for i in range(0, len(images), batch_size):
            batch = np.stack(images[i : i + batch_size]).astype(np.uint8)
            out = {k: np.asarray(v) for k, v in self._fn(batch).items()}
            self.metadata = self.metadata.with_outputs(list(out))  # grid or direct form
            for j in range(len(batch)):
                preds.append(contract.decode_outputs({k: v[j] for k, v in out.items()}, self.metadata))
        return preds

    def predict(self, image_rgb: np.ndarray) -> Prediction:
        return self.predict_batch([image_rgb])[0]


#: ``--refine``: how many looks a box model takes at a frame. ``off``: one; ``zoom``: a second
#: look at a square crop of the full-resolution view around the first box, the stamp's longer side
#: filling ``REFINE_FILL`` of it; ``zoom-flip``: the crop and its mirror image (three looks);
#: ``auto`` (the default): what ``edge-convert`` measured best for the model (its metadata's
#: ``refine``); ``off`` for a model without that measurement and for centre and cam models.
#: Measured with the bundled model (1,000 synthetic images of the default recipe; seeds 0-19 of
#: the demo line): see the README, "Second looks"
REFINE_MODES = ("auto", *contract.REFINE_CHOICES)
#: invokes a frame takes at most, by mode
REFINE_LOOKS = {"off": 1, "zoom": 2, "zoom-flip": 3, "tiles": 5}
#: the stamp's longer side as a share of the second look's crop: inside the range of stamp sizes
#: both recipes train on (default 0.2-0.65 of the image's shorter side, station 0.22-0.45).
#: Measured with zoom-flip on 600 synthetic images (IoU, off -> fill 0.3 / 0.35 / 0.4 / 0.5): the
#: bundled model on the default recipe 0.795 -> 0.841 / 0.852 / 0.860 / 0.859, on the station
#: recipe 0.815 -> 0.865 / 0.879 / 0.888 / 0.898; the variants model (trained on the station
#: recipe) 0.761 -> 0.809 / 0.815 / 0.806 / 0.689: a stamp larger than any it was trained on
#: throws the box off
REFINE_FILL = 0.4
#: a first look scoring below this is not looked at again (its box means nothing)
REFINE_MIN_PRESENCE = 0.1
#: a crop that would cover this share of the view's shorter side or more is the view itself
_REFINE_WHOLE = 0.95
#: ``tiles``: each of the four looks sees a corner of the view this share of its width and height
#: (the four overlap in the middle), so a small object is seen at 1/0.6 of the first look's
#: resolution. Edge-train's crops of labelled photos span 0.55-1 of the photo, so a tile holding
#: the object is a view the model was trained on. Measured on find_phone (README, "Real photos");
#: on its training photos split in two halves, each half's model judged on the other (206 photos
#: in all, two seeds), 0.5 / 0.6 / 0.7 brought 195 / 200 / 197 centres within 0.05 (one look: 183)
TILE_SIDE = 0.6


def model_warnings(metadata: ModelMetadata) -> list[str]:
    """What a station engineer must hear about a model before it judges products (its
    provenance, as edge-convert embedded it): converted without the proof of agreement, or
    validated no better than always giving the commoner answer. Empty for a model fit to run."""
    from edge.metrics import no_skill_warning

    prov = metadata.provenance
    said = []
    if prov and "agreement" not in prov:
        mode = prov.get("mode")
        said.append(
            "it was converted without the proof of agreement (edge-convert --no-verify): its "
            f"{mode if isinstance(mode, str) else 'converted'} answers were never compared with the "
            "trained model's; convert it again without --no-verify before it judges products"
        )
    if prov.get("training_negatives") == 0:
        said.append(
            "it never saw an image without the stamp in training: it says 'present' on everything, so "
            "no product is judged MISSING; train it with images without the stamp (edge-train "
            "--stamp ... --backgrounds ... --synthetic N)"
        )
    for key in ("validation_tflite", "validation"):
        figures = prov.get(key)
        if isinstance(figures, Mapping) and isinstance(figures.get("presence_accuracy"), float):
            if problem := no_skill_warning(figures):
                said.append(f"its {key.replace('_', ' ')}: {problem}")
            break
    return said


class ModelFileWatch:
    """Notices when the model file a running detector was loaded from is replaced or removed:
    the loop goes on with the model it loaded, and the file is read again only at the next start
    (which may then be a new model, or fail). ``check`` looks at most every ``every_s`` and says
    each change once in the journal; ``problem`` is what is wrong now (None: the file is the one
    loaded)."""

    def __init__(
        self, path: Path, loaded_id: str, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ):
        self.path = Path(path)
        self.loaded_id = loaded_id
        self.every_s = float(every_s)
        self._clock = clock
        self._stat = self._signature()
        self._next = clock() + self.every_s
        self.problem: str | None = None

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def check(self, now: float | None = None) -> str | None:
        now = self._clock() if now is None else now
        if now < self._next:
            return self.problem
        self._next = now + self.every_s
        stat = self._signature()
        if stat == self._stat:
            return self.problem
        self._stat = stat
        if stat is None:
            problem = (
                f"{self.path}: the model file is gone (running model {self.loaded_id} goes on); "
                "edge-run will not start again until it is back"
            )
        else:
            try:
                new_id = model_id(self.path.read_bytes())
            except OSError as exc:
                new_id = f"unreadable: {exc.strerror}"
            problem = (
                None
                if new_id == self.loaded_id
                else f"{self.path}: the model file changed since the start (now {new_id}; running model "
                f"{self.loaded_id} goes on): restart edge-run to run the new one"
            )
        if problem != self.problem:
            if problem is not None:
                _log.warning("%s", problem)
            else:
                _log.warning("%s: the model file is the one running again (%s)", self.path, self.loaded_id)
            self.problem = problem
        return problem


def refine_for(metadata: ModelMetadata, mode: str, name: str) -> str:
    """The second looks ``mode`` means for a model (``name`` for the error): one of its
    ``refine_choices`` (``off``, ``zoom`` or ``zoom-flip`` for a box model; ``off`` or ``tiles``
    for a centre or cam model with a heatmap). ModelError when the mode is unknown or does not
    fit the model."""
    if mode not in REFINE_MODES:
        expected = ", ".join(REFINE_MODES)
        raise ModelError(f"{name}: refine mode {mode!r} is unknown (expected one of {expected})")
    choices = metadata.refine_choices
    if mode == "auto":  # not measured (converted before second looks, or without the check): one
        return metadata.refine if metadata.refine in choices else "off"
    if mode not in choices:
        what = (
            "a box model"
            if mode in contract.BOX_REFINES
            else "a centre or cam model with a heatmap (a grid head's cells or a class activation map)"
        )
        raise ModelError(f"{name}: refine {mode} needs {what}; this one is a {metadata.kind} model")
    return mode


def _mirrored(box: Sequence[float]) -> tuple[float, float, float, float]:
    """A box found in a left-right mirror image, in the image's own coordinates."""
    x0, y0, x1, y1 = box
    return 1.0 - x1, y0, 1.0 - x0, y1


def look_again(detector, image_bgr: np.ndarray, first: Prediction, mode: str) -> Prediction:
    """Refine a box model's ``first`` prediction on ``image_bgr`` (the full-resolution view the
    first look was prepared from: the frame, or its region of interest) with ``mode``.

    The second look sees a square crop centred on the first box, so a small stamp is seen at up to
    several times the first look's resolution. The box is the mean of the second looks' boxes,
    mapped back to the view; presence is the mean of the first look's and the second looks'
    scores (class scores likewise). A first look below ``REFINE_MIN_PRESENCE`` or without a box
    is returned as it is. Where the crop would be the whole view (a large stamp), ``zoom`` keeps
    the first look and ``zoom-flip`` adds the mirrored view. The returned timings add up all looks
    (cropping and resizing counted in ``set_input_ms``). ``tiles``, a centre or cam model's second
    looks, are ``_look_at_tiles``."""
    if mode == "tiles":
        return _look_at_tiles(detector, image_bgr, first)
    if mode == "off" or first.box is None or first.presence < REFINE_MIN_PRESENCE:
        return first
    t0 = time.perf_counter()
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = first.box
    side = max(round(max((x1 - x0) * w, (y1 - y0) * h) / REFINE_FILL), 8)
    cx, cy = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h
    whole = side >= _REFINE_WHOLE * min(h, w)
    if not whole:
        left = round(min(max(cx - side / 2, 0.0), w - side))
        top = round(min(max(cy - side / 2, 0.0), h - side))
        crop = contract.prepare_input(image_bgr[top : top + side, left : left + side])
        views = [(crop, False), (crop[:, ::-1], True)] if mode == "zoom-flip" else [(crop, False)]
        fx, fy, fw, fh = left / w, top / h, side / w, side / h
    elif mode == "zoom-flip":
        views = [(contract.prepare_input(image_bgr)[:, ::-1], True)]
        fx, fy, fw, fh = 0.0, 0.0, 1.0, 1.0
    else:
        return first
    views = [(np.ascontiguousarray(v), mirrored) for v, mirrored in views]
    prep_ms = (time.perf_counter() - t0) * 1e3
    looks = [detector.predict(v) for v, _ in views]
    t1 = time.perf_counter()
    boxes = [
        _mirrored(p.box) if mirrored else p.box
        for p, (_, mirrored) in zip(looks, views, strict=True)
        if p.box is not None
    ]
    if whole:  # the mirrored view: the first look's box counts as much
        boxes.append(first.box)
    box = tuple(float(v) for v in np.mean(boxes, axis=0)) if boxes else None
    if box is not None:
        box = (fx + box[0] * fw, fy + box[1] * fh, fx + box[2] * fw, fy + box[3] * fh)
    again = float(np.mean([p.presence for p in looks]))
    scores = label = None
    if first.class_scores is not None and all(p.class_scores is not None for p in looks):
        second = np.mean([p.class_scores for p in looks], axis=0)
        mean = (np.asarray(first.class_scores) + second) / 2
        scores = tuple(float(s) for s in mean)
        label = contract.label_of(detector.metadata.labels, mean)
    return dataclasses.replace(
        first,
        presence=(first.presence + again) / 2,
        box=box if box is not None else first.box,
        center=None if box is not None else first.center,  # a box model's centre is its box's
        class_scores=scores if scores is not None else first.class_scores,
        label=label if label is not None else first.label,
        timings=_all_looks(first, looks, prep_ms, t1),
    )


def _all_looks(first: Prediction, looks: Sequence[Prediction], prep_ms: float, t1: float) -> dict:
    """The timings of the first look plus ``looks``, with the crops' preparation (``prep_ms``) as
    input setting and what followed the last invoke (from ``t1``) as postprocessing."""
    timings = dict(first.timings)
    for p in looks:
        for k, v in p.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    timings["set_input_ms"] = timings.get("set_input_ms", 0.0) + prep_ms
    timings["postprocess_ms"] = timings.get("postprocess_ms", 0.0) + (time.perf_counter() - t1) * 1e3
    return timings


def _look_at_tiles(detector, image_bgr: np.ndarray, first: Prediction) -> Prediction:
    """``tiles``: look at each corner tile of the view (``TILE_SIDE`` of its width and height) and
    keep the look whose heatmap peaks highest, the first look's included (it wins ties). Its
    centre is mapped back to the view (centre and cam models have no box); presence and the
    heatmap stay the first look's: the tiles say where, not whether. A model without a heatmap is
    returned as it is."""
    if first.heatmap is None:
        return first
    t0 = time.perf_counter()
    h, w = image_bgr.shape[:2]
    th, tw = max(round(TILE_SIDE * h), 1), max(round(TILE_SIDE * w), 1)
    corners = [(left, top) for top in (0, h - th) for left in (0, w - tw)]
    crops = [contract.prepare_input(image_bgr[top : top + th, left : left + tw]) for left, top in corners]
    prep_ms = (time.perf_counter() - t0) * 1e3
    looks = [detector.predict(c) for c in crops]
    t1 = time.perf_counter()
    center, peak = first.center, float(np.max(first.heatmap))
    for (left, top), p in zip(corners, looks, strict=True):
        here = float(np.max(p.heatmap)) if p.heatmap is not None and p.center is not None else -np.inf
        if here > peak:
            center, peak = (left / w + p.center[0] * tw / w, top / h + p.center[1] * th / h), here
    return dataclasses.replace(first, center=center, timings=_all_looks(first, looks, prep_ms, t1))
