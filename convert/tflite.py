"""Keras -> TFLite: quantization modes, batch fixed at 1, builtin ops only, metadata embedded."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge import contract
from edge.cli.common import first_line, import_quietly, keras_file_problem, keras_model_problem
from edge.contract import ModelMetadata

MODES = ("int8", "int8-float-stem", "float16", "dynamic", "float32")
INTEGER_MODES = ("int8", "int8-float-stem")


class ConversionError(ValueError):
    """The model cannot be converted into something the device can run."""


def load_keras(path: Path):
    """The trained Keras model, or a ConversionError naming what is wrong with the file."""
    problem = keras_file_problem(path)
    if problem:
        raise ConversionError(problem)
    import_quietly("tensorflow")
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # keras raises many kinds for a bad file
        raise ConversionError(f"{path}: not a readable Keras model ({first_line(exc, 160)})") from None
    problem = keras_model_problem(path, model)
    if problem:
        raise ConversionError(problem)
    return model


def convert(
    model,
    mode: str,
    representative: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Convert with the batch fixed at 1 and only builtin ops; int8 takes uint8 pixels in and
    gives integer outputs, calibrated on ``representative`` (model inputs, uint8 RGB).

    ``int8`` is full-integer quantization (the converter's own). ``int8-float-stem`` leaves the
    stem (pixel scaling and the first convolution, 3 -> 8 channels, 6% of the multiply-adds) in
    float and quantizes everything after it: on x86 CPUs with AMX, XNNPACK's int8 kernels handle
    that 3-channel convolution worst (0.24 ms against 0.07 ms in float), and the uint8 pixels go
    straight into a DEQUANTIZE that XNNPACK runs instead of a QUANTIZE it cannot delegate.
    Invoke time against float32 (x86 dev machine with AMX, 1 thread, scripts/bench_invoke.py):
    int8 1.3x with AMX, 0.85-0.9x with AMX denied (see ``edge.runtime.deny_amx``); int8-float-stem
    0.9x. The input contract (uint8, scale 1, zero 0) is the same for both.
    """
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
        if mode in (*INTEGER_MODES, "dynamic", "float16"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode in INTEGER_MODES:
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
            # calibrate here, quantize below with the stem left in float (the route
            # tf.lite.experimental.QuantizationDebugger takes for its denylisted nodes)
            converter._experimental_calibrate_only = mode == "int8-float-stem"
        try:
            with warnings.catch_warnings():  # calibration uses TF's deprecated tf.lite.Interpreter
                warnings.simplefilter("ignore", UserWarning)
                out = converter.convert()
            return _quantize_with_float_stem(out) if mode == "int8-float-stem" else out
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"conversion failed: {first_line(exc, 200)}") from None


def _quantize_with_float_stem(calibrated: bytes) -> bytes:
    """int8 model from a calibrated float one, with the ops from the input up to the first CONV_2D
    left in float; uint8 input (read by a DEQUANTIZE) and uint8 outputs, as ``convert`` promises."""
    import flatbuffers
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.python.convert import mlir_quantize

    ops, types = schema.BuiltinOperator, schema.TensorType

    def parse(data: bytes):
        m = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
        return m, m.subgraphs[0], codes

    m, g, codes = parse(calibrated)
    reached, stem, conv = {int(i) for i in g.inputs}, [], False
    for op in g.operators:
        if not reached.intersection(int(i) for i in op.inputs):
            continue
        code = codes[op.opcodeIndex]
        if code not in (ops.MUL, ops.ADD, ops.SUB, ops.PAD, ops.PADV2, ops.CONV_2D):
            break
        stem.append(g.tensors[op.outputs[0]].name.decode())
        reached.update(int(i) for i in op.outputs)
        if code == ops.CONV_2D:
            conv = True
            break

    def plain() -> bytes:  # full int8 with uint8 in and out, as the converter itself makes it
        return mlir_quantize(calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8)

    if len(g.inputs) != 1 or not conv:
        return plain()

    m, g, codes = parse(mlir_quantize(calibrated, fully_quantize=True, denylisted_nodes=stem))
    # the input: int8 (scale, zero) read only by DEQUANTIZE holds the same values as uint8 (scale,
    # zero + 128), which DEQUANTIZE takes directly -- the calibration ramp makes it (1, 0)
    t = g.tensors[g.inputs[0]]
    users = {codes[op.opcodeIndex] for op in g.operators if g.inputs[0] in op.inputs}
    quantize = [op for op in g.operators if codes[op.opcodeIndex] == ops.QUANTIZE]
    if t.type != types.INT8 or users != {ops.DEQUANTIZE} or not quantize:
        return plain()
    t.type = types.UINT8
    t.quantization.zeroPoint = np.asarray(t.quantization.zeroPoint, dtype=np.int64) + 128
    # the outputs: int8 -> uint8 through one requantizing QUANTIZE each, as the converter does
    for k, i in enumerate(list(g.outputs)):
        old = g.tensors[i]
        if old.type != types.INT8:
            continue
        new = schema.TensorT()
        new.name, old.name = old.name, old.name + b"/int8"
        new.shape, new.shapeSignature, new.hasRank = old.shape, old.shapeSignature, old.hasRank
        new.type = types.UINT8
        new.quantization = schema.QuantizationParametersT()
        new.quantization.scale = old.quantization.scale
        new.quantization.zeroPoint = np.asarray(old.quantization.zeroPoint, dtype=np.int64) + 128
        m.buffers.append(schema.BufferT())
        new.buffer = len(m.buffers) - 1
        g.tensors.append(new)
        j = len(g.tensors) - 1
        op = schema.OperatorT()
        op.opcodeIndex = quantize[0].opcodeIndex
        op.builtinOptionsType, op.builtinOptions = quantize[0].builtinOptionsType, quantize[0].builtinOptions
        op.inputs, op.outputs = np.array([i], dtype=np.int32), np.array([j], dtype=np.int32)
        g.operators.append(op)
        g.outputs[k] = j
        for sig in m.signatureDefs or []:
            for entry in sig.outputs or []:
                if entry.tensorIndex == i:
                    entry.tensorIndex = j
    builder = flatbuffers.Builder(len(calibrated) + 4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
