"""A faster inference-only UNeXt with the same function: :func:`optimize_for_inference`.

What it changes, all exact up to float rounding (the outputs match ``net.eval()`` to about 1e-6):

- every BatchNorm is folded into the convolution before it (inference statistics);
- the network runs in channels-last memory (``torch.channels_last``), where oneDNN's convolutions, pooling and bilinear
  upsampling are several times faster on CPU than in channel-first memory, and where the channel LayerNorms are plain
  ``layer_norm`` calls on a permuted view (no copies);
- ``relu(max_pool(y))`` is computed as ``max_pool(relu(y))`` (equal: the maximum is monotone), so the ReLU is fused
  into the convolution (oneDNN post-op), and the 2x max-pool is two element-wise maxima of strided views
  (:func:`~unext_monai.networks.blocks.unext_blocks.max_pool_pairs`);
- 3x3 convolutions call oneDNN directly (PyTorch's dispatcher picks a slower im2col kernel for small maps), in eager
  mode with the weights reordered once into oneDNN's blocked layout rather than at every call; the token-wise linear
  layers run as ``F.linear`` on the channels-last view;
- the shifted MLP's zero-filled shift of channel groups is a depthwise convolution whose kernel is one-hot
  (:func:`~unext_monai.networks.blocks.shifted_mlp.axial_shift_kernel`): exact, one kernel instead of
  pad/split/cat copies, and one ONNX node instead of a dozen;
- traced, exported (ONNX) or compiled (``torch.compile``), it uses standard ops instead of the direct oneDNN calls,
  ONNX Runtime's MaxPool, and for the logits a MatMul (ONNX Runtime would pad a 1x1 convolution with few output
  channels to 16 in its blocked layout).

The result is an ordinary ``nn.Module`` in eval mode: it can be scripted, frozen (``torch.jit.freeze``) and saved,
traced, and exported to ONNX (``unext_monai.networks.export.export_onnx``); training keeps using :class:`UNeXt`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from unext_monai.networks.blocks.shifted_mlp import ChannelLayerNorm, ShiftedMLPBlock, axial_shift_kernel
from unext_monai.networks.blocks.unext_blocks import ConvDown, ConvUp, TokenizedDown, TokenizedUp, max_pool_pairs
from unext_monai.networks.nets.unext import UNeXt

__all__ = ["optimize_for_inference", "FastUNeXt", "fold_batch_norm"]


def _standard_ops() -> bool:
    """True while the module is traced (``torch.jit.trace``, ``torch.onnx.export``) or captured by ``torch.compile``:
    use standard ATen ops that tracers, exporters and compilers handle (TorchScript runs the oneDNN path)."""
    if not torch.jit.is_scripting():
        return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    return False


def _onnx_exporting() -> bool:
    if not torch.jit.is_scripting():
        return torch.onnx.is_in_onnx_export()
    return False


def _to_channels_last(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous()


def _channels_last_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C), a view when ``x`` is channels-last."""
    n = x.dim()
    return x.permute([0] + list(range(2, n)) + [1])


def _channels_first_view(x: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, C, *S), a view."""
    n = x.dim()
    return x.permute([0, n - 1] + list(range(1, n - 1)))


def fold_batch_norm(conv: nn.Module, norm: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a convolution computing ``norm(conv(x))``, with ``norm`` a BatchNorm in eval mode (its
    running statistics), or None / ``nn.Identity`` for the convolution alone.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``,
    computed in float64 and rounded once to the convolution's dtype.

    Returns:
        (weight of the shape of ``conv.weight``, bias of shape (out_channels,)), detached.
    """
    weight = conv.weight.detach().double()
    out_channels = weight.shape[0]
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(out_channels)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.running_mean is None or norm.running_var is None:
            raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False).")
        gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(bias)
        beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(bias)
        scale = gamma / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = weight * scale.view([-1] + [1] * (weight.dim() - 1))
        bias = (bias - norm.running_mean.double()) * scale + beta
    elif norm is not None and not isinstance(norm, nn.Identity):
        raise TypeError(f"cannot fold {type(norm).__name__} into a convolution.")
    dtype = conv.weight.dtype
    return weight.to(dtype), bias.to(dtype)


