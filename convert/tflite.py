"""Keras -> TFLite: quantization modes, batch fixed at 1, builtin ops only, metadata embedded."""

from __future__ import annotations

import tempfile

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge import contract
from edge.contract import ModelMetadata

MODES = ("int8", "float16", "dynamic", "float32")


class ConversionError(ValueError):
    """The model cannot be converted into something the device can run."""


def load_keras(path: Path):
    """The trained Keras model, or a ConversionError naming what is wrong with the file."""
    import keras

    if not path.exists():
        raise ConversionError(f"{path}: file not found")
    if path.suffix not in (".keras", ".h5"):
        raise ConversionError(f"{path}: expected a Keras model file (.keras)")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # keras raises many kinds for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"{path}: not a readable Keras model ({first[:160]})") from None
    names = list(model.output_names) if isinstance(model.output, dict) else []
    if contract.PRESENCE not in names:
        raise ConversionError(
            f"{path}: model outputs {names or 'unnamed'} lack {contract.PRESENCE!r}; "
            "expected a Stampline model (named outputs presence, box/center/heatmap)"
        )
    if tuple(model.input_shape[1:]) != contract.INPUT_SHAPE:
        raise ConversionError(f"{path}: input {model.input_shape[1:]} != expected {contract.INPUT_SHAPE}")
    return model


def convert(
    model,
    mode: str,
    representative: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Convert with the batch fixed at 1 and only builtin ops; int8 takes uint8 pixels in and
    gives integer outputs, calibrated on ``representative`` (model inputs, uint8 RGB)."""
    import tensorflow as tf

    if mode not in MODES:
        raise ConversionError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")

    @tf.function(input_signature=[tf.TensorSpec((1, *contract.INPUT_SHAPE), tf.float32, name="image")])
    def serve(image):
        return model(image, training=False)

    # Keras 3 variables reach the converter as resource handles (VAR_HANDLE ops, batch norm left
    # unfolded, NaN outputs on the device), so freeze them into constants first; then save the
    # frozen graph with one serving signature whose output names the runtime binds by.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    @tf.function(input_signature=[tf.TensorSpec((1, *contract.INPUT_SHAPE), tf.float32, name="image")])
    def serve_frozen(image):
        return tf.nest.pack_sequence_as(structure, frozen(image))

    module = tf.Module()
    with tempfile.TemporaryDirectory(prefix="stampline-savedmodel-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve_frozen.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode in ("int8", "dynamic", "float16"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            if representative is None:
                raise ConversionError("int8 needs a representative (calibration) set")

            def rep():
                # one full-range ramp pins the uint8 input's scale to exactly 1 (zero point 0), so the
                # device feeds camera pixels unchanged even if no calibration image reaches 0 or 255
                ramp = np.broadcast_to(
                    np.linspace(0, 255, contract.INPUT_WIDTH)[None, :, None], contract.INPUT_SHAPE
                )
                yield {"image": ramp[None].astype(np.float32)}
                for image in representative():
                    yield {"image": image[None].astype(np.float32)}

            converter.representative_dataset = rep
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        try:
            return converter.convert()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"conversion failed: {first[:200]}") from None


def embed_metadata(model_bytes: bytes, meta: ModelMetadata) -> bytes:
    """Add (or replace) the ``stampline`` entry of the flatbuffer's Model.metadata."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    m.buffers = m.buffers or []
    m.metadata = [
        e
        for e in (m.metadata or [])
        if e.name not in (contract.METADATA_NAME.encode(), contract.METADATA_NAME)
    ]
    buf = schema.BufferT()
    buf.data = np.frombuffer(meta.to_json().encode("utf-8"), dtype=np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = contract.METADATA_NAME
    entry.buffer = len(m.buffers) - 1
    m.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    contract.read_embedded_metadata(out, "converted model")  # what the device will read
    return out


def op_names(model_bytes: bytes) -> list[str]:
    """Builtin op names used by a converted model (to prove no Flex/custom ops slipped in)."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(model_bytes, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for i in range(m.OperatorCodesLength()):
        code = m.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        out.append(f"CUSTOM:{custom.decode()}" if custom else names.get(builtin, str(builtin)))
    return sorted(set(out))
