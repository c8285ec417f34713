"""The inference fast path of :class:`mega.backbones.tflite_net.TFLiteNet`: oneDNN fused convolutions.

:class:`FusedPlan` runs the module's program (same operators, same order of arithmetic within each
convolution up to the kernel's summation order) when no gradient is needed, with the kind of kernels
the TFLite runtimes use on a CPU:

- every CONV_2D / DEPTHWISE_CONV_2D is one oneDNN convolution (``torch.ops.mkldnn._convolution_pointwise``)
  on channels-last tensors, its weights reordered once into oneDNN's blocked layout, its bias and fused
  activation (ReLU, ReLU6, ReLU-1..1) applied inside the kernel;
- a convolution whose only reader is an ADD (the residual sum of every inverted-bottleneck block) runs
  at the ADD's place as one kernel, conv + add (+ the ADD's activation), written in place into the skip
  tensor when nothing reads it later;
- every intermediate is released right after its last reader, so the allocator reuses warm memory;
- small maps take kernels with less fixed cost (:data:`MM_PIXELS`), and a batch at several threads runs
  whole images per worker thread (:func:`run_over_threads`).

The reordered weights follow the module's parameters: each convolution re-packs when a weight's data or
version changes (an optimiser step, ``load_state_dict``). tests/test_blazepose.py checks this path
against the reference one and against LiteRT.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from mega.backbones.tflite_graph import TFLiteOp

#: fused activation -> oneDNN post-op (name, scalars)
POST_OPS: dict[str, tuple[str, list[float]]] = {
    "none": ("none", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
    "relu_n1_to_1": ("hardtanh", [-1.0, 1.0]),
}
CONV_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")
#: Kernel choice per convolution and input size (per image, never per batch: the kernel, hence the
#: rounding, of a map must not depend on the batch; tests/test_feature_cache.py). oneDNN's fixed
#: cost per call (~25 us on this CPU, more with cold caches) dominates on small maps, where these win:
#: - a 1 x 1 convolution on at most MM_PIXELS pixels: one MKL matrix product over the channels-last view;
#: - a depthwise convolution with (output pixels x input pixels) <= DENSE_PAIRS: a dense per-channel
#:   spatial matrix (4 x 4 maps: 16 us against 30 us);
#: - a convolution whose kernel covers its unpadded input (the 2 x 2 regression heads): a linear layer.
MM_PIXELS = 256
DENSE_PAIRS = 256


try:  # the overloads themselves (an OpOverloadPacket call would first pick among them)
    _CONV = torch.ops.mkldnn._convolution_pointwise.default
    _CONV_ADD = torch.ops.mkldnn._convolution_pointwise.binary
    _CONV_ADD_INPLACE = torch.ops.mkldnn._convolution_pointwise_.binary
except (AttributeError, RuntimeError):  # a PyTorch build without oneDNN: the reference path only
    _CONV = _CONV_ADD = _CONV_ADD_INPLACE = None


def fused_path_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused convolution operators."""
    return _CONV is not None and torch.backends.mkldnn.is_available()


def _pointwise_conv_flops(*args, out_shape=None, **kwargs) -> int:
    """FLOPs (multiply-add = 2) of a ``mkldnn._convolution_pointwise`` call, for FlopCounterMode (which
    hands over shapes): the weight is the first argument after the input(s) with 4 dimensions."""
    shapes = [a for a in args if isinstance(a, (tuple, list, torch.Size)) and len(a) == 4]
    weight = shapes[-1]  # (O, I / groups, kh, kw), after the input and, for a sum, the other tensor
    return 2 * math.prod(out_shape) * weight[1] * weight[2] * weight[3]


#: ``FlopCounterMode(custom_mapping=FLOP_FORMULAS)`` counts the fused path's oneDNN convolutions (the
#: dense tiny depthwise kernels are elementwise products and are not counted).
FLOP_FORMULAS = {
    op._overloadpacket: _pointwise_conv_flops for op in (_CONV, _CONV_ADD_INPLACE) if op is not None
}


