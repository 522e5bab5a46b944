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
_REQUIRED = ("encoder1.weight", "encoder2.weight", "encoder3.weight", "patch_embed3.proj.weight",
             "patch_embed4.proj.weight", "final.weight", "block1.0.mlp.fc1.weight")


def _map_key(key: str) -> str | None:
    for ref, ours in _PREFIXES.items():
        if key.startswith(ref):
            rest = key[len(ref):]
            if ref.startswith(("block", "dblock")):
                for ref_part, our_part in _BLOCK_PARTS.items():
                    if rest.startswith(ref_part):
                        return ours + our_part + rest[len(ref_part):]
                return None
            return ours + rest
    return None


def _load_state_dict(source: Mapping[str, torch.Tensor] | str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Return the reference state dict and a name for error messages; never executes code from a file."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        loaded = load_checkpoint_file(name, map_location="cpu")
    else:
        name, loaded = "the given state dict", source
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{name}: expected a state dict (a mapping of names to tensors), got {type(loaded).__name__}.")
    # checkpoints saved from nn.DataParallel carry a "module." prefix
    state = {re.sub(r"^module\.", "", k): v for k, v in loaded.items()}
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(
            f"{name}: not a UNeXt-pytorch (archs.UNext / UNext_S) state dict; missing keys {missing}."
        )
    return state, name


def convert_unext_pytorch_state_dict(
    source: Mapping[str, torch.Tensor] | str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Map a UNeXt-pytorch state dict onto :class:`UNeXt`'s keys and infer the constructor arguments.

    Returns:
        the converted state dict and the keyword arguments of the matching ``UNeXt`` (``spatial_dims``,
        ``in_channels``, ``out_channels``, ``features``, ``mlp_ratio``).
    """
    state, name = _load_state_dict(source)
    features = (
        state["encoder1.weight"].shape[0],
        state["encoder2.weight"].shape[0],
        state["encoder3.weight"].shape[0],
        state["patch_embed3.proj.weight"].shape[0],
        state["patch_embed4.proj.weight"].shape[0],
    )
    hidden = state["block1.0.mlp.fc1.weight"].shape[0]
    kwargs: dict[str, object] = {
        "spatial_dims": 2,
        "in_channels": int(state["encoder1.weight"].shape[1]),
        "out_channels": int(state["final.weight"].shape[0]),
        "features": tuple(int(f) for f in features),
        "mlp_ratio": hidden / features[3],
    }
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        ours = _map_key(key)
        if ours is None:
            unknown.append(key)
            continue
        if ".mlp.fc" in ours and ours.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]  # nn.Linear over tokens -> 1x1 convolution
        converted[ours] = value
    if unknown:
        raise ValueError(f"{name}: keys that UNeXt-pytorch's UNext does not have: {unknown[:10]}.")
    return converted, kwargs


def from_unext_pytorch(source: Mapping[str, torch.Tensor] | str | os.PathLike) -> UNeXt:
    """Build a :class:`UNeXt` carrying the weights of a UNeXt-pytorch checkpoint.

    Args:
        source: a state dict of ``archs.UNext`` or ``archs.UNext_S`` (as the reference's ``train.py`` saves it to
            ``model.pth``, optionally with a ``module.`` prefix or under a ``"state_dict"`` key), or the path of such
            a file. Files are read with ``torch.load(weights_only=True)``: no code in them is executed.

    Returns:
        a ``UNeXt`` in eval mode whose widths and input/output channels are inferred from the tensor shapes, and
        whose outputs equal the reference's for the same inputs.
    """
    converted, kwargs = convert_unext_pytorch_state_dict(source)
    net = UNeXt(**kwargs)  # type: ignore[arg-type]
    result = net.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"UNeXt-pytorch checkpoint does not fit UNeXt{kwargs['features']}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}."
        )
    return net.eval()
