"""Import of checkpoints written by the paper's own code (UNeXt-pytorch, ``archs.UNext`` / ``archs.UNext_S``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from unext_monai.checkpoint import load_checkpoint_file
from unext_monai.networks.nets.unext import UNeXt

__all__ = ["from_unext_pytorch", "convert_unext_pytorch_state_dict"]

# reference key prefix -> this package's key prefix
_PREFIXES = {
    "encoder1.": "down_1.conv.", "ebn1.": "down_1.norm.", "encoder2.": "down_2.conv.", "ebn2.": "down_2.norm.",
    "encoder3.": "down_3.conv.", "ebn3.": "down_3.norm.", "patch_embed3.proj.": "down_4.patch_embed.",
    "patch_embed3.norm.": "down_4.embed_norm.", "block1.0.": "down_4.block.", "norm3.": "down_4.norm.",
    "patch_embed4.proj.": "down_5.patch_embed.", "patch_embed4.norm.": "down_5.embed_norm.",
    "block2.0.": "down_5.block.", "norm4.": "down_5.norm.", "decoder1.": "up_4.conv_up.conv.",
    "dbn1.": "up_4.conv_up.norm.", "dblock1.0.": "up_4.block.", "dnorm3.": "up_4.norm.",
    "decoder2.": "up_3.conv_up.conv.", "dbn2.": "up_3.conv_up.norm.", "dblock2.0.": "up_3.block.",
    "dnorm4.": "up_3.norm.", "decoder3.": "up_2.conv.", "dbn3.": "up_2.norm.", "decoder4.": "up_1.conv.",
    "dbn4.": "up_1.norm.", "decoder5.": "up_0.conv.", "final.": "final_conv.",
}
# inside a shifted block
_BLOCK_PARTS = {"norm2.": "norm.", "mlp.fc1.": "mlp.fc1.", "mlp.dwconv.dwconv.": "mlp.dwconv.", "mlp.fc2.": "mlp.fc2."}
#: the reference's layers whose output widths are UNeXt's ``features``
_FEATURES = ("encoder1", "encoder2", "encoder3", "patch_embed3.proj", "patch_embed4.proj")


def _map_key(key: str) -> str | None:
    ref = next((r for r in _PREFIXES if key.startswith(r)), None)
    if ref is None:
        return None
    rest = key[len(ref):]
    if not ref.startswith(("block", "dblock")):
        return _PREFIXES[ref] + rest
    part = next((p for p in _BLOCK_PARTS if rest.startswith(p)), None)
    return None if part is None else _PREFIXES[ref] + _BLOCK_PARTS[part] + rest[len(part):]


def convert_unext_pytorch_state_dict(
    source: Mapping[str, torch.Tensor] | str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """A UNeXt-pytorch state dict (:func:`from_unext_pytorch`) on :class:`UNeXt`'s keys, and the keyword arguments of
    the matching ``UNeXt``; ``ValueError`` naming the file where it is no state dict of ``archs.UNext`` / ``UNext_S``.
    """
    is_file = isinstance(source, (str, os.PathLike))
    name = os.fspath(source) if is_file else "the given state dict"
    loaded = load_checkpoint_file(name, map_location="cpu") if is_file else source  # never runs code from a file
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{name}: expected a state dict (a mapping of names to tensors), got {type(loaded).__name__}.")
    state = {re.sub(r"^module\.", "", k): v for k, v in loaded.items()}  # nn.DataParallel's prefix
    missing = [k for k in (*(f"{f}.weight" for f in _FEATURES), "final.weight", "block1.0.mlp.fc1.weight")
               if k not in state]
    if missing:
        raise ValueError(f"{name}: not a UNeXt-pytorch (archs.UNext / UNext_S) state dict; missing keys {missing}.")
    ours = {k: _map_key(k) for k in state}
    unknown = [k for k, v in ours.items() if v is None]
    if unknown:
        raise ValueError(f"{name}: keys that UNeXt-pytorch's UNext does not have: {unknown[:10]}.")
    features = tuple(int(state[f"{f}.weight"].shape[0]) for f in _FEATURES)
    kwargs: dict[str, object] = {"spatial_dims": 2, "in_channels": int(state["encoder1.weight"].shape[1]),
                                 "out_channels": int(state["final.weight"].shape[0]), "features": features,
                                 "mlp_ratio": state["block1.0.mlp.fc1.weight"].shape[0] / features[3]}
    converted = {}
    for key, value in state.items():
        if ".mlp.fc" in ours[key] and ours[key].endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]  # nn.Linear over tokens -> 1x1 convolution
        converted[ours[key]] = value
    return converted, kwargs


def from_unext_pytorch(source: Mapping[str, torch.Tensor] | str | os.PathLike) -> UNeXt:
    """A :class:`UNeXt` in eval mode, its widths and channels read from the tensors, that gives the reference's
    outputs: ``source`` is a state dict of ``archs.UNext`` or ``archs.UNext_S`` (its ``train.py``'s ``model.pth``, with
    or without a ``module.`` prefix or a ``"state_dict"`` key) or the path of one, read weights only."""
    converted, kwargs = convert_unext_pytorch_state_dict(source)
    net = UNeXt(**kwargs)  # type: ignore[arg-type]
    result = net.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"UNeXt-pytorch checkpoint does not fit UNeXt{kwargs['features']}: missing "
                         f"{result.missing_keys}, unexpected {result.unexpected_keys}.")
    return net.eval()
