"""Run a converted TFLite graph (:mod:`mega.backbones.tflite_graph`) as a PyTorch module.

:class:`TFLiteNet` turns each convolution of the graph into a small module with named parameters
(``conv07.weight``, ``dwconv12.bias``: the k-th CONV_2D / DEPTHWISE_CONV_2D of the file in its
operator order), so a state dict, ``requires_grad`` and optimisers work as on any network. It keeps
only the operators needed for the outputs it is asked for (the BlazePose encoder alone skips the
256 x 256 segmentation decoder), computes in NCHW, and folds every explicit ``PAD`` that feeds a single
``VALID`` convolution into that convolution's padding when it is symmetric.

Two ways to run it, same operators: when nothing needs a gradient (eval under ``no_grad`` /
``inference_mode``, or a frozen trunk on an input without grad), the fused oneDNN plan of
:mod:`mega.backbones.tflite_plan` (channels-last, bias + activation + residual add inside each kernel,
prepacked weights); otherwise the reference path below, plain autograd-able PyTorch ops (``forward(x,
fused=False)`` forces it).

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
from mega.backbones.tflite_plan import FusedPlan, fused_path_available, run_over_threads

#: Images per pass: a large batch runs in chunks of this many. Bigger chunks make the 128 x 128 x 64
#: maps outgrow the allocator's reuse (fresh pages, page faults: at 1 thread, chunks of 8 cost 14 ms
#: per image against 9.7 ms for chunks of 4; chunks of 1 or 2 lose cache reuse of the weights).
CHUNK = 4


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
        # the strides autograd gives the gradient of a channels-last convolution: channels-last for k x k
        # kernels, row-major for 1 x 1 (a permuted 1 x 1 kernel counts as contiguous in both formats but keeps
        # the file's strides, which DDP's buckets and the gradients would disagree on)
        layout = torch.channels_last if weight.shape[-1] * weight.shape[-2] > 1 else torch.contiguous_format
        self.weight = nn.Parameter(weight.clone(memory_format=layout))
        self.bias = nn.Parameter(bias.contiguous())
        self.stride, self.dilation, self.groups, self.activation = stride, dilation, groups, activation
        self.padding = padding

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding for a (height, width) input."""
        if self.padding == "same":
            kh, kw = self.weight.shape[-2:]
            top, bottom = same_padding(height, kh, self.stride[0], self.dilation[0])
            left, right = same_padding(width, kw, self.stride[1], self.dilation[1])
            return top, bottom, left, right
        if self.padding == "valid":
            return (0, 0, 0, 0)
        return self.padding

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
        top, bottom, left, right = self.pads(x.shape[-2], x.shape[-1])
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
        self._plans: dict[tuple, FusedPlan] = {}  # per (start, stop) part, built at its first fused call
        self._parts: dict[
            tuple, tuple[list, int, list[int]]
        ] = {}  # per (start, stop): program, input, outputs

    def __getstate__(self) -> dict:
        """Copies and pickles leave the plans (they hold oneDNN-packed weights) to be rebuilt."""
        return {**self.__dict__, "_plans": {}}

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

    def forward(
        self, x: torch.Tensor, fused: bool | None = None, part: tuple[int | None, int | None] = (None, None)
    ) -> dict[int, torch.Tensor]:
        """x (B, C, H, W) -> {tensor id: (B, ...)} for the requested outputs.

        ``fused`` (default: whenever nothing needs a gradient and the input is float32) runs the oneDNN
        plan of :mod:`mega.backbones.tflite_plan` (a batch over several intra-op threads: images split
        over worker threads); False runs the reference operators below. ``part = (start, stop)`` runs
        one side of a cut (:meth:`cut_before`): ``(None, t)`` returns ``{t: ...}`` computed from the
        network's input, ``(t, None)`` the outputs computed from x = tensor t.
        """
        if fused is None:
            fused = self.can_fuse(x)
        program, input_id, output_ids = self._part(*part)
        if fused and part not in self._plans:
            self._plans[part] = FusedPlan(program, self.convs, self.alias, input_id, output_ids,
                                          set(self.constants), self.run_op)  # fmt: skip
        threads = torch.get_num_threads()
        if fused and threads > 1 and x.shape[0] > 1:
            return run_over_threads(self._plans[part], x, threads, CHUNK)
        if x.shape[0] > CHUNK:
            parts = [self(x[i : i + CHUNK], fused, part) for i in range(0, x.shape[0], CHUNK)]
            return {t: torch.cat([p[t] for p in parts]) for t in output_ids}
        if fused:
            return self._plans[part](x)
        values: dict[int, torch.Tensor] = {input_id: x.contiguous(memory_format=torch.channels_last)}
        for kind, op, key in program:
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                y = self.convs[key](values[self.alias.get(op.inputs[0], op.inputs[0])])
            else:
                y = self.run_op(kind, op, [values[t] for t in op.inputs if t not in self.constants])
            values[op.outputs[0]] = y
        return {t: values[t] for t in output_ids}

    def _sources(self, op: TFLiteOp) -> list[int]:
        """The run-time tensors an operator reads (a folded PAD's reader reads the PAD's input)."""
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return [self.alias.get(op.inputs[0], op.inputs[0])]
        return [t for t in op.inputs if t >= 0 and t not in self.constants]

    def _part(self, start: int | None, stop: int | None) -> tuple[list, int, list[int]]:
        """(program, input id, output ids) of one side of a cut; (None, None) is the whole network."""
        if start is None and stop is None:
            return self.program, self.input_id, self.output_ids
        if (start, stop) not in self._parts:  # once per part: a training step asks for it every time
            made = [self.input_id] + [op.outputs[0] for _, op, _ in self.program]  # made[i + 1]: op i's
            self._parts[start, stop] = (
                (self.program[: made.index(stop)], self.input_id, [stop])
                if stop is not None
                else (self.program[made.index(start) :], start, self.output_ids)
            )
        return self._parts[start, stop]

    def cut_before(self, key: str) -> int:
        """The last tensor before convolution ``key`` that separates the network in two: every operator
        after it and every output reads only it or tensors computed after it (the input id if none).

        What a partly trainable network caches: the frozen side up to this tensor runs once per crop,
        ``forward(cut, part=(cut, None))`` runs the rest (tests/test_blazepose_tuning.py)."""
        made = {self.input_id: -1} | {op.outputs[0]: i for i, (_, op, _) in enumerate(self.program)}
        first = next(i for i, (_, _, k) in enumerate(self.program) if k == key)
        # earliest[i]: the oldest producer read by operator i or later (outputs count as read at the end)
        earliest = [min((made[t] for t in self.output_ids), default=len(self.program))] * (
            len(self.program) + 1
        )
        for i in range(len(self.program) - 1, -1, -1):
            reads = [made[t] for t in self._sources(self.program[i][1])]
            earliest[i] = min([earliest[i + 1], *reads])
        for j in range(first - 1, -1, -1):
            if earliest[j + 1] >= j:
                return self.program[j][1].outputs[0]
        return self.input_id

    def can_fuse(self, x: torch.Tensor) -> bool:
        """Whether the fused plan applies: float32 CPU tensors, oneDNN present, no gradient needed."""
        if not (x.dtype == torch.float32 and x.device.type == "cpu" and fused_path_available()):
            return False
        first = next(iter(self.convs.values())).weight  # a cast module (.double(), .to()) casts them all
        if first.dtype != torch.float32 or first.device.type != "cpu":
            return False
        if not torch.is_grad_enabled():
            return True
        return not x.requires_grad and not any(p.requires_grad for p in self.parameters())

    def run_op(self, kind: str, op: TFLiteOp, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """One non-convolution operator on its tensor inputs (constants come from the file)."""
        v = inputs[0]
        if kind == "ADD":
            return _activate(v + inputs[1], op.options["activation"])
        if kind == "PAD":
            p = self.constants[op.inputs[1]].tolist()
            return F.pad(v, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
        if kind == "RESIZE_BILINEAR":
            size = tuple(self.constants[op.inputs[1]].tolist())
            return F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        if kind == "MAX_POOL_2D":
            o = op.options
            if o["padding"] == "same":
                (t, b), (lft, r) = (
                    same_padding(v.shape[2 + a], o["kernel"][a], o["stride"][a]) for a in (0, 1)
                )
                v = F.pad(v, (lft, r, t, b), value=float("-inf"))
            return _activate(F.max_pool2d(v, o["kernel"], o["stride"]), o["activation"])
        if kind == "RESHAPE":
            v = v.permute(0, 2, 3, 1) if v.ndim == 4 else v
            y = v.reshape(v.shape[0], *self.constants[op.inputs[1]].tolist()[1:])
            return y.permute(0, 3, 1, 2) if y.ndim == 4 else y
        if kind == "LOGISTIC":
            return torch.sigmoid(v)
        raise NotImplementedError(kind)  # pragma: no cover - read_tflite refuses other kinds