class _Conv(nn.Module):
    """A convolution with fixed weights (BatchNorm folded), optionally followed by ReLU, on channels-last maps.

    On CPU float32 2D maps it calls oneDNN directly with the ReLU as a post-op (in eager mode with the weight
    reordered once into oneDNN's blocked layout, instead of at every call); 1x1 convolutions run as ``F.linear`` on
    the channels-last view; otherwise (ONNX export, ``torch.compile``, 3D, other devices) ``F.conv2d``/``F.conv3d``.
    (B, C_in, *S) -> (B, C_out, *S') channels-last.
    """

    __jit_ignored_attributes__ = ["_packed"]

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = weight.dim() - 2
        self.register_buffer("weight", _to_channels_last(weight.detach().clone()))
        self.register_buffer("bias", bias.detach().clone())
        self.stride = [int(s) for s in stride]
        self.padding = [int(p) for p in padding]
        self.dilation = [int(d) for d in dilation]
        self.groups = int(groups)
        self.relu = relu
        self.attr = "relu" if relu else "none"
        # 1x1 convolutions as F.linear on the channels-last view: faster than oneDNN's for the MLP widths, slower
        # for 2 to 15 output channels (the logits of a few classes), which stay oneDNN convolutions
        out_channels = weight.shape[0]
        self.pointwise = (
            all(k == 1 for k in weight.shape[2:]) and all(s == 1 for s in self.stride) and self.groups == 1
            and all(p == 0 for p in self.padding) and (out_channels == 1 or out_channels >= 16)
        )
        self.onednn = self.spatial_dims == 2 and torch.backends.mkldnn.is_available()
        self._packed: tuple[torch.Tensor, int] | None = None  # (oneDNN-layout weight, version of the dense one)

    def _apply(self, fn, recurse=True):  # moving or casting the module drops the packed weight
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:  # deepcopy/pickle: oneDNN tensors have no storage; repack on first use
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    @torch.jit.unused
    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None or self._packed[1] != self.weight._version:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
            self._packed = (packed, self.weight._version)
        return self._packed[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _standard_ops() and x.device.type == "cpu" and x.dtype == torch.float32:
            if self.pointwise:
                y = _channels_first_view(F.linear(_channels_last_view(x), self.weight.flatten(1), self.bias))
                return F.relu(y) if self.relu else y
            if self.onednn:
                weight = self.weight
                if not torch.jit.is_scripting():
                    weight = self._packed_weight(x)
                # any input memory format (a channel-first image goes in as is); channels-last output
                return torch.ops.mkldnn._convolution_pointwise(
                    x, weight, self.bias, self.padding, self.stride, self.dilation, self.groups, self.attr, [], ""
                )
        if self.spatial_dims == 2:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        else:
            y = F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.relu(y) if self.relu else y


def _folded(conv: nn.Module, norm: nn.Module | None = None, relu: bool = False) -> _Conv:
    weight, bias = fold_batch_norm(conv, norm)
    return _Conv(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, relu)


def _max_pool2x(x: torch.Tensor) -> torch.Tensor:
    """2x max-pool with stride 2: (B, C, *S) -> (B, C, *S/2), channels-last."""
    if _standard_ops():  # ONNX Runtime's MaxPool is the faster there
        return F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool3d(x, 2)
    return max_pool_pairs(x)


def _upsample2x_relu(x: torch.Tensor, mode: str) -> torch.Tensor:
    return F.relu(F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False), inplace=True)


