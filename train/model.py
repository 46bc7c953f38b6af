"""The MobileNet v1 localizer (alpha 0.25, 128x128x3) and its losses.

Inputs are raw RGB pixel values (0..255, float in Keras, uint8 on the device); the scaling the
contract names is the model's first layer, so the converted model takes camera pixels as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import ops

from edge import contract
from edge.cli.common import first_line, keras_file_problem

ALPHA = 0.25
#: backbone feature maps at strides 8, 16 and 32 (16x16, 8x8 and 4x4 for a 128x128 input)
STRIDE8_LAYER = "conv_pw_5_relu"
STRIDE16_LAYER = "conv_pw_11_relu"
FPN_CHANNELS = 64
GRID = contract.GRID_SIZE
#: localization heads: ``dense`` regresses the box from the flattened 8x8 and 4x4 maps (the
#: bundled model's); ``grid`` scores a 16x16 grid of cells, each with its own box or centre
HEADS = ("dense", "grid")
DEFAULT_HEAD = {"box": "dense", "center": "grid", "cam": "grid"}


def build_model(
    kind: str = contract.DEFAULT_KIND,
    n_classes: int = 1,
    weights: str | Path | None = None,
    head: str | None = None,
) -> keras.Model:
    """MobileNet v1 backbone + a small feature pyramid + heads named as the contract's outputs.

    Every kind looks at a 16x16 grid (stride 8) built top-down from the backbone's 4x4, 8x8 and
    16x16 maps, so small stamps keep their position. ``box``: each cell says how likely it holds
    the stamp's middle (``cells`` logits, supervised per cell) and how far the four box edges are
    from it (``cell_boxes``); the box is the softmax-weighted mean of the cells' boxes
    (``edge.contract.decode_grid``, computed in the graph here for the box loss). Presence
    combines the strongest cell with a global pool; ``class`` over the variants when
    ``n_classes > 1``, from the strongest position of a per-position class map. ``center``: the
    same with centre offsets. ``cam``: presence is the maximum
    of a 1x1-conv class activation map over the grid, output as ``heatmap`` (trained from
    presence labels alone).

    The returned model is the training model: besides the contract's outputs it has ``box`` (or
    ``center``) decoded in the graph, for the loss; ``inference_model`` keeps the contract's.
    """
    if kind not in contract.KIND_OUTPUTS:
        raise ValueError(f"model kind {kind!r} is unknown (expected one of {sorted(contract.KIND_OUTPUTS)})")
    head = head or DEFAULT_HEAD[kind]
    if head not in HEADS:
        raise ValueError(f"head {head!r} is unknown (expected one of {', '.join(HEADS)})")
    if kind == "cam" and head != "grid":  # (a --init model's own head, when --head was not given)
        raise ValueError(f"a weak (cam) model needs the grid head, not {head!r}: give --head grid")
    L = keras.layers
    inp = keras.Input(contract.INPUT_SHAPE, name="image")
    x = L.Rescaling(contract.PIXEL_SCALE, contract.PIXEL_OFFSET, name="scale_pixels")(inp)
    mobilenet = keras.applications.MobileNet(
        input_shape=contract.INPUT_SHAPE, alpha=ALPHA, include_top=False, weights=None
    )
    if weights is not None:
        try:
            mobilenet.load_weights(str(weights), skip_mismatch=True)
        except Exception as exc:  # h5py and keras raise many kinds for a file that does not fit
            raise ValueError(
                f"--weights {weights}: cannot load MobileNet weights from it ({first_line(exc, 160)})"
            ) from None
    taps = [mobilenet.get_layer(STRIDE8_LAYER).output, mobilenet.get_layer(STRIDE16_LAYER).output]
    backbone = keras.Model(mobilenet.input, [*taps, mobilenet.output], name="backbone")
    c3, c4, c5 = backbone(x)
    if head == "dense":
        return _dense_head(inp, c4, c5, kind, n_classes)
    p5 = L.Conv2D(FPN_CHANNELS, 1, name="fpn_lat32")(c5)
    p4 = L.Conv2D(FPN_CHANNELS, 1, name="fpn_lat16")(c4)
    p4 = L.Add(name="fpn_add16")([p4, L.UpSampling2D(name="fpn_up32")(p5)])
    p3 = L.Conv2D(FPN_CHANNELS, 1, name="fpn_lat8")(c3)
    p3 = L.Add(name="fpn_add8")([p3, L.UpSampling2D(name="fpn_up16")(p4)])
    f = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="fpn_dw")(p3)
    f = L.ReLU(name="fpn_dw_relu")(L.BatchNormalization(name="fpn_dw_bn")(f))
    f = L.Conv2D(FPN_CHANNELS, 1, use_bias=False, name="fpn_pw")(f)
    f = L.ReLU(name="fpn_pw_relu")(L.BatchNormalization(name="fpn_pw_bn")(f))
    cells = L.Reshape((GRID, GRID), name=contract.CELLS)(L.Conv2D(1, 1, name="cell_logits")(f))
    peak = L.GlobalMaxPooling1D(name="cell_peak")(L.Reshape((GRID * GRID, 1))(cells))
    outputs: dict[str, keras.KerasTensor] = {}
    if kind == "cam":
        outputs[contract.PRESENCE] = L.Activation("sigmoid", name=contract.PRESENCE)(peak)
        outputs[contract.HEATMAP] = L.Activation("sigmoid", name=contract.HEATMAP)(cells)
        return keras.Model(inp, outputs, name=f"stampline_{kind}")
    outputs[contract.CELLS] = cells
    pooled = L.Dropout(0.2)(L.GlobalAveragePooling2D(name="pool")(c5))
    outputs[contract.PRESENCE] = L.Dense(1, activation="sigmoid", name=contract.PRESENCE)(
        L.Concatenate(name="presence_in")([pooled, peak])
    )
    if kind == "box":
        outputs[contract.CELL_BOXES] = L.Conv2D(4, 1, activation="sigmoid", name=contract.CELL_BOXES)(f)
        outputs[contract.BOX] = decode_in_graph(cells, outputs[contract.CELL_BOXES], contract.BOX)
        if n_classes > 1:
            outputs[contract.CLASS] = _class_head(f, n_classes)
    else:
        outputs[contract.CELL_OFFSETS] = L.Conv2D(2, 1, activation="sigmoid", name=contract.CELL_OFFSETS)(f)
        outputs[contract.CENTER] = decode_in_graph(cells, outputs[contract.CELL_OFFSETS], contract.CENTER)
    return keras.Model(inp, outputs, name=f"stampline_{kind}")


def _dense_head(inp, c4, c5, kind: str, n_classes: int) -> keras.Model:
    """Presence from the global pool; box (or centre) regressed by a small dense layer over the
    flattened 8x8 and 4x4 maps (a global pool would throw away where the stamp is)."""
    L = keras.layers
    outputs: dict[str, keras.KerasTensor] = {}
    drop = L.Dropout(0.2)(L.GlobalAveragePooling2D(name="pool")(c5))
    outputs[contract.PRESENCE] = L.Dense(1, activation="sigmoid", name=contract.PRESENCE)(drop)
    fine = L.Conv2D(16, 1, activation="relu", name="loc_reduce16")(c4)
    coarse = L.Conv2D(32, 1, activation="relu", name="loc_reduce32")(c5)
    s = L.Concatenate(name="loc_concat")(
        [L.Flatten(name="loc_flat16")(fine), L.Flatten(name="loc_flat32")(coarse)]
    )
    s = L.Dense(128, activation="relu", name="loc_hidden")(s)
    if kind == "box":
        # linear, not a sigmoid: int8 then rounds the corners themselves, in steps of about 1/250
        # of the image, not their logits (steps of up to 1/60 of the image mid-frame, which cost
        # int8 models 0.01 of mean IoU); starts at the middle, as a sigmoid's would; the device
        # clips to the image
        outputs[contract.BOX] = L.Dense(
            4, bias_initializer=keras.initializers.Constant(0.5), name=contract.BOX
        )(s)
        if n_classes > 1:
            features = L.Conv2D(FPN_CHANNELS, 1, activation="relu", name="class_reduce16")(c4)
            outputs[contract.CLASS] = _class_head(features, n_classes)
    else:
        outputs[contract.CENTER] = L.Dense(2, activation="sigmoid", name=contract.CENTER)(s)
    return keras.Model(inp, outputs, name=f"stampline_{kind}")


def _class_head(features, n_classes: int):
    """Which variant: a class score at every position of ``features`` (a 1x1 conv), the strongest
    position per class (global max pool), softmax. A global average would dilute a small stamp
    with the surface around it: measured on 3 variants, a pooled-average class head stayed at
    chance loss for 3,000 steps."""
    L = keras.layers
    logits = L.Conv2D(n_classes, 1, name="class_logits")(features)
    return L.Activation("softmax", name=contract.CLASS)(L.GlobalMaxPooling2D(name="class_peak")(logits))


class WindowSoftmax(keras.layers.Layer):
    """``softmax(GRID_SHARPNESS * cells)`` over the cells within ``GRID_WINDOW`` of the strongest
    one, zero elsewhere: ``edge.contract.decode_grid``'s weights, flattened to (B, G*G). The
    window is chosen without gradient; the weights inside it carry it. Used in the training graph
    only (the saved model stops at the cells), so the saved model needs no custom layer."""

    def call(self, cells):
        size = cells.shape[-1]
        flat = ops.reshape(cells, (-1, size * size))
        peak = ops.argmax(flat, axis=-1)
        r, c = peak // size, peak % size
        idx = ops.arange(size)
        rows = ops.abs(idx[None, :] - r[:, None]) <= contract.GRID_WINDOW
        cols = ops.abs(idx[None, :] - c[:, None]) <= contract.GRID_WINDOW
        window = ops.reshape(ops.logical_and(rows[:, :, None], cols[:, None, :]), (-1, size * size))
        z = contract.GRID_SHARPNESS * (flat - ops.max(flat, axis=-1, keepdims=True))
        z = ops.where(window, z, ops.full_like(z, -1e9))
        return ops.softmax(z, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * input_shape[-2])


def decode_in_graph(cells, per_cell, what: str):
    """``edge.contract.decode_grid`` as Keras layers (built-ins only, fixed weights): the box or
    centre the training loss sees is the one the device decodes."""
    L = keras.layers
    n = GRID * GRID
    depth = per_cell.shape[-1]
    attention = WindowSoftmax(name=f"{what}_attention")(cells)
    grid = L.Dense(2, use_bias=False, trainable=False, name=f"{what}_grid_centre")
    centre = grid(attention)
    grid.set_weights([contract.grid_centres(GRID)])
    per_cell = L.Reshape((n, depth), name=f"{what}_per_cell")(per_cell)
    mean = L.Dot(axes=1, name=f"{what}_cell_mean")([attention, per_cell])
    out = L.Dense(depth, trainable=False, name=what)
    result = out(L.Concatenate(name=f"{what}_in")([centre, mean]))
    k = np.zeros((2 + depth, depth), np.float32)
    bias = np.zeros(depth, np.float32)
    if depth == 4:  # x_min = cx - REACH * d0, y_min = cy - REACH * d1, x_max = cx + REACH * d2, ...
        k[0, 0] = k[0, 2] = k[1, 1] = k[1, 3] = 1.0
        k[2, 0], k[3, 1], k[4, 2], k[5, 3] = (-contract.GRID_REACH,) * 2 + (contract.GRID_REACH,) * 2
    else:  # centre = c + (2 o - 1) * SHIFT / GRID
        k[0, 0] = k[1, 1] = 1.0
        k[2, 0] = k[3, 1] = 2.0 * contract.GRID_SHIFT / GRID
        bias[:] = -contract.GRID_SHIFT / GRID
    out.set_weights([k, bias])
    return result


def inference_model(model: keras.Model) -> keras.Model:
    """The model without the box or centre decoded in its graph for the loss (a grid model's
    device decodes its cells itself): what is validated, saved, converted and run."""
    names = set(model.output_names)
    drop = {contract.BOX} if contract.CELL_BOXES in names else set()
    drop |= {contract.CENTER} if contract.CELL_OFFSETS in names else set()
    if not drop:
        return model
    outs = {k: v for k, v in model.output.items() if k not in drop}
    return keras.Model(model.input, outs, name=model.name)


def head_of(model: keras.Model) -> str:
    """Which localization head a built or loaded model has (see :data:`HEADS`)."""
    names = {layer.name for layer in model.layers}
    return "grid" if "cell_logits" in names else "dense"


def _activation(layer) -> str | None:
    """A layer's own activation (a model saved before the box output became linear has a
    sigmoid there: its weights mean logits, so they do not carry over)."""
    act = layer.get_config().get("activation")
    return act if isinstance(act, str | None) else str(act)


#: the layer whose outputs are the variants' class scores, one per label in the labels' order
CLASS_LOGITS = "class_logits"


def warm_start(
    init: keras.Model,
    kind: str,
    n_classes: int,
    head: str | None = None,
    labels: Sequence[str] | None = None,
    init_labels: Sequence[str] | None = None,
) -> tuple[keras.Model, list[str], list[str]]:
    """A training model for ``kind`` and ``n_classes`` (and ``head``, default: ``init``'s) that
    starts from ``init``'s weights wherever a layer of the same name and shapes exists: the
    backbone always, the heads when they fit. The class head's scores follow the labels by name:
    with ``labels`` (this run's) and ``init_labels`` (``init``'s) the same set in another order,
    its columns are reordered to them; another set starts it fresh (copied by position, every
    variant was read as another: class accuracy 0.74 -> 0.01 in a helper's fine-tune).
    Returns it, the names of the layers with weights that start fresh (e.g. a class head added
    to a single-stamp model), and those of ``init``'s learned layers left out (a class head
    dropped)."""
    model = build_model(kind, n_classes, head=head or head_of(init))
    old = {layer.name: layer for layer in init.layers}
    fresh = []
    for layer in model.layers:
        if not layer.trainable_weights:  # nothing learned (e.g. the fixed decode layers)
            continue
        src = old.get(layer.name)
        same = src is not None and [w.shape for w in src.weights] == [w.shape for w in layer.weights]
        if same and _activation(src) == _activation(layer):
            weights = src.get_weights()
            if layer.name == CLASS_LOGITS and labels is not None and init_labels is not None:
                if sorted(labels) != sorted(init_labels):
                    fresh.append(layer.name)
                    continue
                order = [list(init_labels).index(label) for label in labels]
                weights = [w[..., order] for w in weights]  # (the kernel's and the bias's last axis)
            layer.set_weights(weights)
        else:
            fresh.append(layer.name)
    kept = {layer.name for layer in model.layers}
    dropped = [layer.name for layer in init.layers if layer.trainable_weights and layer.name not in kept]
    return model, fresh, dropped


def fuse_batch_norm(layer: keras.layers.BatchNormalization) -> bool:
    """Train ``layer`` with TensorFlow's fused batch-norm kernel (``FusedBatchNormV3``, oneDNN on
    x86) instead of Keras 3's separate ops (moments, subtract, multiply, ...), which took 60 % of
    a training step's CPU time for this network. Same maths: the batch's mean and (biased)
    variance normalise it, and the moving statistics follow them with the layer's momentum.

    Only the call of this layer object changes, not its class, so the saved model has Keras's own
    layer and needs nothing of ``train`` to load; inference, a frozen layer, a mask or another
    layout take Keras's path. Returns whether the layer was fused (TensorFlow backend, 4-D
    channels-last input, no renorm or synchronisation)."""
    if keras.backend.backend() != "tensorflow" or layer.renorm or layer.synchronized:
        return False
    if layer.axis not in (-1, 3):
        return False
    import tensorflow as tf

    keras_call = layer.call

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable) or mask is not None or len(inputs.shape) != 4:
            return keras_call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = layer.gamma if layer.scale else tf.ones([channels])
        beta = layer.beta if layer.center else tf.zeros([channels])
        y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=ops.cast(gamma, "float32"),
            offset=ops.cast(beta, "float32"),
            mean=tf.zeros([channels]),
            variance=tf.ones([channels]),
            epsilon=layer.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # the kernel returns the unbiased variance (n / (n - 1)); Keras's moving variance follows
        # the biased one, which is also what normalised the batch
        n = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
        variance = unbiased * (n - 1.0) / n
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
        layer.moving_variance.assign(layer.moving_variance * m + variance * (1.0 - m))
        return ops.cast(y, layer.compute_dtype)

    layer.call = call
    return True


def box_loss(y_true, y_pred):
    """Per-sample L1 on the corners plus (1 - GIoU).

    L1 alone under-weights small stamps and GIoU alone learns slowly from random init (its
    gradient vanishes for far-apart boxes), so the sum is used. Masked by the sample weights
    (presence), so negatives carry no box loss.
    """
    l1 = ops.mean(ops.abs(y_true - y_pred), axis=-1)
    tx0, ty0, tx1, ty1 = (y_true[..., i] for i in range(4))
    px0 = ops.minimum(y_pred[..., 0], y_pred[..., 2])
    px1 = ops.maximum(y_pred[..., 0], y_pred[..., 2])
    py0 = ops.minimum(y_pred[..., 1], y_pred[..., 3])
    py1 = ops.maximum(y_pred[..., 1], y_pred[..., 3])
    iw = ops.relu(ops.minimum(tx1, px1) - ops.maximum(tx0, px0))
    ih = ops.relu(ops.minimum(ty1, py1) - ops.maximum(ty0, py0))
    inter = iw * ih
    union = (tx1 - tx0) * (ty1 - ty0) + (px1 - px0) * (py1 - py0) - inter
    iou = inter / (union + 1e-7)
    hull = (ops.maximum(tx1, px1) - ops.minimum(tx0, px0)) * (ops.maximum(ty1, py1) - ops.minimum(ty0, py0))
    giou = iou - (hull - union) / (hull + 1e-7)
    return 5.0 * l1 + (1.0 - giou)


def center_loss(y_true, y_pred):
    """Euclidean distance of the centres (the criterion is a distance, so is the loss)."""
    return ops.sqrt(ops.sum(ops.square(y_true - y_pred), axis=-1) + 1e-8)


def cells_loss(y_true, y_pred):
    """Focal loss of the grid's cell logits against where the stamp's middle is.

    ``y_true`` is ``(x_min, y_min, x_max, y_max, presence)``, a centre label giving a zero-size
    box. The cells whose centres lie in the middle half of the box (at least 0.75 cells around its
    centre, so one to four cells) are positives; every cell of an image without the stamp is a
    negative. Normalised by the number of positives, as in RetinaNet/FCOS.
    """
    centres = ops.convert_to_tensor(contract.grid_centres(GRID))
    y_pred = ops.reshape(y_pred, (-1, GRID * GRID))
    x0, y0, x1, y1, pres = (y_true[:, i : i + 1] for i in range(5))
    half_w = ops.maximum(0.25 * (x1 - x0), 0.75 / GRID)
    half_h = ops.maximum(0.25 * (y1 - y0), 0.75 / GRID)
    inside = ops.logical_and(
        ops.abs(centres[None, :, 0] - (x0 + x1) / 2) <= half_w,
        ops.abs(centres[None, :, 1] - (y0 + y1) / 2) <= half_h,
    )
    target = ops.cast(inside, "float32") * pres
    p = ops.sigmoid(y_pred)
    bce = ops.binary_crossentropy(target, y_pred, from_logits=True)
    p_t = target * p + (1 - target) * (1 - p)
    alpha_t = target * 0.25 + (1 - target) * 0.75
    focal = alpha_t * ops.square(1 - p_t) * bce
    return ops.sum(focal, axis=-1) / (ops.sum(target, axis=-1) + 1.0)


def compile_model(model: keras.Model, learning_rate) -> list[str]:
    """Compile with the losses the model's outputs call for; returns the outputs that take targets."""
    names = set(model.output_names)
    losses: dict[str, object] = {contract.PRESENCE: keras.losses.BinaryCrossentropy()}
    weights = {contract.PRESENCE: 2.0}
    if contract.BOX in names:
        losses[contract.BOX] = box_loss
        weights[contract.BOX] = 1.0
    if contract.CENTER in names:
        losses[contract.CENTER] = center_loss
        weights[contract.CENTER] = 4.0
    if contract.CLASS in names:
        losses[contract.CLASS] = keras.losses.SparseCategoricalCrossentropy()
        weights[contract.CLASS] = 1.0
    if contract.HEATMAP in names:
        losses[contract.HEATMAP] = None
    if contract.CELLS in names and (contract.BOX in names or contract.CENTER in names):
        losses[contract.CELLS] = cells_loss
        weights[contract.CELLS] = 1.0
    trained = {k: v for k, v in losses.items() if v is not None}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=trained,
        loss_weights={k: w for k, w in weights.items() if k in trained},
    )
    return [k for k in model.output_names if k in trained]


CUSTOM_OBJECTS = {"box_loss": box_loss, "center_loss": center_loss, "cells_loss": cells_loss}


def load_model(path: str | Path) -> keras.Model:
    """A trained model; a file that is not a Keras archive is a ValueError naming it."""
    problem = keras_file_problem(Path(path))
    if problem:
        raise ValueError(problem)
    try:
        return keras.models.load_model(str(path), custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as exc:  # keras raises many kinds (KeyError, OSError, ...) for a bad archive
        raise ValueError(f"{path}: not a readable Keras model ({first_line(exc, 160)})") from None