class PackedConv:
    """One convolution at inference, reading a :class:`~mega.backbones.tflite_net.TFLiteConv`'s weights.

    Per input size it picks a kernel (see :data:`MM_PIXELS`): ``onednn`` (weights reordered to oneDNN's
    blocked layout; bias, activation and a residual sum inside the kernel), ``matmul``, ``dense`` or
    ``linear``. Prepared weights are rebuilt whenever a parameter's data or version changes.

    Args:
        conv: the module.
        activation: the activation after the convolution (after the sum when called with ``add``).
    """

    def __init__(self, conv, activation: str) -> None:
        self.conv, (self.attr, self.scalars) = conv, POST_OPS[activation]
        self.params = conv._parameters  # weight / bias, read at each call without nn.Module.__getattr__
        self.stride, self.dilation, self.groups = list(conv.stride), list(conv.dilation), conv.groups
        o, i, kh, kw = conv.weight.shape
        self.kernel = (kh, kw)
        self.pointwise = (kh, kw) == (1, 1) and conv.groups == 1 and self.stride == [1, 1]
        self.depthwise = i == 1 and conv.groups == o and conv.groups > 1  # multiplier 1
        self._modes: dict[tuple[int, int], tuple] = {}
        self._prepared: dict[tuple, tuple] = {}

    def _mode(self, h: int, w: int) -> tuple:
        """(mode, oneDNN padding, explicit F.pad or None, output (H', W')) for an (h, w) input."""
        if (h, w) not in self._modes:
            top, bottom, left, right = self.conv.pads(h, w)
            (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
            out = (
                (h + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                (w + left + right - dw * (kw - 1) - 1) // sw + 1,
            )
            if self.pointwise and (top, bottom, left, right) == (0, 0, 0, 0) and h * w <= MM_PIXELS:
                mode = "matmul"
            elif self.groups == 1 and (top, bottom, left, right) == (0, 0, 0, 0) and (kh, kw) == (h, w):
                mode = "linear"
            elif self.depthwise and out[0] * out[1] * h * w <= DENSE_PAIRS:
                mode = "dense"
            else:
                mode = "onednn"
            symmetric = top == bottom and left == right
            pad = [top, left] if symmetric else [0, 0]
            self._modes[(h, w)] = (mode, pad, None if symmetric else (left, right, top, bottom), out)
        return self._modes[(h, w)]

    def _weights(self, mode: str, h: int, w: int, pad: list[int], shape: torch.Size) -> tuple:
        """The mode's prepared (weight, bias), rebuilt when a parameter changed."""
        wt, b = self.params["weight"], self.params["bias"]
        key = (wt.data_ptr(), wt._version, b.data_ptr(), b._version)
        slot = (mode, h, w) if mode == "dense" else (mode,)
        cached = self._prepared.get(slot)
        if cached is None or cached[0] != key:
            wt = wt.detach()
            if mode == "onednn":
                packed = torch.ops.mkldnn._reorder_convolution_weight(
                    wt, pad, self.stride, self.dilation, self.groups, list(shape)
                )
            elif mode == "matmul":
                packed = wt[:, :, 0, 0].t().contiguous()
            elif mode == "linear":
                packed = wt.permute(0, 2, 3, 1).reshape(wt.shape[0], -1).t().contiguous()
            else:
                packed = self._dense_matrix(wt, h, w)
            cached = self._prepared[slot] = (key, packed, b.detach().contiguous())
        return cached[1], cached[2]

    def _dense_matrix(self, wt: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(P, Q, C): output pixel p = sum over input pixels q of M[p, q] * x[q], per channel."""
        top, _, left, _ = self.conv.pads(h, w)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        oh, ow = self._modes[(h, w)][3]
        m = wt.new_zeros(oh * ow, h * w, wt.shape[0])
        for p in range(oh * ow):
            for ki in range(kh):
                for kj in range(kw):
                    r, c = (p // ow) * sh - top + ki * dh, (p % ow) * sw - left + kj * dw
                    if 0 <= r < h and 0 <= c < w:
                        m[p, r * w + c] += wt[:, 0, ki, kj]
        return m

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.attr == "relu":
            return y.relu_()
        if self.attr == "hardtanh":
            return y.clamp_(*self.scalars)
        return y

    def __call__(
        self, x: torch.Tensor, other: torch.Tensor | None = None, inplace: bool = False
    ) -> torch.Tensor:
        """(B, I, H, W) channels-last -> activation(conv(x) [+ other]) (B, O, H', W') channels-last;
        with ``inplace`` the oneDNN kernel writes the result into ``other``."""
        n, _, h, w = x.shape
        mode, pad, explicit, (oh, ow) = self._modes.get((h, w)) or self._mode(h, w)
        if mode == "onednn":
            if explicit is not None:
                x = F.pad(x, explicit)
            wt, b = self._weights(mode, h, w, pad, x.shape)
            args = (wt, b, pad, self.stride, self.dilation, self.groups)
            if other is None:
                return _CONV(x, *args, self.attr, self.scalars, "")
            # oneDNN's sum post-op takes only ReLU after it; other activations follow as one clamp
            relu = "relu" if self.attr == "relu" else None
            if inplace:
                y = _CONV_ADD_INPLACE(other, x, *args, "add", None, relu, [], "")
            else:
                y = _CONV_ADD(x, other, *args, "add", None, relu, [], "")
            return y.clamp_(*self.scalars) if self.attr == "hardtanh" else y
        wt, b = self._weights(mode, h, w, pad, x.shape)
        nhwc = x.permute(0, 2, 3, 1)
        if mode == "matmul":
            y = torch.addmm(b, nhwc.reshape(n * h * w, -1), wt)
        elif mode == "linear":
            y = torch.addmm(b, nhwc.reshape(n, -1), wt)
        else:
            y = (nhwc.reshape(n, 1, h * w, -1) * wt).sum(2).add_(b)
        y = y.view(n, oh, ow, -1)
        if other is not None:
            y.add_(other.permute(0, 2, 3, 1))
        return self._activate(y).permute(0, 3, 1, 2)


class FusedPlan:
    """A TFLiteNet's program as fused steps: ``plan(x (B, C, H, W)) -> {tensor id: tensor}`` (no autograd).

    Args:
        program: ``net.program``, (kind, op, conv key) in execution order.
        convs: ``net.convs``; alias: ``net.alias`` (folded PAD output -> its input).
        input_id, output_ids: the graph tensors read and returned; constants: ids that are not tensors
            of the run (PAD / RESIZE / RESHAPE arguments, read by ``run_op`` itself).
        run_op: ``run_op(kind, op, inputs)``, the reference implementation of the other operators.
    """

    def __init__(
        self,
        program: Sequence[tuple[str, TFLiteOp, str]],
        convs,
        alias: dict[int, int],
        input_id: int,
        output_ids: Sequence[int],
        constants: set[int],
        run_op: Callable,
    ) -> None:
        self.input_id, self.output_ids = input_id, list(output_ids)
        keep = {input_id, *output_ids}

        def source(op: TFLiteOp) -> list[int]:
            return [alias.get(t, t) for t in op.inputs if t not in constants]

        readers: dict[int, list[int]] = {}
        for i, (_, op, _) in enumerate(program):
            for t in source(op):
                readers.setdefault(t, []).append(i)
        producer = {op.outputs[0]: i for i, (_, op, _) in enumerate(program)}

        def absorbable(t: int, i: int) -> bool:
            """Tensor t is an activation-free convolution's result that only the ADD at step i reads."""
            j = producer.get(t)
            if j is None or program[j][0] not in CONV_KINDS or t in keep:
                return False
            return program[j][1].options["activation"] == "none" and readers.get(t) == [i]

        fused: dict[int, int] = {}  # ADD step -> the convolution step it absorbs
        for i, (kind, op, _) in enumerate(program):
            if kind == "ADD" and op.inputs[0] != op.inputs[1]:
                t = next((t for t in op.inputs if absorbable(t, i)), None)
                if t is not None:
                    fused[i] = producer[t]
        self.steps: list[tuple[Callable, list[int], int]] = []
        for i, (kind, op, key) in enumerate(program):
            if i in fused.values():
                continue
            if kind in CONV_KINDS:
                conv = PackedConv(convs[key], op.options["activation"])
                self.steps.append((conv, source(op)[:1], op.outputs[0]))
            elif i in fused:
                _, conv_op, conv_key = program[fused[i]]
                x = source(conv_op)[0]
                other = op.inputs[1] if op.inputs[0] == conv_op.outputs[0] else op.inputs[0]
                # in place only into a fresh kernel result that nothing reads later (never the conv's input)
                fresh = other in producer and program[producer[other]][0] in (*CONV_KINDS, "ADD")
                inplace = fresh and readers[other][-1] == i and other not in keep and other != x
                conv = PackedConv(convs[conv_key], op.options["activation"])
                self.steps.append((_conv_add(conv, inplace), [x, other], op.outputs[0]))
            else:
                self.steps.append((_reference(run_op, kind, op), source(op), op.outputs[0]))
        last: dict[int, int] = {}
        for s, (_, ins, _) in enumerate(self.steps):
            for t in ins:
                last[t] = s
        #: per step, the tensors to drop after it (their last reader)
        self.release = [
            sorted({t for t in ins if last[t] == s and t not in keep})
            for s, (_, ins, _) in enumerate(self.steps)
        ]

    def __call__(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """x (B, C, H, W) -> {tensor id: (B, ...)}, as the reference forward (4-D maps channels-last)."""
        values = {self.input_id: x.contiguous(memory_format=torch.channels_last)}
        for (fn, ins, out), free in zip(self.steps, self.release, strict=True):
            values[out] = fn(*[values[t] for t in ins])
            for t in free:
                del values[t]
        return {t: values[t] for t in self.output_ids}


def _conv_add(packed: PackedConv, inplace: bool) -> Callable:
    return lambda x, other: packed(x, other, inplace)


def _reference(run_op: Callable, kind: str, op: TFLiteOp) -> Callable:
    return lambda *xs: run_op(kind, op, xs)


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, workers, pool)


def _workers(n: int) -> ThreadPoolExecutor:
    """A pool of n threads for this process (a forked child gets its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != n:
        _pool = (os.getpid(), n, ThreadPoolExecutor(n, thread_name_prefix="tflite-plan"))
    return _pool[2]


def run_over_threads(plan: FusedPlan, x: torch.Tensor, threads: int, chunk: int) -> dict[int, torch.Tensor]:
    """The plan on x (B, C, H, W), images split over ``threads`` worker threads instead of intra-op threads.

    Each worker runs whole chunks (at most ``chunk`` images) on one thread and takes the next chunk when
    done, so there is no barrier per operator: with OpenMP's per-operator teams, one descheduled thread
    on a busy machine stalls every kernel (measured at 2 threads on 2 loaded cores: 249 ms per image
    against 29 ms split over threads). PyTorch's thread count is global: it is 1 while the workers run
    and ``threads`` again on return.
    """
    size = max(1, min(chunk, -(-x.shape[0] // threads)))

    def run(part: torch.Tensor) -> dict[int, torch.Tensor]:
        torch.set_num_threads(1)  # this worker's OpenMP / MKL teams (oneDNN reads them per thread)
        return plan(part)

    torch.set_num_threads(1)
    try:
        parts = list(_workers(threads).map(run, x.split(size)))
    finally:
        torch.set_num_threads(threads)
    return {t: torch.cat([p[t] for p in parts]) for t in plan.output_ids}
