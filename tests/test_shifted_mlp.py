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


def _shift_conv(x: torch.Tensor, axes: list[int], shift_size: int) -> torch.Tensor:
    from unext_monai.networks.blocks.shifted_mlp import axial_shift_kernel

    sd = x.dim() - 2
    kernel = axial_shift_kernel(x.shape[1], shift_size, axes, sd).to(x.dtype)
    padding = [shift_size // 2 if a in axes else 0 for a in range(sd)]
    conv = F.conv2d if sd == 2 else F.conv3d
    return conv(x, kernel, None, 1, padding, 1, x.shape[1])


@pytest.mark.parametrize("channels", [160, 128, 7, 3])
@pytest.mark.parametrize("shift_size", [5, 3])
def test_shift_kernel_equals_axial_shift_2d(channels, shift_size):
    x = torch.randn(2, channels, 9, 11)
    for axis in (0, 1):
        assert torch.equal(_shift_conv(x, [axis], shift_size), axial_shift(x, axis, shift_size))
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(_shift_conv(cl, [0], shift_size), axial_shift(x, 0, shift_size))


def test_shift_kernel_equals_axial_shifts_3d():
    x = torch.randn(1, 10, 4, 5, 6)
    both = axial_shift(axial_shift(x, 0, 5), 1, 5)
    assert torch.equal(_shift_conv(x, [0, 1], 5), both)
    assert torch.equal(_shift_conv(x, [2], 5), axial_shift(x, 2, 5))


def test_shift_kernel_gradient_is_the_opposite_shift():
    x = torch.randn(2, 12, 8, 8, requires_grad=True)
    g = torch.randn(2, 12, 8, 8)
    _shift_conv(x, [1], 5).backward(g)
    y = x.detach().clone().requires_grad_()
    axial_shift(y, 1, 5).backward(g)
    assert torch.equal(x.grad, y.grad)


def _mlp_as_written(mlp, x):
    """ShiftedMLP's function written with axial_shift and the conv modules (the original formulation)."""
    for axis in mlp.first_axes:
        x = axial_shift(x, axis, mlp.shift_size)
    x = mlp.drop(mlp.act(mlp.dwconv(mlp.fc1(x))))
    x = axial_shift(x, mlp.last_axis, mlp.shift_size)
    return mlp.drop(mlp.fc2(x))


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
        assert torch.allclose(out, expected, atol=1e-5)
        g = torch.randn_like(expected)
        grads = torch.autograd.grad(out, [a] + list(block.mlp.parameters()), g)
        expected_grads = torch.autograd.grad(expected, [b] + list(block.mlp.parameters()), g)
        assert all(torch.allclose(u, v, atol=1e-4) for u, v in zip(grads, expected_grads))


def test_state_dict_keys_unchanged():
    block = ShiftedMLPBlock(2, 16)
    assert sorted(block.state_dict()) == sorted([
        "norm.weight", "norm.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.dwconv.weight", "mlp.dwconv.bias",
        "mlp.fc2.weight", "mlp.fc2.bias",
    ])


@pytest.mark.parametrize("shape", [(2, 5, 8, 12), (1, 3, 9, 7), (1, 4, 6, 5, 7)])
def test_max_pool_pairs_equals_max_pool(shape):
    from unext_monai.networks.blocks.unext_blocks import max_pool_pairs

    x = torch.randn(*shape)
    pool = F.max_pool2d if len(shape) == 4 else F.max_pool3d
    assert torch.equal(max_pool_pairs(x), pool(x, 2))
    assert torch.equal(torch.jit.script(max_pool_pairs)(x), pool(x, 2))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_conv_stages_eval_without_grad_same_values(spatial_dims):
    from unext_monai.networks.blocks import ConvDown, ConvUp

    torch.manual_seed(0)
    x = torch.randn(2, 3, *([8] * spatial_dims))
    for stage in (ConvDown(spatial_dims, 3, 8), ConvUp(spatial_dims, 3, 8), ConvUp(spatial_dims, 3, 8, norm=False)):
        stage.train()
        stage(x)  # BatchNorm running statistics
        stage.eval()
        expected = stage(x)  # with gradients enabled: the modules as written
        with torch.no_grad():
            assert torch.allclose(stage(x), expected, atol=1e-6)
            assert torch.allclose(torch.jit.script(stage)(x), expected, atol=1e-6)
