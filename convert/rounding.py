"""Weight rounding chosen for the layer's output before int8 quantization (Keras weights in, Keras
weights out).

TFLite quantizes each output channel's weights of a convolution to the nearest of 255 steps
(``max |w| / 127`` apart, the batch norm folded in first). Rounding each weight to its nearest step
is not what keeps the channel's *output* closest to the float one: where the taps of a 3x3
depthwise kernel are large and of both signs (an edge detector), their rounding errors add up on
the inputs they multiply, and on a model fine-tuned from the bundled one the first depthwise layer
alone moved int8 presence scores by up to 0.4 (its output off by 4 of its 255 levels, rms, on one
channel).

Here each channel's weights are rounded, up or down, to minimise the variance of the output error
``e . x`` over calibration activations ``x`` (``e`` the weights' rounding errors, so the variance
is ``e^T Cov(x) e``): from nearest, flipping single weights while that lowers it (the greedy
search of Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", 2020, on
the layer's own inputs rather than by gradient descent). What remains of the error's mean,
``e . E[x]``, is moved into the batch norm's beta, which int8 keeps in 32 bits. The largest weight
of each channel stays as it is, so the converter finds the same step, and the weights written back
lie on its grid, so its own nearest rounding gives exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: sweeps over a channel's weights at most (each flips any weight whose other rounding helps)
SWEEPS = 4
#: images at a time through the probe that collects a layer's inputs
BATCH = 25


@dataclass(frozen=True)
class Layer:
    """convolution (or depthwise convolution) -> batch norm, inside ``owner``."""

    owner: object
    conv: object
    norm: object

    @property
    def depthwise(self) -> bool:
        import keras

        return isinstance(self.conv, keras.layers.DepthwiseConv2D)


def find_layers(model, skip_pixel_stem: bool = False) -> list[Layer]:
    """The convolutions of ``model`` (and of the functional models nested in it) that a batch norm
    alone follows, with square kernels, no dilation, one group and one depth multiplier.
    ``skip_pixel_stem``: leave out convolutions of 3 input channels (the pixels' first convolution,
    which ``int8-float-stem`` keeps in float)."""
    import keras

    from convert.equalize import only_consumer_is

    L = keras.layers
    found = []
    for owner in [model, *(x for x in model._flatten_layers() if isinstance(x, keras.Model))]:
        for conv in owner.layers:
            if not isinstance(conv, L.Conv2D | L.DepthwiseConv2D) or len(conv._inbound_nodes) != 1:
                continue
            kh, kw = conv.kernel_size
            if kh != kw or tuple(conv.dilation_rate) != (1, 1) or conv.data_format != "channels_last":
                continue
            if isinstance(conv, L.DepthwiseConv2D):
                if conv.depth_multiplier != 1:
                    continue
            elif conv.groups != 1 or (skip_pixel_stem and conv.input.shape[-1] == 3):
                continue
            nodes = list(getattr(conv, "_outbound_nodes", []))
            norm = nodes[0].operation if len(nodes) == 1 else None
            if not isinstance(norm, L.BatchNormalization) or not (norm.scale and norm.center):
                continue
            if norm.axis not in (-1, 3) or not only_consumer_is(conv, norm):
                continue
            found.append(Layer(owner, conv, norm))
    return found


def _patches(x: np.ndarray, layer: Layer):
    """The inputs each output value of ``layer.conv`` is computed from: (positions, k*k*C) in the
    kernel's order (rows, columns, channels)."""
    import tensorflow as tf

    k = layer.conv.kernel_size[0]
    s = layer.conv.strides[0]
    if k == 1:
        return x[:, ::s, ::s, :].reshape(-1, x.shape[-1])
    p = tf.image.extract_patches(
        x, sizes=[1, k, k, 1], strides=[1, s, s, 1], rates=[1, 1, 1, 1], padding=layer.conv.padding.upper()
    )
    return np.asarray(p).reshape(-1, k * k * x.shape[-1])