class _FastConvDown(nn.Module):
    """conv (BatchNorm folded) with ReLU -> 2x max-pool: (B, C_in, *S) -> (B, C_out, *S/2)."""

    def __init__(self, stage: ConvDown) -> None:
        super().__init__()
        self.conv = _folded(stage.conv, stage.norm, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _max_pool2x(self.conv(x))


class _FastConvUp(nn.Module):
    """conv (BatchNorm folded) -> 2x (bi/tri)linear upsampling -> ReLU: (B, C_in, *S) -> (B, C_out, *2S)."""

    def __init__(self, stage: ConvUp) -> None:
        super().__init__()
        self.conv = _folded(stage.conv, stage.norm)
        self.mode = stage.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample2x_relu(self.conv(x), self.mode)


def _shift(channels: int, shift_size: int, axes: list[int], spatial_dims: int, like: torch.Tensor) -> _Conv:
    """The zero-filled axial shifts of channel groups along ``axes`` as an exact one-hot depthwise convolution
    (dtype and device of ``like``)."""
    kernel = axial_shift_kernel(channels, shift_size, axes, spatial_dims).to(like)
    padding = [shift_size // 2 if a in axes else 0 for a in range(spatial_dims)]
    return _Conv(kernel, like.new_zeros(channels), [1] * spatial_dims, padding, [1] * spatial_dims, channels)


class _FastShiftedBlock(nn.Module):
    """``x + fc2(shift_last(GELU(dwconv(fc1(shift_first(LayerNorm(x)))))))`` on a channels-last map."""

    def __init__(self, block: ShiftedMLPBlock, spatial_dims: int) -> None:
        super().__init__()
        mlp = block.mlp
        self.norm = _copy_layer_norm(block.norm)
        like = mlp.fc1.weight.detach()
        self.shift_first = _shift(mlp.fc1.in_channels, mlp.shift_size, mlp.first_axes, spatial_dims, like)
        self.fc1 = _folded(mlp.fc1)
        self.dwconv = _folded(mlp.dwconv)
        self.shift_last = _shift(mlp.fc2.in_channels, mlp.shift_size, [mlp.last_axis], spatial_dims, like)
        self.fc2 = _folded(mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shift_first(self.norm(x))
        h = F.gelu(self.dwconv(self.fc1(h)))
        return x + self.fc2(self.shift_last(h))


def _copy_layer_norm(norm: ChannelLayerNorm) -> ChannelLayerNorm:
    """A detached copy; on a channels-last map its permutations are views, so it runs without copies."""
    return copy.deepcopy(norm).requires_grad_(False)


class _FastTokenizedDown(nn.Module):
    """patch embedding (3x3 conv, stride 2) -> LayerNorm -> shifted-MLP block -> LayerNorm."""

    def __init__(self, stage: TokenizedDown, spatial_dims: int) -> None:
        super().__init__()
        self.patch_embed = _folded(stage.patch_embed)
        self.embed_norm = _copy_layer_norm(stage.embed_norm)
        self.block = _FastShiftedBlock(stage.block, spatial_dims)
        self.norm = _copy_layer_norm(stage.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.embed_norm(self.patch_embed(x))))


class _FastTokenizedUp(nn.Module):
    """conv (BatchNorm folded) -> upsample -> ReLU -> + skip -> shifted-MLP block -> LayerNorm."""

    def __init__(self, stage: TokenizedUp, spatial_dims: int) -> None:
        super().__init__()
        self.conv_up = _FastConvUp(stage.conv_up)
        self.block = _FastShiftedBlock(stage.block, spatial_dims)
        self.norm = _copy_layer_norm(stage.norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.conv_up(x) + skip))


class _FastHead(nn.Module):
    """The last stage and the logits: conv -> 2x upsampling -> ReLU -> 1x1 conv: (B, C, *S) -> (B, out_channels, *2S).

    In ONNX export the 1x1 convolution is a MatMul over the flattened map: ONNX Runtime would run it as a blocked
    (NCHWc) convolution padding the few output channels to 16.
    """

    def __init__(self, stage: ConvUp, final_conv: nn.Module) -> None:
        super().__init__()
        self.up = _FastConvUp(stage)
        self.final_conv = _folded(final_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(x)
        if _onnx_exporting():
            weight = self.final_conv.weight.flatten(1)  # (O, C)
            logits = torch.matmul(weight, y.flatten(2)) + self.final_conv.bias.view(-1, 1)  # (B, O, N)
            return logits.view([y.shape[0], weight.shape[0]] + list(y.shape[2:]))
        return self.final_conv(y)


class FastUNeXt(nn.Module):
    """The function of a trained :class:`UNeXt` in eval mode, computed faster on CPU (see the module docstring).

    Build it with :func:`optimize_for_inference`. Input (B, in_channels, *spatial) in any memory format and any size;
    output: the logits (B, out_channels, *spatial), the same values as ``net.eval()(x)`` up to float rounding, in
    channels-last memory (``.contiguous()`` gives channel-first memory). Deep-supervision heads are not kept (in eval
    mode UNeXt returns the full-resolution logits only). Its weights are buffers: it is not meant for training.
    """

    def __init__(self, net: UNeXt) -> None:
        super().__init__()
        sd = net.spatial_dims
        self.spatial_dims = sd
        self.in_channels = net.in_channels
        self.out_channels = net.out_channels
        self.features = net.features
        self.divisor = net.divisor
        self.down_1 = _FastConvDown(net.down_1)
        self.down_2 = _FastConvDown(net.down_2)
        self.down_3 = _FastConvDown(net.down_3)
        self.down_4 = _FastTokenizedDown(net.down_4, sd)
        self.down_5 = _FastTokenizedDown(net.down_5, sd)
        self.up_4 = _FastTokenizedUp(net.up_4, sd)
        self.up_3 = _FastTokenizedUp(net.up_3, sd)
        self.up_2 = _FastConvUp(net.up_2)
        self.up_1 = _FastConvUp(net.up_1)
        self.head = _FastHead(net.up_0, net.final_conv)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *spatial) -> logits (B, out_channels, *spatial)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            expected = "(B, " + str(self.in_channels) + ", " + ", ".join(["*"] * self.spatial_dims) + ")"
            raise ValueError("UNeXt expects an input of shape " + expected + ", got " + str(list(x.shape)) + ".")
        size = x.shape[2:]
        pad: list[int] = []
        padded = False
        for s in size:
            extra = (self.divisor - s % self.divisor) % self.divisor
            pad = [0, extra] + pad
            padded = padded or extra > 0
        if padded or _standard_ops():  # exported graphs pad whatever the size
            x = F.pad(x, pad)
        t1 = self.down_1(x)
        t2 = self.down_2(t1)
        t3 = self.down_3(t2)
        t4 = self.down_4(t3)
        out = self.down_5(t4)
        u4 = self.up_4(out, t4)
        u3 = self.up_3(u4, t3)
        u2 = self.up_2(u3) + t2
        u1 = self.up_1(u2) + t1
        logits = self.head(u1)
        for i, s in enumerate(size):
            logits = logits.narrow(2 + i, 0, s)
        return logits


def optimize_for_inference(net: UNeXt) -> FastUNeXt:
    """A new eval-mode :class:`FastUNeXt` computing ``net.eval()``'s function faster; ``net`` is left untouched.

    Example::

        fast = optimize_for_inference(net)
        with torch.inference_mode():
            logits = fast(image)  # (B, out_channels, H, W), as net.eval()(image)
        frozen = torch.jit.freeze(torch.jit.script(fast))  # for TorchScript deployment
    """
    if not isinstance(net, UNeXt):
        raise TypeError(f"optimize_for_inference expects a UNeXt, got {type(net).__name__}.")
    return FastUNeXt(net)
