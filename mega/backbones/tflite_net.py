"""Run a converted TFLite graph (:mod:`mega.backbones.tflite_graph`) as a PyTorch module.

:class:`TFLiteNet` turns each convolution of the graph into a small module with named parameters
(``conv07.weight``, ``dwconv12.bias``: the k-th CONV_2D / DEPTHWISE_CONV_2D of the file in its
operator order), so a state dict, ``requires_grad`` and optimisers work as on any network. It keeps
only the operators needed for the outputs it is asked for (the BlazePose encoder alone skips the
256 x 256 segmentation decoder), computes in NCHW, and folds every explicit ``PAD`` that feeds a single
``VALID`` convolution into that convolution's padding when it is symmetric.

TF semantics reproduced here (checked against LiteRT by tests/test_blazepose.py):
- ``SAME`` padding puts the odd pixel after (bottom / right): total = max((ceil(n/s) - 1) s + d (k - 1) + 1 - n, 0);
- ``RESIZE_BILINEAR`` with ``half_pixel_centers`` is PyTorch's ``align_corners=False`` (the reader
  refuses the other modes);
- ``MAX_POOL_2D`` pads with -inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mega.backbones.tflite_graph import TFLiteGraph, TFLiteOp


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """A fused activation, in place (``x`` is always a fresh result that nothing else holds)."""
    if activation == "relu":
        return F.relu_(x)
    if activation == "relu6":
        return F.hardtanh_(x, 0.0, 6.0)
    if activation == "relu_n1_to_1":
        return F.hardtanh_(x, -1.0, 1.0)
    return x


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding of one axis of length ``size``: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class TFLiteConv(nn.Module):
    """One CONV_2D (groups=1) or DEPTHWISE_CONV_2D (groups = input channels) with TF padding.

    Args:
        weight: (O, I / groups, kh, kw) in PyTorch layout; bias: (O,).
        stride, dilation: (h, w); padding: 'same', 'valid', or fixed (top, bottom, left, right).
        groups: 1, or the input channel count for a depthwise convolution.
        activation: the fused activation ('none', 'relu', 'relu6', 'relu_n1_to_1').
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        padding: str | tuple[int, int, int, int],
        groups: int,
        activation: str,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.contiguous())
        self.bias = nn.Parameter(bias.contiguous())
        self.stride, self.dilation, self.groups, self.activation = stride, dilation, groups, activation
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, I, H, W) -> (B, O, H', W') (channels-last in, channels-last out for 1 x 1 kernels)."""
        kh, kw = self.weight.shape[-2:]
        if kh == kw == 1 and self.groups == 1 and self.stride == (1, 1) and self.padding in ("same", "valid"):
            # A pointwise convolution is one matrix product over the NHWC view (PyTorch's CPU conv
            # takes a slow im2col path for it).
            y = (
                torch.matmul(x.permute(0, 2, 3, 1), self.weight[:, :, 0, 0].t())
                .add_(self.bias)
                .permute(0, 3, 1, 2)
            )
            return _activate(y, self.activation)
        if self.padding == "same":
            top, bottom = same_padding(x.shape[-2], kh, self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[-1], kw, self.stride[1], self.dilation[1])
        elif self.padding == "valid":
            top = bottom = left = right = 0
        else:
            top, bottom, left, right = self.padding
        if top == bottom and left == right:
            pad: tuple[int, int] = (top, left)
        else:
            x, pad = F.pad(x, (left, right, top, bottom)), (0, 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        return _activate(y, self.activation)


class TFLiteNet(nn.Module):
    """A TFLite graph as a module: ``forward(x (B, C, H, W)) -> {output id: tensor}``.

    Args:
        graph: the converted file (:func:`mega.backbones.tflite_graph.read_tflite`).
        outputs: tensor ids to compute (graph outputs or any intermediate); only the operators they
            need are kept. 4-D results are NCHW (B, C, H, W); RESHAPE results keep the file's shape
            with the batch first.
    """

    def __init__(self, graph: TFLiteGraph, outputs: Sequence[int]) -> None:
        super().__init__()
        self.output_ids = [int(t) for t in outputs]
        self.input_id = graph.inputs[0]
        needed, ops = set(self.output_ids), []
        for op in reversed(graph.ops):
            if any(t in needed for t in op.outputs):
                ops.append(op)
                needed.update(t for t in op.inputs if t >= 0 and t not in graph.constants)
        ops.reverse()
        self.convs = nn.ModuleDict()
        self.program: list[tuple[str, TFLiteOp, str]] = []
        counts = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0}
        consumers: dict[int, int] = {}
        for op in ops:
            for t in op.inputs:
                consumers[t] = consumers.get(t, 0) + 1
        folded: dict[int, tuple[int, int, int, int]] = {}  # PAD output -> (top, bottom, left, right)
        self.alias: dict[int, int] = {}  # PAD output -> PAD input, for the convolution that absorbs it
        for op in ops:
            if op.kind == "PAD":
                pads = graph.constants[op.inputs[1]].tolist()  # NHWC rows of (before, after)
                reader = next((o for o in ops if op.outputs[0] in o.inputs), None)
                if (
                    consumers.get(op.outputs[0]) == 1
                    and reader is not None
                    and reader.kind in counts
                    and reader.options["padding"] == "valid"
                    and pads[0] == [0, 0]
                    and pads[3] == [0, 0]
                ):
                    folded[op.outputs[0]] = (pads[1][0], pads[1][1], pads[2][0], pads[2][1])
                    self.alias[op.outputs[0]] = op.inputs[0]
        for op in ops:
            if op.kind in counts:
                key = ("conv" if op.kind == "CONV_2D" else "dwconv") + f"{counts[op.kind]:02d}"
                counts[op.kind] += 1
                self.convs[key] = self._conv(graph, op, folded)
                self.program.append((op.kind, op, key))
            elif op.kind == "PAD" and op.outputs[0] in folded:
                continue
            else:
                self.program.append((op.kind, op, ""))
        self.constants = {
            t: torch.from_numpy(graph.constants[t].copy())
            for t in graph.constants
            if any(
                t in op.inputs
                for _, op, _ in self.program
                if op.kind in ("PAD", "RESIZE_BILINEAR", "RESHAPE")
            )
        }

    @staticmethod
    def _conv(graph: TFLiteGraph, op: TFLiteOp, folded: dict[int, tuple[int, int, int, int]]) -> TFLiteConv:
        w = torch.from_numpy(graph.constants[op.inputs[1]].copy())
        b = (
            torch.from_numpy(graph.constants[op.inputs[2]].copy())
            if len(op.inputs) > 2 and op.inputs[2] >= 0
            else torch.zeros(w.shape[0] if op.kind == "CONV_2D" else w.shape[-1])
        )
        o = op.options
        padding: str | tuple[int, int, int, int] = o["padding"]
        source = op.inputs[0]
        if source in folded and padding == "valid":
            padding = folded[source]
        if op.kind == "CONV_2D":
            weight, groups = w.permute(0, 3, 1, 2), 1
        else:
            weight, groups = w[0].permute(2, 0, 1).unsqueeze(1), graph.shapes[source][-1]
        return TFLiteConv(
            weight, b, tuple(o["stride"]), tuple(o["dilation"]), padding, groups, o["activation"]
        )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """x (B, C, H, W) -> {tensor id: (B, ...)} for the requested outputs."""
        values: dict[int, torch.Tensor] = {self.input_id: x.contiguous(memory_format=torch.channels_last)}
        for kind, op, key in self.program:
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                y = self.convs[key](values[self.alias.get(op.inputs[0], op.inputs[0])])
            elif kind == "ADD":
                y = _activate(values[op.inputs[0]] + values[op.inputs[1]], op.options["activation"])
            elif kind == "PAD":
                p = self.constants[op.inputs[1]].tolist()
                y = F.pad(values[op.inputs[0]], (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
            elif kind == "RESIZE_BILINEAR":
                size = tuple(self.constants[op.inputs[1]].tolist())
                y = F.interpolate(values[op.inputs[0]], size=size, mode="bilinear", align_corners=False)
            elif kind == "MAX_POOL_2D":
                o, v = op.options, values[op.inputs[0]]
                if o["padding"] == "same":
                    (t, b), (lft, r) = (
                        same_padding(v.shape[2 + a], o["kernel"][a], o["stride"][a]) for a in (0, 1)
                    )
                    v = F.pad(v, (lft, r, t, b), value=float("-inf"))
                y = _activate(F.max_pool2d(v, o["kernel"], o["stride"]), o["activation"])
            elif kind == "RESHAPE":
                v = values[op.inputs[0]]
                v = v.permute(0, 2, 3, 1) if v.ndim == 4 else v
                y = v.reshape(v.shape[0], *self.constants[op.inputs[1]].tolist()[1:])
                y = y.permute(0, 3, 1, 2) if y.ndim == 4 else y
            elif kind == "LOGISTIC":
                y = torch.sigmoid(values[op.inputs[0]])
            else:  # pragma: no cover - read_tflite refuses other kinds
                raise NotImplementedError(kind)
            values[op.outputs[0]] = y
        return {t: values[t] for t in self.output_ids}