def input_moments(model, layer: Layer, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the inputs of each output channel's dot product: for a convolution
    one (D,) and (D, D), D = k*k*C; for a depthwise one per channel, (C, k*k) and (C, k*k, k*k)."""
    import keras

    from convert.equalize import owner_input

    pre = owner_input(model, layer.owner)
    probe = keras.Model(layer.owner.input, layer.conv.input)
    total = 0
    s1 = s2 = None
    for i in range(0, len(images), BATCH):
        x = images[i : i + BATCH]
        a = np.asarray(probe(x if pre is None else pre(x), training=False), np.float32)
        p = _patches(a, layer).astype(np.float64)
        if layer.depthwise:  # (M, k*k, C): each channel's own taps
            c = a.shape[-1]
            p = p.reshape(len(p), -1, c)
            m1, m2 = p.sum(axis=0).T, np.einsum("mic,mjc->cij", p, p)
        else:
            m1, m2 = p.sum(axis=0), p.T @ p
        s1 = m1 if s1 is None else s1 + m1
        s2 = m2 if s2 is None else s2 + m2
        total += len(p)
    mean = s1 / total
    outer = mean[..., :, None] * mean[..., None, :]
    return mean, s2 / total - outer


def round_channel(w: np.ndarray, cov: np.ndarray, sweeps: int = SWEEPS) -> np.ndarray:
    """Rounding errors ``e`` of the weights ``w`` (one output channel, folded) on int8's per-channel
    grid (``max |w| / 127``) with low ``e^T cov e``: nearest, then single flips that lower it."""
    w = np.asarray(w, np.float64)
    top = int(np.argmax(np.abs(w)))
    step = abs(w[top]) / 127.0
    if step == 0:
        return np.zeros_like(w)
    q = np.round(w / step)
    e = q * step - w
    e[top] = 0.0  # exactly on the grid's end: the converter finds this step again
    ce = cov @ e
    for _ in range(sweeps):
        changed = False
        for i in range(len(w)):
            if i == top:
                continue
            other = np.floor(w[i] / step) if e[i] > 0 else np.ceil(w[i] / step)
            d = other * step - w[i] - e[i]
            if d == 0:
                continue
            if 2 * d * ce[i] + d * d * cov[i, i] < 0:  # the change of e^T cov e
                e[i] += d
                ce += d * cov[:, i]
                changed = True
        if not changed:
            break
    return e


def round_weights(
    model, images: list[np.ndarray], skip_pixel_stem: bool = False, sweeps: int = SWEEPS
) -> dict:
    """Round the weights of every layer of ``find_layers(model)`` in place for the least output
    error on ``images`` (model inputs), moving the error's mean into each batch norm's beta;
    returns what was done, with the output error variance of nearest rounding and of this one,
    summed over layers and channels (``sweeps=0``: nearest rounding, mean moved all the same)."""
    layers = find_layers(model, skip_pixel_stem)
    if not layers:
        return {"layers": 0}
    batch = np.stack(images).astype(np.float32)
    before = after = 0.0
    for layer in layers:
        mean, cov = input_moments(model, layer, batch)
        kernel, *rest = layer.conv.get_weights()
        gamma, beta, moving_mean, moving_var = layer.norm.get_weights()
        fold = gamma / np.sqrt(moving_var + layer.norm.epsilon)
        if layer.depthwise:  # (k, k, C, 1): channel c's taps are kernel[..., c, 0]
            w = (kernel[..., 0] * fold).reshape(-1, kernel.shape[2]).T  # (C, k*k)
        else:  # (k, k, Cin, Cout): output channel c's weights are kernel[..., c]
            w = (kernel * fold).reshape(-1, kernel.shape[3]).T  # (Cout, k*k*Cin)
        errors = np.zeros_like(w, dtype=np.float64)
        for c in range(len(w)):
            cov_c = cov[c] if layer.depthwise else cov
            nearest = round_channel(w[c], cov_c, sweeps=0)
            errors[c] = round_channel(w[c], cov_c, sweeps)
            before += float(nearest @ cov_c @ nearest)
            after += float(errors[c] @ cov_c @ errors[c])
        shift = -np.einsum("cd,cd->c", errors, mean) if layer.depthwise else -(errors @ mean)
        rounded = ((w + errors) / fold[:, None]).T.astype(np.float32)
        if layer.depthwise:
            kernel = rounded.reshape(kernel.shape[:3])[..., None]
        else:
            kernel = rounded.reshape(kernel.shape)
        layer.conv.set_weights([kernel, *rest])
        layer.norm.set_weights([gamma, (beta + shift).astype(np.float32), moving_mean, moving_var])
    return {
        "layers": len(layers),
        "error_variance_nearest": before,
        "error_variance_rounded": after,
    }
