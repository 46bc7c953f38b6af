"""The training loop behind ``edge-train``: tf.data over the in-memory pool, validation with the
device's own decoding and metrics, best checkpoint, early stop, time budget, curves."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import itertools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge import contract, metrics
from edge.cli.common import CliError, keras_sidecar, native_stderr_muted, stops_deferred, write_json
from edge.runtime import CallableDetector
from train.cli import Prepared, environment, learning_rate, steps_for
from train.data import model_targets, save_preview


def score_of(kind: str, m: dict[str, float]) -> tuple[float, float]:
    """What to pick the best checkpoint by, compared in order: localization plus presence, then
    the mean centre error (lower is better) between checkpoints that tie on the first.

    The tie-break matters on small validation sets: ten photos put the centre share and presence
    at 1.0 early in a run, and without it every later checkpoint tied and the first one to reach
    1.0 was kept (on find_phone, step 800 of 2,000)."""
    loc = m["iou_mean"] if kind == "box" and not np.isnan(m["iou_mean"]) else m["center_within_0_05"]
    loc = 0.0 if np.isnan(loc) else loc
    pres = m["presence_accuracy"] if not np.isnan(m["presence_accuracy"]) else 0.0
    err = m.get("center_error_mean", math.nan)
    return float(loc + pres), -math.inf if np.isnan(err) else -float(err)


def labels_of(path: Path) -> list[str] | None:
    """The labels of a model to fine-tune from, in its class scores' order: a ``.tflite``'s
    embedded metadata, or the ``model.json`` edge-train wrote beside a ``.keras``; None where
    they cannot be told."""
    try:
        if path.suffix.lower() == ".tflite":
            return list(contract.read_embedded_metadata(contract.read_model(path), str(path)).labels)
        labels = keras_sidecar(path).get("labels")
    except (OSError, CliError, contract.ContractError):
        return None
    return [str(label) for label in labels] if isinstance(labels, list) else None


def make_dataset(pool, output_names, batch_size: int, seed: int):
    import tensorflow as tf

    n = len(pool)
    names = list(output_names)

    def gather(idx):
        x, y, w = model_targets(pool, names, idx)
        flat = [x]
        for k in names:
            if k in y:
                flat += [
                    y[k].astype(np.float32 if k != contract.CLASS else np.int32),
                    w[k].astype(np.float32),
                ]
        return flat

    targets = names
    tout = [tf.float32]
    for k in targets:
        tout += [tf.int32 if k == contract.CLASS else tf.float32, tf.float32]

    def to_struct(idx):
        flat = tf.numpy_function(gather, [idx], tout)
        x = tf.ensure_shape(flat[0], (batch_size, *contract.INPUT_SHAPE))
        y, w = {}, {}
        for i, k in enumerate(targets):
            y[k] = flat[1 + 2 * i]
            w[k] = tf.ensure_shape(flat[2 + 2 * i], (batch_size,))
        return x, y, w

    ds = tf.data.Dataset.range(n).repeat().shuffle(min(n, 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(to_struct, num_parallel_calls=2, deterministic=True)
    return ds.prefetch(4)


#: Early stopping waits until this share of the schedule is done: before it the learning rate is
#: above half its peak and a plateau says little about what its decay will give. A three-variant
#: run continued from a trained one (lr 0.001, 26,000 steps) stopped at step 10,800 after 8
#: validations without a better one, with most of the decay still ahead.
PATIENCE_FROM = 0.5


class Patience:
    """Early stopping: a run stops after ``patience`` validations in a row without a better score,
    and only once ``from_progress`` of its schedule is done (before, the learning rate is high and
    a plateau says little)."""

    def __init__(self, patience: int, from_progress: float = PATIENCE_FROM):
        self.patience, self.from_progress = patience, from_progress
        self.best: tuple[float, float] = (-math.inf, -math.inf)  # the first score is always better
        self.bad = 0

    def better(self, score: tuple[float, float]) -> bool:
        """Whether ``score`` beats every one before it (then it is the best, and patience starts
        again)."""
        if score > self.best:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        return False

    def stop(self, progress: float) -> bool:
        """Whether to stop at ``progress`` (0-1) of the schedule."""
        return self.bad >= self.patience and progress >= self.from_progress


#: a training set with no image without the object (a centre-point list holds none)
NO_NEGATIVES = (
    "no training image is without the object (a centre-point labels.txt holds none): the model "
    "learns to say 'present' on everything, and edge-run then never says MISSING; add images "
    "without it (--stamp STAMP --backgrounds PHOTOS --synthetic N composites some, or labelled "
    "photos of products without it)"
)


class WeightAverage:
    """An exponential moving average of a model's trainable weights (decay warmed up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early weights fade fast);
    ``applied()`` puts the average in the model for a while (validation, saving) and then puts the
    trained weights back, so training goes on from where it was."""

    def __init__(self, variables, decay: float):
        import tensorflow as tf

        self.variables = [getattr(v, "value", v) for v in variables]
        self.average = [tf.Variable(v.numpy(), trainable=False) for v in self.variables]
        self.decay = decay
        self.updates = 0
        self._rate = tf.Variable(0.0, trainable=False)

        @tf.function
        def step():
            for a, v in zip(self.average, self.variables, strict=True):
                a.assign_sub(self._rate * (a - v))

        self._step = step

    def update(self) -> None:
        self.updates += 1
        self._rate.assign(1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates)))
        self._step()

    @contextlib.contextmanager
    def applied(self):
        trained = [v.numpy() for v in self.variables]
        for a, v in zip(self.average, self.variables, strict=True):
            v.assign(a)
        try:
            yield
        finally:
            for t, v in zip(trained, self.variables, strict=True):
                v.assign(t)


def _starting_model(args: argparse.Namespace, prep: Prepared, n_classes: int):
    """The model to train: built afresh, or the ``--init`` model fitted to this run's kind, head and
    labels; and the ``init`` of the provenance (None, or its path and the first 12 hex digits of its
    SHA-256, so a deployed model can be traced to the run before it)."""
    from train.model import build_model, load_model, warm_start

    init = None
    if args.init is not None:
        init = f"{args.init} (sha256 {hashlib.sha256(Path(args.init).read_bytes()).hexdigest()[:12]})"
        if Path(args.init).suffix == ".tflite":
            from train.from_tflite import keras_from_tflite

            sample = np.random.default_rng(args.seed).permutation(len(prep.train))[:256]
            model = keras_from_tflite(args.init, prep.train.images[np.sort(sample)])
        else:
            model = load_model(args.init)
        if contract.PRESENCE not in (getattr(model, "output_names", None) or ()):
            raise ValueError(f"{args.init}: not a Stampline model (no 'presence' output)")
        init_labels = labels_of(Path(args.init))
        model, fresh, dropped = warm_start(model, prep.kind, n_classes, args.head, prep.labels, init_labels)
        if fresh and not args.quiet:
            print(f"fine-tuning from {args.init}; new layers: {', '.join(fresh)}")
        if dropped and not args.quiet:
            print(f"fine-tuning from {args.init}; its layers left out: {', '.join(dropped)}")
        if (
            not args.quiet
            and n_classes > 1
            and init_labels is not None
            and list(init_labels) != list(prep.labels)
            and sorted(init_labels) == sorted(prep.labels)
        ):
            print(
                f"fine-tuning from {args.init}: its variants {list(init_labels)} are this run's "
                f"{list(prep.labels)} in another order; the class head follows them by name"
            )
    else:
        model = build_model(prep.kind, n_classes, args.weights, args.head)
    return model, init


def train_model(args: argparse.Namespace, prep: Prepared, t_start: float) -> int:
    import keras
    import tensorflow as tf

    from train.model import compile_model, fuse_batch_norm, inference_model

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    out: Path = args.out
    save_preview(prep.train, out / "train_preview.png")
    n_classes = contract.class_width(prep.kind, len(prep.labels))
    model, init = _starting_model(args, prep, n_classes)
    total = steps_for(args, len(prep.train))
    # batch-norm statistics average over ~1/(1 - momentum) steps: Keras's 0.99 never settles in a
    # short run (a few hundred steps), so short runs average over a twentieth of their length
    momentum = min(0.99, max(0.9, 1.0 - 20.0 / total))
    for layer in [*model.layers, *model.get_layer("backbone").layers]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            fuse_batch_norm(layer)  # the same maths in one kernel: steps 1.7-1.9x faster here
    names = compile_model(model, args.lr / 10)
    warmup = min(300 / total, 0.1)
    ds = make_dataset(prep.train, names, args.batch_size, args.seed)
    saved = inference_model(model)  # shares the layers: what is validated, saved and converted
    meta = contract.ModelMetadata(kind=prep.kind, labels=prep.labels)
    val_truth = prep.val.truths(prep.labels)
    val_images = list(prep.val.images)

    def validate() -> dict[str, float]:
        det = CallableDetector(lambda x: saved(x.astype(np.float32), training=False), meta)
        return metrics.summarize(det.predict_batch(val_images, 128), val_truth, meta.threshold)

    ema = WeightAverage(model.trainable_variables, args.ema) if args.ema else None
    history: list[dict[str, float]] = []
    best: dict = {}  # the step, metrics and score of the checkpoint in model.keras
    patience = Patience(args.patience)
    every = min(args.eval_every, total)
    with native_stderr_muted():  # tf.data's "NodeDef mentions attribute use_unbounded_threadpool"
        it = iter(ds)
        it = itertools.chain([next(it)], it)
    negatives = int(np.sum(np.asarray(prep.train.presence) < 0.5))  # training images without it
    if not negatives:
        print(f"edge-train: WARNING: {NO_NEGATIVES}", file=sys.stderr, flush=True)
    t_train = time.perf_counter()
    deadline = t_train + args.minutes * 60 if args.minutes else None
    if not args.quiet:
        print(
            f"edge-train: data ready in {t_train - t_start:.0f} s; training "
            + (f"for at most {args.minutes:g} min" if args.minutes else f"{total} steps"),
            file=sys.stderr,
            flush=True,
        )
    step = 0
    stop_reason = "steps done"
    interrupted = False

    def now() -> str:
        return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def model_json() -> dict:
        """model.json of the checkpoint in model.keras (written beside it at every checkpoint, so
        the two match whenever the run ends: steps done, Ctrl-C, or killed)."""
        partial = {"data": prep.description, "seed": args.seed, "date": now(), "best_step": best.get("step")}
        partial["val"] = best.get("metrics", {})
        partial["init"], partial["negatives"] = init, negatives
        return {"kind": prep.kind, "labels": list(prep.labels), "provenance": provenance(partial)}

    try:
        while step < total:
            n = min(every, total - step)
            t0 = time.perf_counter()
            logs = {}
            first = step
            for _ in range(n):
                # the schedule follows whichever budget runs out first: steps, or wall time with --minutes
                # (then runs are not bit-for-bit repeatable; without --minutes they are)
                progress = step / total
                if deadline:
                    progress = max(progress, (time.perf_counter() - t_train) / (deadline - t_train))
                with stops_deferred():  # Ctrl-C between steps, not inside TensorFlow's calls
                    model.optimizer.learning_rate.assign(learning_rate(args.lr, progress, warmup))
                    x, y, w = next(it)
                    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
                    if ema is not None:
                        ema.update()
                    step += 1
                if deadline and time.perf_counter() > deadline:
                    break
            step_s = (time.perf_counter() - t0) / max(step - first, 1)
            loss = float(logs.get("loss", 0.0))
            if not math.isfinite(loss):  # (was "Prediction.presence: expected a probability, got nan")
                raise CliError(
                    f"training diverged by step {step} (loss {loss}): lower --lr (it was {args.lr:g})"
                    + (f"; the best checkpoint so far stays in {out / 'model.keras'}" if best else "")
                )
            with ema.applied() if ema is not None else contextlib.nullcontext():
                with stops_deferred():
                    m = validate() if len(val_images) else {}
                score = score_of(prep.kind, m) if m else (-float(logs.get("loss", 0)), 0.0)
                improved = patience.better(score)
                if improved:
                    with stops_deferred():  # the checkpoint, its record and model.json together
                        partial = out / ".model.partial.keras"  # a kill mid-save leaves model.keras whole
                        saved.save(partial)
                        os.replace(partial, out / "model.keras")
                        best = {"score": score, "step": step, "metrics": m}
                        write_json(out / "model.json", model_json())
            row = {"step": step, "minutes": (time.perf_counter() - t_train) / 60, "step_s": step_s}
            row.update({f"train_{k}": float(v) for k, v in logs.items()})
            row.update({f"val_{k}": v for k, v in m.items()})
            history.append(row)
            if not args.quiet:
                shown = ", ".join(
                    f"{k} {m[k]:.4f}"
                    for k in ("iou_mean", "center_within_0_05", "presence_accuracy", "class_accuracy")
                    if k in m and not np.isnan(m[k])
                )
                print(
                    f"step {step}/{total} loss {logs.get('loss', float('nan')):.4f} | val {shown}"
                    f" | {step_s * 1000:.0f} ms/step{' *' if improved else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            if deadline and time.perf_counter() > deadline:
                stop_reason = f"time budget of {args.minutes} min"
                break
            if patience.stop(progress):
                stop_reason = f"no improvement in {args.patience} validations"
                break
    except KeyboardInterrupt:  # Ctrl-C: keep the best checkpoint so far, with its reports
        interrupted, stop_reason = True, "interrupted"
        if "step" not in best:
            print(
                "edge-train: interrupted before the first checkpoint; no model written "
                "(only train_preview.png)",
                file=sys.stderr,
            )
            return 130
    train_minutes = (time.perf_counter() - t_train) / 60
    images_per_s = args.batch_size / np.median([h["step_s"] for h in history]) if history else float("nan")
    result = {
        "kind": prep.kind,
        "labels": list(prep.labels),
        "best_step": best.get("step"),
        "steps_run": step,
        "stop_reason": stop_reason,
        "train_minutes": train_minutes,
        "total_minutes": (time.perf_counter() - t_start) / 60,
        "train_images_per_s": images_per_s,
        "synth_images_per_s": prep.synth_rate,
        "n_train": len(prep.train),
        "n_val": len(prep.val),
        "val": best.get("metrics", {}),
        "data": prep.description,
        "seed": args.seed,
        "date": now(),
        "init": init,
        "negatives": negatives,
        "environment": environment(),
    }
    write_json(out / "metrics.json", result)
    write_json(out / "history.json", history)
    # absolute, so edge-convert finds the stamp and photos from any folder it is run in
    config = {k: (str(v.absolute()) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["stamp"] = [str(Path(s).absolute()) for s in args.stamp]
    config.update(kind=prep.kind, labels=list(prep.labels), total_steps=total)
    write_json(out / "config.json", config)
    write_json(out / "model.json", model_json())
    plot_curves(history, out / "curves.png")
    if result["val"] and (warning := metrics.no_skill_warning(result["val"])):
        print(f"edge-train: WARNING: {warning}", file=sys.stderr)
    if not negatives:  # (said again at the end, where the engineer looks)
        print(f"edge-train: WARNING: {NO_NEGATIVES}", file=sys.stderr)
    if not args.quiet:
        v = result["val"]
        print(
            f"edge-train: best at step {result['best_step']} ({stop_reason}); "
            + ", ".join(
                f"{k} {v[k]:.4f}"
                for k in ("iou_mean", "center_within_0_05", "presence_accuracy")
                if k in v and not np.isnan(v[k])
            )
            + f"; {train_minutes:.1f} min training, {images_per_s:.0f} img/s"
            + (f", generator {prep.synth_rate:.0f} img/s" if prep.synth_rate else "")
            + f" -> {out / 'model.keras'}",
            file=sys.stderr,
        )
    if interrupted:
        print(
            f"edge-train: interrupted at step {step}; kept the best checkpoint so far (step "
            f"{result['best_step']}) in {out / 'model.keras'}, with its model.json and reports",
            file=sys.stderr,
        )
        return 130
    return 0


def provenance(result: dict) -> dict:
    """What a converted model says about where it came from (embedded in the .tflite)."""
    return {
        "training_data": result["data"],
        "seed": result["seed"],
        "trained": result["date"],
        "steps": result["best_step"],
        **({"init": result["init"]} if result.get("init") else {}),
        # images without the object it trained on: none, and its presence never learnt "absent"
        **({"training_negatives": result["negatives"]} if "negatives" in result else {}),
        # with the counts, which tell a figure's skill (edge.metrics.no_skill_warning)
        "validation": {
            k: v
            for k, v in result["val"].items()
            if (isinstance(v, float) and not np.isnan(v)) or k in metrics.PRESENCE_COUNTS
        },
    }


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k in [k for k in history[0] if k.startswith("train_") and k.endswith("loss")]:
        a.plot(steps, [h.get(k, np.nan) for h in history], label=k[6:])
    a.set_xlabel("step")
    a.set_yscale("log")
    a.set_title("training loss")
    a.legend()
    for k in ("val_iou_mean", "val_presence_accuracy", "val_center_within_0_05", "val_class_accuracy"):
        vals = [h.get(k, np.nan) for h in history]
        if not all(np.isnan(vals)):
            b.plot(steps, vals, label=k[4:])
    b.set_xlabel("step")
    b.set_ylim(0, 1.01)
    if b.get_legend_handles_labels()[0]:
        b.set_title("validation")
        b.legend()
    else:
        b.set_title("validation (no validation images)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
