"""UNeXt (Valanarasu & Patel, MICCAI 2022) as a MONAI network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...networks.blocks.shifted_mlp import pointwise_conv
from ...networks.blocks.unext_blocks import ConvDown, ConvUp, LayerSpec, TokenizedDown, TokenizedUp

__all__ = ["UNeXt", "UNEXT_FEATURES", "UNEXT_S_FEATURES"]

#: widths of the paper's UNeXt (1,471,921 parameters with 3 input channels and 1 output channel)
UNEXT_FEATURES = (16, 32, 128, 160, 256)
#: widths of the reference's UNeXt-S (253,561 parameters with 3 input channels and 1 output channel)
UNEXT_S_FEATURES = (8, 16, 32, 64, 128)


class UNeXt(nn.Module):
    """UNeXt: a convolutional encoder-decoder whose two deepest stages are tokenized shifted MLPs.

    The function of the paper's code (UNeXt-pytorch) for 2D inputs whose sides are multiples of 32
    (:func:`unext_monai.from_unext_pytorch` converts its checkpoints), for any channel count, any size (zero-padded to
    a multiple of 32 at the end inside, the logits cropped back), 2D or 3D, with optional deep supervision. One forward
    trains and infers; 2D maps and weights run channels-last (faster on CPUs), the logits come back in
    the input's memory format. For deployment export it (:func:`unext_monai.networks.export.export_onnx`).

    Args:
        spatial_dims: 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W).
        in_channels: input channels (3 for RGB, 1 for gray).
        out_channels: output logits (no activation): 1 for a sigmoid, one per class for a softmax.
        features: the five stage widths, three convolutional and two tokenized-MLP stages: :data:`UNEXT_FEATURES`
            (default, the paper's UNeXt) or :data:`UNEXT_S_FEATURES` (UNeXt-S).
        norm, act: of the convolutional stages, as MONAI's networks take them (the paper's BatchNorm and ReLU); the
            tokenized stages keep the paper's LayerNorm and GELU.
        dropout: dropout probability inside the shifted MLPs.
        drop_path: stochastic-depth probability of every shifted-MLP block's residual branch during training.
        shift_size: number of channel groups in the shifted MLP; group ``g`` moves ``g - shift_size // 2`` pixels.
        mlp_ratio: hidden width of each shifted MLP as a multiple of its input width.
        deep_supervision: if True, in training mode ``forward`` returns a list: the full-resolution logits followed by
            logits at 1/2, 1/4, 1/8 and 1/16 of the input size (from 1x1 heads on the decoder stages), as
            ``monai.losses.DeepSupervisionLoss`` takes them. In eval mode it returns the full-resolution logits only.

    Example::

        net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1)
        logits = net(torch.rand(2, 3, 256, 256))  # (2, 1, 256, 256)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = UNEXT_FEATURES,
        norm: LayerSpec = "batch",
        act: LayerSpec = ("relu", {"inplace": True}),
        dropout: float = 0.0,
        drop_path: float = 0.0,
        shift_size: int = 5,
        mlp_ratio: float = 1.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        fea = tuple(int(f) for f in features)
        if len(fea) != 5 or min(fea) < 1:
            raise ValueError(f"features must be five positive widths, got {tuple(features)}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels} and {out_channels}.")
        if shift_size < 1:
            raise ValueError(f"shift_size must be positive, got {shift_size}.")
        if int(min(fea[3:]) * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must give the shifted MLPs at least one hidden channel, got {mlp_ratio}.")
        for name, p in (("dropout", dropout), ("drop_path", drop_path)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability has to be between 0 and 1, got {p}.")
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.features, self.deep_supervision = fea, deep_supervision
        self.divisor = 32  # total downsampling: inputs are zero-padded at the end to a multiple of this
        conv_args = {"norm": norm, "act": act}
        block_args = {"mlp_ratio": mlp_ratio, "shift_size": shift_size, "dropout": dropout, "drop_path": drop_path}

        self.down_1 = ConvDown(spatial_dims, in_channels, fea[0], **conv_args)
        self.down_2 = ConvDown(spatial_dims, fea[0], fea[1], **conv_args)
        self.down_3 = ConvDown(spatial_dims, fea[1], fea[2], **conv_args)
        self.down_4 = TokenizedDown(spatial_dims, fea[2], fea[3], **block_args)
        self.down_5 = TokenizedDown(spatial_dims, fea[3], fea[4], **block_args)
        self.up_4 = TokenizedUp(spatial_dims, fea[4], fea[3], **conv_args, **block_args)
        self.up_3 = TokenizedUp(spatial_dims, fea[3], fea[2], **conv_args, **block_args)
        self.up_2 = ConvUp(spatial_dims, fea[2], fea[1], **conv_args)
        self.up_1 = ConvUp(spatial_dims, fea[1], fea[0], **conv_args)
        self.up_0 = ConvUp(spatial_dims, fea[0], fea[0], norm="", act=act)
        self.final_conv = pointwise_conv(spatial_dims, fea[0], out_channels, channels_first=True)
        # heads at 1/2, 1/4, 1/8, 1/16 of the input size, on the outputs of up_1, up_2, up_3, up_4
        self.heads = nn.ModuleList([pointwise_conv(spatial_dims, c, out_channels, channels_first=True)
                                    for c in fea[:4]] if deep_supervision else [])
        if spatial_dims == 2:  # the weights in the maps' memory format: no convolution reorders them at every call
            self.to(memory_format=torch.channels_last)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        # deep-supervision heads are training-only: without them, a checkpoint's are ignored (inference of a model
        # trained with them); with them, they keep their initial weights where the checkpoint has none (fine-tuning)
        heads = [k for k in state_dict if k.startswith(prefix + "heads.")]
        if not self.deep_supervision:
            for k in heads:
                del state_dict[k]
        elif not heads:
            state_dict.update(self.heads.state_dict(prefix=prefix + "heads."))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            expected = "(B, " + str(self.in_channels) + ", " + ", ".join(["*"] * self.spatial_dims) + ")"
            raise ValueError("UNeXt expects an input of shape " + expected + ", got " + str(list(x.shape)) + ".")

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:  # noqa: UP007 (TorchScript)
        """x: (B, in_channels, *spatial) -> logits (B, out_channels, *spatial), or the deep-supervision list.

        The logits are contiguous in the memory format of ``x`` (channels-last for a channels-last input).
        """
        self._check_input(x)
        size = x.shape[2:]
        memory_format = torch.contiguous_format
        if x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1:  # channels-last (one channel: both at once)
            memory_format = torch.channels_last
        pad: list[int] = []
        for s in size:  # F.pad lists the last dimension first
            pad = [0, (s + self.divisor - 1) // self.divisor * self.divisor - s] + pad
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
        logits = _crop(self.final_conv(self.up_0(u1)), size, 1).contiguous(memory_format=memory_format)
        if not (self.training and self.deep_supervision):
            return logits
        outputs = [logits]
        features = [u1, u2, u3, u4]
        for i, head in enumerate(self.heads):
            outputs.append(_crop(head(features[i]), size, 2 << i).contiguous(memory_format=memory_format))
        return outputs


def _crop(x: torch.Tensor, size: list[int], scale: int) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to ``ceil(size / scale)`` (undoing the padding at the end)."""
    end = [(s + scale - 1) // scale for s in size]
    return x[:, :, : end[0], : end[1]] if len(size) == 2 else x[:, :, : end[0], : end[1], : end[2]]
