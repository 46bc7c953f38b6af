"""A trainable Keras model rebuilt from a converted ``.tflite`` (``edge-train --init MODEL.tflite``,
``--init bundled``): fine-tuning from the bundled model without its Keras original.

The converter folded each batch norm into the convolution before it (kernel times gamma over the
running deviation, one bias) and, for int8, stored the kernels as integers with a scale per output
channel. Rebuilding: the model of the same kind, labels and head is built, every convolution and
dense layer takes the dequantized kernel of the op of its name, and a layer followed by a batch
norm gets that norm set so that in inference it adds the folded bias and nothing else; its moving
statistics, gamma and beta are set from the layer's outputs on ``images`` (mean ``m``, variance
``v``: moving mean ``m``, moving variance ``v``, gamma ``sqrt(v + eps)``, beta ``m + bias``), so a
training step, which normalises each batch by its own statistics, starts where the converted model
is instead of at unit variance. The rebuilt model computes what the ``.tflite`` computes, up to its
integer rounding.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from edge import contract
from edge.runtime import find_runtime, runtime_banners_dropped

#: the ops that carry a layer's kernel (input 1) and bias (input 2)
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _dequantized(interp, detail: dict) -> np.ndarray:
    """A constant tensor's values as float32 (int8 and int32 with their per-channel scales)."""
    values = interp.get_tensor(detail["index"])
    q = detail["quantization_parameters"]
    scales = np.asarray(q["scales"], dtype=np.float64)
    if values.dtype in (np.int8, np.int32, np.uint8) and scales.size:
        zeros = np.asarray(q["zero_points"], dtype=np.float64)
        shape = [1] * values.ndim
        if scales.size > 1:
            shape[q["quantized_dimension"]] = scales.size
        values = (values.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)
    return values.astype(np.float32)


class _Graph:
    """The ops of a ``.tflite`` that hold weights, found by the Keras layer name in their kernel's
    tensor name (``.../conv_pw_5_1/convolution``, ``.../box_1/MatMul``)."""

    def __init__(self, model_bytes: bytes, name: str):
        self.name = name
        with runtime_banners_dropped():  # XNNPACK announces itself when tensors are allocated
            interp = find_runtime().interpreter_cls(model_content=model_bytes)
            interp.allocate_tensors()
        self.interp = interp
        self.details = {d["index"]: d for d in interp.get_tensor_details()}
        # the interpreter's op list (no public API lists ops with their tensors; pinned LiteRT)
        ops = interp._get_ops_details()
        self.made_by = {out: op for op in ops for out in op["outputs"]}
        self.ops = [op for op in ops if op["op_name"] in _WEIGHT_OPS]

    def _constant(self, index: int) -> np.ndarray:
        op = self.made_by.get(index)
        if op is not None and op["op_name"] == "DEQUANTIZE":  # float16 weights
            index = op["inputs"][0]
        return _dequantized(self.interp, self.details[index])

    def weights_of(self, layer: str) -> tuple[str, np.ndarray, np.ndarray | None] | None:
        """(op name, kernel, bias) of the op the layer became, or None if there is none."""
        pattern = re.compile(rf"(^|[/;]){re.escape(layer)}(_\d+)?/(convolution|depthwise|MatMul)")
        found = []
        for op in self.ops:
            w = op["inputs"][1]
            names = self.details[w]["name"]
            made = self.made_by.get(w)
            if made is not None and made["op_name"] == "DEQUANTIZE":
                names += ";" + self.details[made["inputs"][0]]["name"]
            if pattern.search(names):
                found.append(op)
        if len(found) != 1:
            if found:
                raise ValueError(f"{self.name}: {len(found)} ops carry the weights of layer {layer!r}")
            return None
        op = found[0]
        bias = op["inputs"][2] if len(op["inputs"]) > 2 and op["inputs"][2] >= 0 else None
        return (
            op["op_name"],
            self._constant(op["inputs"][1]),
            None if bias is None else self._constant(bias),
        )


