"""Activation-range equalization before int8 quantization (Keras weights in, Keras weights out).

TFLite quantizes each activation tensor with one scale for all its channels, set by the
calibration's range. In a trained MobileNet the channels of one tensor differ a lot: the first
convolution's output spans 0-6 (ReLU6) because of a few values per million, while most of its
channels stay under 0.6, so they get 25 levels of 256 and the rounding is the largest single
source of the int8 model's box error.

A convolution -> batch norm -> ReLU6 whose output feeds only a depthwise convolution can be
rescaled channel by channel without changing the network: multiply the batch norm's gamma and
beta of channel ``c`` by ``s_c`` and divide the depthwise kernel of channel ``c`` by ``s_c``.
Choosing ``s_c`` so that the channel's high percentile reaches the ReLU6 cap gives every channel
the whole 8-bit range. The only change is that the values above that percentile (1 in 10,000 by
default) are clipped at the cap. The depthwise weights lose nothing, since TFLite quantizes them
per channel. This is the depthwise case of cross-layer equalization (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019), with the scale taken from
calibration activations rather than weight ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the share of a channel's calibration activations left above the ReLU6 cap after scaling
PERCENTILE = 99.99
#: no channel is scaled by more (a channel that is almost never active keeps its tiny range)
MAX_SCALE = 64.0


@dataclass(frozen=True)
class Chain:
    """batch norm -> ReLU (capped) -> [zero padding] -> depthwise convolution, inside ``owner``."""

    owner: object  # the functional model whose graph holds the chain
    norm: object
    relu: object
    depthwise: object

    @property
    def cap(self) -> float:
        return float(self.relu.max_value)


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def only_consumer_is(layer, consumer) -> bool:
    nodes = list(getattr(layer, "_outbound_nodes", []))
    return len(nodes) == 1 and nodes[0].operation is consumer


def find_chains(model) -> list[Chain]:
    """The rescalable chains of ``model`` and of the functional models nested in it."""
    import keras

    L = keras.layers
    chains = []
    for owner in [model, *(x for x in model._flatten_layers() if isinstance(x, keras.Model))]:
        outputs = {id(t) for t in getattr(owner, "outputs", None) or []}
        for dw in owner.layers:
            if not isinstance(dw, L.DepthwiseConv2D) or len(dw._inbound_nodes) != 1:
                continue
            src, into = _producer(dw.input), dw
            if isinstance(src, L.ZeroPadding2D):
                if not only_consumer_is(src, dw) or len(src._inbound_nodes) != 1:
                    continue
                src, into = _producer(src.input), src
            relu = src
            if not isinstance(relu, L.ReLU) or relu.max_value is None or relu.negative_slope != 0:
                continue
            if relu.threshold != 0 or not only_consumer_is(relu, into) or id(relu.output) in outputs:
                continue
            norm = _producer(relu.input)
            if not isinstance(norm, L.BatchNormalization) or not (norm.scale and norm.center):
                continue
            if not only_consumer_is(norm, relu) or id(norm.output) in outputs:
                continue
            chains.append(Chain(owner, norm, relu, dw))
    return chains


def owner_input(model, owner):
    """A model from ``model``'s input to the tensor ``owner`` (a nested model) is called on."""
    import keras

    if owner is model:
        return None
    node = owner._inbound_nodes[0]
    return keras.Model(model.input, node.input_tensors[0])


def channel_percentiles(model, chains: list[Chain], images: list[np.ndarray], q: float) -> list[np.ndarray]:
    """Per-channel ``q``-th percentile of each chain's ReLU output over the images."""
    import keras

    out: list[np.ndarray | None] = [None] * len(chains)
    by_owner: dict[int, list[int]] = {}
    for i, c in enumerate(chains):
        by_owner.setdefault(id(c.owner), []).append(i)
    batch = np.stack(images).astype(np.float32)
    for idx in by_owner.values():
        owner = chains[idx[0]].owner
        pre = owner_input(model, owner)
        probe = keras.Model(owner.input, [chains[i].relu.output for i in idx])
        acts = []
        for k in range(0, len(batch), 50):
            x = batch[k : k + 50]
            y = probe(x if pre is None else pre(x), training=False)
            acts.append([np.asarray(a) for a in (y if isinstance(y, list | tuple) else [y])])
        for j, i in enumerate(idx):
            a = np.concatenate([step[j] for step in acts])
            out[i] = np.percentile(a.reshape(-1, a.shape[-1]), q, axis=0)
    return out  # type: ignore[return-value]


def equalize(model, images: list[np.ndarray], q: float = PERCENTILE, max_scale: float = MAX_SCALE) -> dict:
    """Rescale every chain of ``model`` in place so each channel's ``q``-th percentile of its
    ReLU output (over ``images``, model inputs) reaches the cap; returns what was done."""
    chains = find_chains(model)
    if not chains:
        return {"chains": 0}
    highs = channel_percentiles(model, chains, images, q)
    scales_all = []
    for chain, high in zip(chains, highs, strict=True):
        scales = np.where(high > 0, chain.cap / np.maximum(high, 1e-12), 1.0)
        scales = np.clip(scales, 1.0, max_scale).astype(np.float32)
        gamma, beta, *stats = chain.norm.get_weights()
        chain.norm.set_weights([gamma * scales, beta * scales, *stats])
        kernel, *rest = chain.depthwise.get_weights()
        chain.depthwise.set_weights([kernel / scales[None, None, :, None], *rest])
        scales_all.append(scales)
    s = np.concatenate(scales_all)
    return {
        "chains": len(chains),
        "layers": [c.relu.name for c in chains],
        "percentile": q,
        "scale_median": float(np.median(s)),
        "scale_max": float(s.max()),
    }
