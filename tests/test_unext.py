import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch.utils.flop_counter import FlopCounterMode

from unext_monai import UNEXT_S_FEATURES, UNeXt


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_paper_parameter_count_and_flops():
    net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1).eval()
    assert count_params(net) == 1_471_921
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, 256, 256))
    assert counter.get_total_flops() == pytest.approx(1.124e9, rel=0.01)


def test_small_variant_parameter_count():
    assert count_params(UNeXt(2, 3, 1, features=UNEXT_S_FEATURES)) == 253_561


def test_other_widths():
    net = UNeXt(2, 3, 2, features=(4, 8, 16, 24, 40)).eval()
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("size", [(256, 256), (100, 77), (33, 250), (1, 1)])
def test_any_input_size_is_padded_and_cropped_back(size):
    net = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, *size)).shape == (2, 1, *size)


def test_padding_does_not_change_the_image_part():
    """An input already a multiple of 32 gives the same logits inside a larger padded input's crop region only
    through the zero padding; here we check the cropped output equals running on the explicitly padded input."""
    net = UNeXt(2, 1, 1, features=UNEXT_S_FEATURES).eval()
    x = torch.rand(1, 1, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 26, 0, 14))
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :50, :70], atol=1e-6)


def test_grayscale_and_multiclass():
    net = UNeXt(spatial_dims=2, in_channels=1, out_channels=4).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 64, 96)).shape == (2, 4, 64, 96)


def test_3d_forward_backward():
    net = UNeXt(spatial_dims=3, in_channels=1, out_channels=2, features=UNEXT_S_FEATURES)
    x = torch.rand(1, 1, 64, 80, 96)
    out = net(x)
    assert out.shape == (1, 2, 64, 80, 96)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_3d_paper_widths_forward_backward():
    net = UNeXt(spatial_dims=3, in_channels=1, out_channels=1)
    out = net(torch.rand(1, 1, 64, 80, 96))
    out.sum().backward()
    assert net.down_1.conv.weight.grad is not None


def test_deep_supervision_training_and_eval():
    net = UNeXt(2, 3, 2, features=UNEXT_S_FEATURES, deep_supervision=True)
    x = torch.rand(2, 3, 100, 64)
    outputs = net(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape[2:]) for o in outputs] == [(100, 64), (50, 32), (25, 16), (13, 8), (7, 4)]
    target = torch.randint(0, 2, (2, 1, 100, 64)).float()
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))(outputs, target)
    loss.backward()
    assert all(h.weight.grad is not None for h in net.heads)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 100, 64)


def test_deep_supervision_off_has_no_heads():
    assert len(UNeXt(2, 3, 1).heads) == 0


def test_dropout_is_active_in_training_only():
    net = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES, dropout=0.5)
    x = torch.rand(1, 3, 64, 64)
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_drop_path_reaches_blocks():
    net = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES, drop_path=0.2)
    assert net.down_4.block.drop_path.drop_prob == pytest.approx(0.2)
    assert isinstance(UNeXt(2, 3, 1).down_4.block.drop_path, torch.nn.Identity)


def test_shift_size_and_mlp_ratio_change_the_network():
    x = torch.rand(1, 3, 64, 64)
    torch.manual_seed(0)
    a = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES).eval()
    torch.manual_seed(0)
    b = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES, shift_size=3).eval()
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
    wide = UNeXt(2, 3, 1, features=UNEXT_S_FEATURES, mlp_ratio=2.0)
    assert wide.down_4.block.mlp.fc1.out_channels == 2 * UNEXT_S_FEATURES[3]
    assert wide(x).shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    "shape,message",
    [((1, 1, 64, 64), r"\(B, 3, \*, \*\), got \[1, 1, 64, 64\]"), ((3, 64, 64), r"got \[3, 64, 64\]")],
)
def test_clear_error_on_wrong_input(shape, message):
    with pytest.raises(ValueError, match=message):
        UNeXt(2, 3, 1)(torch.rand(*shape))


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 1}, {"features": (1, 2, 3)}, {"in_channels": 0}, {"shift_size": 0}]
)
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        UNeXt(**kwargs)
