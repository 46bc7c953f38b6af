"""The MobileNet v1 localizer (alpha 0.25, 128x128x3) and its losses.

Inputs are raw RGB pixel values (0..255, float in Keras, uint8 on the device); the scaling the
contract names is the model's first layer, so the converted model takes camera pixels as they are.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from edge import contract

ALPHA = 0.25
STRIDE16_LAYER = "conv_pw_11_relu"


def build_model(
    kind: str = contract.DEFAULT_KIND, n_classes: int = 1, weights: str | Path | None = None
) -> keras.Model:
    """MobileNet v1 backbone + heads named as the contract's outputs for the model ``kind``.

    ``box``: presence (sigmoid) and box (sigmoid corners) from a small spatial head over the 4x4
    feature map (a global pool throws away where the stamp is); ``class`` over the variants when
    ``n_classes > 1``. ``center``: presence and a direct centre regression. ``cam``: presence from
    the global average of a 1x1-conv class activation map, which is also output as ``heatmap``.
    """
    if kind not in contract.KIND_OUTPUTS:
        raise ValueError(f"model kind {kind!r} is unknown (expected one of {sorted(contract.KIND_OUTPUTS)})")
    inp = keras.Input(contract.INPUT_SHAPE, name="image")
    x = keras.layers.Rescaling(contract.PIXEL_SCALE, contract.PIXEL_OFFSET, name="scale_pixels")(inp)
    mobilenet = keras.applications.MobileNet(
        input_shape=contract.INPUT_SHAPE, alpha=ALPHA, include_top=False, weights=None
    )
    if weights is not None:
        mobilenet.load_weights(str(weights), skip_mismatch=True)
    # two scales for localization: stride 16 (8x8) keeps where the edges are, stride 32 (4x4) what
    backbone = keras.Model(
        mobilenet.input, [mobilenet.get_layer(STRIDE16_LAYER).output, mobilenet.output], name="backbone"
    )
    feats16, feats = backbone(x)
    outputs: dict[str, keras.KerasTensor] = {}
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(feats)
    if kind == "cam":
        cam = keras.layers.Conv2D(1, 1, name="cam_logits")(feats)
        logit = keras.layers.GlobalAveragePooling2D(name="cam_pool")(cam)
        outputs[contract.PRESENCE] = keras.layers.Activation("sigmoid", name=contract.PRESENCE)(logit)
        outputs[contract.HEATMAP] = keras.layers.Reshape(cam.shape[1:3], name=contract.HEATMAP)(
            keras.layers.Activation("sigmoid")(cam)
        )
    else:
        drop = keras.layers.Dropout(0.2)(pooled)
        outputs[contract.PRESENCE] = keras.layers.Dense(1, activation="sigmoid", name=contract.PRESENCE)(drop)
        fine = keras.layers.Conv2D(16, 1, activation="relu", name="loc_reduce16")(feats16)
        coarse = keras.layers.Conv2D(32, 1, activation="relu", name="loc_reduce32")(feats)
        s = keras.layers.Concatenate(name="loc_concat")(
            [keras.layers.Flatten(name="loc_flat16")(fine), keras.layers.Flatten(name="loc_flat32")(coarse)]
        )
        s = keras.layers.Dense(128, activation="relu", name="loc_hidden")(s)
        if kind == "box":
            outputs[contract.BOX] = keras.layers.Dense(4, activation="sigmoid", name=contract.BOX)(s)
            if n_classes > 1:
                outputs[contract.CLASS] = keras.layers.Dense(
                    n_classes, activation="softmax", name=contract.CLASS
                )(drop)
        else:
            outputs[contract.CENTER] = keras.layers.Dense(2, activation="sigmoid", name=contract.CENTER)(s)
    return keras.Model(inp, outputs, name=f"stampline_{kind}")


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


def compile_model(model: keras.Model, learning_rate, n_classes: int = 1) -> None:
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
        weights[contract.CLASS] = 0.5
    if contract.HEATMAP in names:
        losses[contract.HEATMAP] = None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={k: v for k, v in losses.items() if v is not None},
        loss_weights=weights,
    )


CUSTOM_OBJECTS = {"box_loss": box_loss, "center_loss": center_loss}


def load_model(path: str | Path) -> keras.Model:
    return keras.models.load_model(str(path), custom_objects=CUSTOM_OBJECTS, compile=False)