def _kernel(op: str, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A TFLite kernel in the Keras layout of ``shape``."""
    if op == "CONV_2D":  # [out, h, w, in] -> [h, w, in, out]
        w = w.transpose(1, 2, 3, 0)
    elif op == "DEPTHWISE_CONV_2D":  # [1, h, w, in * mult] -> [h, w, in, mult]
        w = w[0]
    else:  # FULLY_CONNECTED [out, in] -> [in, out] (a 1x1 convolution on a 1x1 map becomes one)
        w = w.T
    if int(np.prod(w.shape)) != int(np.prod(shape)):
        raise ValueError(f"kernel of {w.shape} does not fit {shape}")
    return w.reshape(shape)


def _next_norm(layer) -> keras.layers.BatchNormalization | None:
    nodes = list(getattr(layer, "_outbound_nodes", []))
    if len(nodes) == 1 and isinstance(nodes[0].operation, keras.layers.BatchNormalization):
        return nodes[0].operation
    return None


def keras_from_tflite(path: str | Path, images: np.ndarray) -> keras.Model:
    """The training model (``train.model.build_model``) rebuilt from the converted model at
    ``path`` (see the module's doc), its batch norms set from ``images`` (N x 128 x 128 x 3 RGB
    uint8, a few hundred of the training images). ValueError naming the file when it is not a
    Stampline model or its ops do not fit the network."""
    from train.model import build_model

    path = Path(path)
    try:
        raw = contract.read_model(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the model ({exc.strerror})") from None
    except contract.ContractError as exc:
        raise ValueError(str(exc)) from None
    try:
        meta = contract.read_embedded_metadata(raw, str(path))
    except contract.ContractError as exc:
        raise ValueError(str(exc)) from None
    graph = _Graph(raw, str(path))
    head = "grid" if graph.weights_of("cell_logits") is not None else "dense"
    n_classes = contract.class_width(meta.kind, len(meta.labels))
    try:
        model = build_model(meta.kind, n_classes, head=head)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    # the model and the models nested in it (the backbone), as convert/equalize.py finds them
    owners = [model, *(x for x in model._flatten_layers(include_self=False) if isinstance(x, keras.Model))]
    norms = []  # (owner, norm, folded bias)
    for owner in owners:
        for layer in owner.layers:
            if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense):
                continue
            if not layer.trainable_weights:  # fixed decoding in the training graph only
                continue
            found = graph.weights_of(layer.name)
            if found is None:
                raise ValueError(
                    f"{path}: no op holds the weights of layer {layer.name!r}: not a model edge-convert "
                    f"made from edge-train's {meta.kind} model with the {head} head"
                )
            op, w, b = found
            kernel_shape = tuple(layer.weights[0].shape)
            try:
                kernel = _kernel(op, w, kernel_shape)
            except ValueError as exc:
                raise ValueError(f"{path}: layer {layer.name!r}: {exc}") from None
            channels = kernel_shape[-1] if op != "DEPTHWISE_CONV_2D" else kernel_shape[-2] * kernel_shape[-1]
            bias = np.zeros(channels, np.float32) if b is None else b.reshape(-1)
            if bias.size != channels:
                raise ValueError(
                    f"{path}: layer {layer.name!r}: bias of {bias.size} values, expected {channels}"
                )
            if layer.use_bias:
                layer.set_weights([kernel, bias])
                continue
            layer.set_weights([kernel])
            norm = _next_norm(layer)
            if norm is None:  # not a network edge-train builds
                raise ValueError(f"{path}: layer {layer.name!r} has no bias and no batch norm after it")
            norms.append((owner, norm, bias))
    _set_norms(model, norms, np.asarray(images))
    return model


def _set_norms(model: keras.Model, norms: list, images: np.ndarray) -> None:
    """Each norm adds its bias in inference and starts from its input's statistics on ``images``."""
    for _, norm, bias in norms:  # first: each adds its bias, so the inputs below are the network's
        eps = norm.epsilon
        ones = np.ones_like(bias)
        norm.set_weights([ones * np.sqrt(1.0 + eps), bias, np.zeros_like(bias), ones])
    if not len(images):
        return
    x = images.astype(np.float32)
    by_owner: dict[int, list] = {}
    for item in norms:
        by_owner.setdefault(id(item[0]), []).append(item)
    stats = {}
    for items in by_owner.values():
        owner = items[0][0]
        if owner is model:
            feed = x
        else:  # a nested model (the backbone): fed what the outer model gives it
            feed = np.asarray(keras.Model(model.input, owner._inbound_nodes[0].input_tensors[0])(x))
        probe = keras.Model(owner.input, [norm.input for _, norm, _ in items])
        outs = []
        for k in range(0, len(feed), 64):
            y = probe(feed[k : k + 64], training=False)
            outs.append([np.asarray(a) for a in (y if isinstance(y, list | tuple) else [y])])
        for j, (_, norm, _) in enumerate(items):
            a = np.concatenate([step[j] for step in outs]).reshape(-1, norm.input.shape[-1])
            stats[id(norm)] = (a.mean(axis=0), a.var(axis=0))
    for _, norm, bias in norms:
        mean, var = stats[id(norm)]
        norm.set_weights([np.sqrt(var + norm.epsilon), mean + bias, mean, var])
