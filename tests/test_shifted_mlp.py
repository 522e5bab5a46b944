import pytest
import torch
import torch.nn.functional as F

from unext_monai.networks.blocks import ShiftedMLPBlock, axial_shift


def reference_shift(x: torch.Tensor, dim: int, shift_size: int) -> torch.Tensor:
    """The paper code's pad -> chunk -> roll -> crop, written out for comparison (2D only)."""
    pad = shift_size // 2
    h, w = x.shape[2:]
    xn = F.pad(x, (pad, pad, pad, pad))
    parts = [torch.roll(c, s, dim) for c, s in zip(torch.chunk(xn, shift_size, 1), range(-pad, pad + 1))]
    return torch.cat(parts, 1).narrow(2, pad, h).narrow(3, pad, w)


@pytest.mark.parametrize("channels", [160, 256, 128, 64, 32, 8, 7])
@pytest.mark.parametrize("axis", [0, 1])
def test_axial_shift_matches_reference(channels, axis):
    x = torch.randn(2, channels, 9, 11)
    assert torch.equal(axial_shift(x, axis, 5), reference_shift(x, axis + 2, 5))


def test_axial_shift_is_zero_filled_not_circular():
    x = torch.ones(1, 5, 4, 4)
    out = axial_shift(x, 0, 5)
    assert out[0, 0, -2:].sum() == 0 and out[0, 4, :2].sum() == 0 and out[0, 2].sum() == 16


def test_axial_shift_3d_each_axis():
    x = torch.randn(1, 10, 4, 5, 6)
    for axis in range(3):
        out = axial_shift(x, axis, 5)
        # group 4 (channels 8, 9) moves by +2 along the axis
        moved = x[:, 8:].narrow(2 + axis, 0, x.shape[2 + axis] - 2)
        assert torch.equal(out[:, 8:].narrow(2 + axis, 2, x.shape[2 + axis] - 2), moved)


def test_block_keeps_shape_and_drop_path_only_in_training():
    block = ShiftedMLPBlock(2, 16, drop_path=0.9, dropout=0.5)
    x = torch.randn(4, 16, 8, 8)
    assert block(x).shape == x.shape
    block.eval()
    assert torch.equal(block(x), block(x))
