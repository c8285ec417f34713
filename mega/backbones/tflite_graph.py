"""Read a TensorFlow Lite flatbuffer into a plain graph: constant arrays and a list of operators.

This is the conversion half of :mod:`mega.backbones.tflite_net`. It reads the file's schema with the
``tflite`` package (the generated flatbuffer accessors, pure Python; no TensorFlow, no LiteRT), turns
every constant into a float32 / int32 numpy array (float16 constants behind ``DEQUANTIZE`` operators
become float32 constants and the ``DEQUANTIZE`` operators disappear), and keeps, per operator, its kind,
its tensor ids and the options the PyTorch side needs. Only the operator kinds in :data:`SUPPORTED`
are read; any other kind is refused with the list of what the file uses.

Layout facts of the format (tensors are NHWC):
- ``CONV_2D`` filters are (O, kh, kw, I); ``DEPTHWISE_CONV_2D`` filters are (1, kh, kw, C * multiplier);
- padding is ``SAME`` (0) or ``VALID`` (1); fused activations: 0 none, 1 ReLU, 2 ReLU-1..1, 3 ReLU6;
- ``PAD`` paddings are an int32 (4, 2) constant, one (before, after) row per NHWC axis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "PAD",
    "RESIZE_BILINEAR",
    "MAX_POOL_2D",
    "RESHAPE",
    "LOGISTIC",
    "DEQUANTIZE",
)
ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


class TFLiteFormatError(ValueError):
    """A .tflite file this reader cannot convert (not a model, or an operator it does not know)."""


@dataclass
class TFLiteOp:
    """One operator: ``kind`` (e.g. 'CONV_2D'), input / output tensor ids, and its options."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """A converted subgraph.

    Attributes:
        names: tensor id -> the file's tensor name.
        shapes: tensor id -> NHWC shape tuple.
        constants: tensor id -> numpy array (float32 or int32), DEQUANTIZE outputs included.
        ops: the compute operators in execution order (DEQUANTIZE removed).
        inputs / outputs: the graph's input and output tensor ids.
    """

    names: dict[int, str]
    shapes: dict[int, tuple[int, ...]]
    constants: dict[int, np.ndarray]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]

    def output_id(self, name: str) -> int:
        """The id of the graph output called ``name`` (e.g. 'Identity')."""
        for t in self.outputs:
            if self.names[t] == name:
                return t
        raise KeyError(f"no graph output '{name}'; outputs: {[self.names[t] for t in self.outputs]}")


def _op_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _options(op: Any, kind: str) -> dict[str, Any]:
    """The options of one operator as a dict (only the fields the PyTorch side reads)."""
    import tflite

    table = op.BuiltinOptions()
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = cls()
        o.Init(table.Bytes, table.Pos)
        out = {
            "padding": "same" if o.Padding() == 0 else "valid",
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": ACTIVATIONS[o.FusedActivationFunction()],
        }
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind == "ADD":
        o = tflite.AddOptions()
        o.Init(table.Bytes, table.Pos)
        return {"activation": ACTIVATIONS[o.FusedActivationFunction()]}
    if kind == "MAX_POOL_2D":
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "padding": "same" if o.Padding() == 0 else "valid",
            "stride": (o.StrideH(), o.StrideW()),
            "kernel": (o.FilterHeight(), o.FilterWidth()),
            "activation": ACTIVATIONS[o.FusedActivationFunction()],
        }
    if kind == "RESIZE_BILINEAR":
        o = tflite.ResizeBilinearOptions()
        o.Init(table.Bytes, table.Pos)
        if o.AlignCorners() or not o.HalfPixelCenters():
            raise TFLiteFormatError(
                "RESIZE_BILINEAR without half_pixel_centers (or with align_corners) is not supported"
            )
        return {}
    return {}


def read_tflite(path: str | os.PathLike) -> TFLiteGraph:
    """Read subgraph 0 of the .tflite file at ``path`` into a :class:`TFLiteGraph`.

    Raises:
        FileNotFoundError: no such file.
        TFLiteFormatError: the file is not a TFLite model, or uses an operator outside SUPPORTED.
    """
    import tflite

    path = Path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{path}: not a TensorFlow Lite model (no 'TFL3' identifier)")
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    op_names = _op_names()

    names: dict[int, str] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    constants: dict[int, np.ndarray] = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        names[t] = tensor.Name().decode()
        shapes[t] = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size:
            dtype = _NUMPY_TYPES.get(tensor.Type())
            if dtype is None:
                raise TFLiteFormatError(f"{path}: tensor '{names[t]}' has unsupported type {tensor.Type()}")
            constants[t] = np.frombuffer(data.tobytes(), dtype=dtype).reshape(shapes[t])

    ops: list[TFLiteOp] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if kind not in SUPPORTED:
            used = sorted(
                {
                    op_names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "?")
                    for c in (model.OperatorCodes(k) for k in range(model.OperatorCodesLength()))
                }
            )
            raise TFLiteFormatError(
                f"{path}: operator {kind} is not supported (file uses {used}; supported: {list(SUPPORTED)})"
            )
        inputs = [int(x) for x in op.InputsAsNumpy()]
        outputs = [int(x) for x in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE":
            constants[outputs[0]] = constants[inputs[0]].astype(np.float32)
            continue
        try:
            options = _options(op, kind)
        except TFLiteFormatError as e:
            raise TFLiteFormatError(f"{path}: operator {i} ({kind}): {e}") from None
        ops.append(TFLiteOp(kind, inputs, outputs, options))
    for t, arr in constants.items():
        if arr.dtype == np.float16:
            constants[t] = arr.astype(np.float32)
    return TFLiteGraph(
        names=names,
        shapes=shapes,
        constants=constants,
        ops=ops,
        inputs=[int(x) for x in graph.InputsAsNumpy()],
        outputs=[int(x) for x in graph.OutputsAsNumpy()],
    )
