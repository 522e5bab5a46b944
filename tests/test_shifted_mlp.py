import pytest
import torch
import torch.nn.functional as F

from unext_monai.networks.blocks import (
    AxialShift,
    ChannelLayerNorm,
    PointwiseConv2d,
    PointwiseConv3d,
    ShiftedMLP,
    ShiftedMLPBlock,
)


def reference_shift(x: torch.Tensor, dim: int, shift_size: int) -> torch.Tensor:
    """The paper code's shift along ``dim``: zero-pad every spatial side, chunk the channels, roll each chunk by
    -pad..pad, crop."""
    pad = shift_size // 2
    size = x.shape[2:]
    xn = F.pad(x, [pad] * (2 * len(size)))
    parts = [torch.roll(c, s, dim) for c, s in zip(torch.chunk(xn, shift_size, 1), range(-pad, pad + 1))]
    out = torch.cat(parts, 1)
    for i, n in enumerate(size):
        out = out.narrow(2 + i, pad, n)
    return out


@pytest.mark.parametrize("channels", [160, 256, 128, 64, 32, 8, 7, 3])
@pytest.mark.parametrize("shift_size", [5, 3])
def test_axial_shift_matches_reference_2d(channels, shift_size):
    x = torch.randn(2, channels, 9, 11)
    for axis in (0, 1):
        shift = AxialShift(2, channels, shift_size, [axis])
        assert torch.equal(shift(x), reference_shift(x, 2 + axis, shift_size))
        assert torch.equal(shift(x.contiguous(memory_format=torch.channels_last)), shift(x))


def test_axial_shift_matches_reference_3d():
    x = torch.randn(1, 10, 4, 5, 6)
    both = reference_shift(reference_shift(x, 2, 5), 3, 5)  # depth then height, as ShiftedMLP's first shift
    assert torch.equal(AxialShift(3, 10, 5, [0, 1])(x), both)
    assert torch.equal(AxialShift(3, 10, 5, [2])(x), reference_shift(x, 4, 5))


def test_axial_shift_of_one_group_is_the_input_itself():
    """shift_size 1 (the ablation's shift off) moves nothing and costs nothing: no convolution copies the map."""
    x = torch.randn(2, 6, 5, 7)
    for spatial_dims, axes in ((2, [0]), (2, [1]), (3, [0, 1])):
        shift = AxialShift(spatial_dims, 6, 1, axes)
        y = x if spatial_dims == 2 else x.unsqueeze(2)
        assert shift(y) is y
        assert torch.equal(shift(y), reference_shift(y, 2 + axes[-1], 1))


def test_axial_shift_is_zero_filled_not_circular():
    out = AxialShift(2, 5, 5, [0])(torch.ones(1, 5, 4, 4))
    assert out[0, 0, -2:].sum() == 0 and out[0, 4, :2].sum() == 0 and out[0, 2].sum() == 16


def test_axial_shift_gradient_is_the_reference_gradient():
    x = torch.randn(2, 12, 8, 8, requires_grad=True)
    g = torch.randn(2, 12, 8, 8)
    AxialShift(2, 12, 5, [1])(x).backward(g)
    y = x.detach().clone().requires_grad_()
    reference_shift(y, 3, 5).backward(g)
    assert torch.equal(x.grad, y.grad)


def test_axial_shift_kernel_survives_to_empty_and_casts():
    """The kernel is a constant outside the state dict: rebuilt when the module is materialised or cast."""
    with torch.device("meta"):
        shift = AxialShift(2, 7, 5, [0])
    shift.to_empty(device="cpu")
    x = torch.randn(1, 7, 6, 5)
    assert torch.equal(shift(x), reference_shift(x, 2, 5))
    assert torch.equal(shift.double()(x.double()), reference_shift(x.double(), 2, 5))
    assert not shift.state_dict()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
def test_pointwise_conv_is_a_1x1_convolution(spatial_dims, channels_first):
    torch.manual_seed(0)
    layer = (PointwiseConv2d if spatial_dims == 2 else PointwiseConv3d)(6, 4, channels_first=channels_first)
    conv = (torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d)(6, 4, kernel_size=1)
    assert list(layer.state_dict()) == list(conv.state_dict())
    conv.load_state_dict(layer.state_dict())
    x = torch.randn(2, 6, *([5, 7, 3][:spatial_dims]))
    if spatial_dims == 2:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = x.detach().clone().requires_grad_()
    out, expected = layer(x), conv(y)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    if channels_first:
        assert out.is_contiguous()
    elif spatial_dims == 2:
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(expected)
    grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], g)
    expected_grads = torch.autograd.grad(expected, [y, conv.weight, conv.bias], g)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_channel_layer_norm_is_layer_norm_over_channels():
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 7)
    expected = torch.nn.functional.layer_norm(x.movedim(1, -1), (6,), norm.weight, norm.bias).movedim(-1, 1)
    torch.testing.assert_close(norm(x), expected)


def _mlp_as_written(mlp: ShiftedMLP, x: torch.Tensor) -> torch.Tensor:
    """ShiftedMLP's function with the reference's shifts and plain 1x1 convolutions."""
    for dim in range(2, x.dim() - 1):
        x = reference_shift(x, dim, 5)
    x = mlp.drop(mlp.act(mlp.dwconv(F.conv2d(x, mlp.fc1.weight, mlp.fc1.bias) if x.dim() == 4
                                    else F.conv3d(x, mlp.fc1.weight, mlp.fc1.bias))))
    x = reference_shift(x, x.dim() - 1, 5)
    return mlp.drop(F.conv2d(x, mlp.fc2.weight, mlp.fc2.bias) if x.dim() == 4
                    else F.conv3d(x, mlp.fc2.weight, mlp.fc2.bias))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shifted_mlp_same_function_and_gradients(spatial_dims):
    torch.manual_seed(0)
    block = ShiftedMLPBlock(spatial_dims, 23, mlp_ratio=1.5)
    shape = (2, 23, 9, 10) if spatial_dims == 2 else (1, 23, 5, 6, 7)
    x = torch.randn(*shape)
    for fmt in ([torch.contiguous_format, torch.channels_last] if spatial_dims == 2 else [torch.contiguous_format]):
        a = x.contiguous(memory_format=fmt).requires_grad_()
        out = block.mlp(a)
        b = x.clone().requires_grad_()
        expected = _mlp_as_written(block.mlp, b)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(expected)
        grads = torch.autograd.grad(out, [a] + list(block.mlp.parameters()), g)
        expected_grads = torch.autograd.grad(expected, [b] + list(block.mlp.parameters()), g)
        for u, v in zip(grads, expected_grads):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)


def test_block_keeps_shape_and_drop_path_only_in_training():
    block = ShiftedMLPBlock(2, 16, drop_path=0.9, dropout=0.5)
    x = torch.randn(4, 16, 8, 8)
    assert block(x).shape == x.shape
    block.eval()
    assert torch.equal(block(x), block(x))


def test_state_dict_keys_unchanged():
    block = ShiftedMLPBlock(2, 16)
    assert list(block.state_dict()) == [
        "norm.weight", "norm.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.dwconv.weight", "mlp.dwconv.bias",
        "mlp.fc2.weight", "mlp.fc2.bias",
    ]
