"""UNeXt as MONAI tests its own networks: a grid of configurations, MONAI's model utilities, and the promises users
rely on (the paper's sizes, state dicts of earlier versions, memory format, meta-device construction)."""

import copy
from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks import eval_mode, train_mode
from monai.networks.utils import copy_model_state, replace_modules
from monai.utils import set_determinism
from torch.utils.flop_counter import FlopCounterMode

from unext_monai import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt

FIXTURE = Path(__file__).parent / "data" / "unext_c4d979a.pt"
BF16_TOL = 0.02  # measured <= 0.012: max abs difference of bfloat16-autocast logits, relative to the largest logit

# MONAI-style grid: 2D/3D, 1/3/4 input and 1/2/5 output channels, both widths, odd sizes, batch 1/3
CASES = []
for _dims, _size in ((2, (33, 47)), (3, (17, 20, 33))):
    for _i, (_cin, _cout) in enumerate([(1, 1), (3, 2), (4, 5)]):
        for _features in (UNEXT_S_FEATURES, UNEXT_FEATURES):
            _batch = 3 if _i % 2 else 1
            CASES.append(({"spatial_dims": _dims, "in_channels": _cin, "out_channels": _cout, "features": _features},
                          (_batch, _cin, *_size), (_batch, _cout, *_size)))


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def small(**kwargs) -> UNeXt:
    kwargs = {"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "features": UNEXT_S_FEATURES, **kwargs}
    return UNeXt(**kwargs)


@pytest.mark.parametrize("kwargs,input_shape,expected_shape", CASES)
def test_shape(kwargs, input_shape, expected_shape):
    net = UNeXt(**kwargs)
    with eval_mode(net):
        out = net(torch.randn(input_shape))
    assert out.shape == expected_shape
    assert out.is_contiguous() and torch.isfinite(out).all()


def test_paper_parameter_count_and_flops():
    net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1).eval()
    assert count_params(net) == 1_471_921
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, 256, 256))
    assert counter.get_total_flops() == pytest.approx(1.124e9, rel=0.01)


def test_small_variant_parameter_count():
    assert count_params(UNeXt(2, 3, 1, features=UNEXT_S_FEATURES)) == 253_561


def test_loads_state_dicts_of_commit_c4d979a_with_the_same_function():
    """State dicts saved by the network as it was at commit c4d979a (tests/data/unext_c4d979a.pt: a 2D network with
    deep supervision and a 3D one, trained BatchNorm statistics) load unchanged and give the same outputs."""
    saved = torch.load(FIXTURE, weights_only=True)
    for name in ("2d", "3d"):
        entry = saved[name]
        net = UNeXt(**entry["kwargs"])
        assert list(net.state_dict()) == list(entry["state"])
        assert all(net.state_dict()[k].shape == v.shape for k, v in entry["state"].items())
        net.load_state_dict(entry["state"], strict=True)
        with torch.no_grad():
            train_outputs = copy.deepcopy(net).train()(entry["input"])
            eval_output = net.eval()(entry["input"])
        train_outputs = train_outputs if isinstance(train_outputs, list) else [train_outputs]
        assert len(train_outputs) == len(entry["train_outputs"])
        for got, expected in zip(train_outputs, entry["train_outputs"]):
            # in training mode BatchNorm normalizes by batch statistics whose float32 sums run in another order at
            # another thread count (one thread: up to 2.2e-5 of the largest output; two: 2e-7)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))
        torch.testing.assert_close(eval_output, entry["eval_output"], rtol=0, atol=1e-6)


def test_same_seed_same_initial_weights_as_commit_c4d979a():
    entry = torch.load(FIXTURE, weights_only=True)["2d"]
    torch.manual_seed(0)
    state = UNeXt(**entry["kwargs"]).state_dict()
    assert all(torch.equal(state[k], v) for k, v in entry["initial_state"].items())


def test_padding_does_not_change_the_image_part():
    """Sides that are not multiples of 32 are zero-padded at the end: the logits are those of the padded input."""
    net = small(in_channels=1, out_channels=1).eval()
    x = torch.rand(1, 1, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 26, 0, 14))
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :50, :70], rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (32, 32), (100, 77)])
def test_tiny_and_odd_sizes(size):
    net = small().eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, *size)).shape == (2, 2, *size)


def test_outputs_are_contiguous_in_the_input_memory_format():
    net = small(out_channels=3, deep_supervision=True)
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        for out in net.train()(x):
            assert out.is_contiguous()
        out = net.eval()(x)
        assert out.is_contiguous()
        out.view(2, 3, -1)  # a plain view works
        channels_last = net(x.contiguous(memory_format=torch.channels_last))
        assert channels_last.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(channels_last, out, rtol=0, atol=1e-6)
        volume = UNeXt(3, 1, 2, features=UNEXT_S_FEATURES).eval()(torch.rand(1, 1, 20, 24, 36))
        assert volume.is_contiguous()


def test_deep_supervision_training_and_eval():
    net = small(deep_supervision=True)
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
    assert len(UNeXt(2, 3, 1).heads) == 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_every_parameter(spatial_dims):
    net = UNeXt(spatial_dims, 2, 3, features=UNEXT_S_FEATURES, deep_supervision=True, dropout=0.1, drop_path=0.1)
    torch.manual_seed(0)
    outputs = net.train()(torch.randn(2, 2, *([40, 33, 24][:spatial_dims])))
    sum(o.square().mean() for o in outputs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bf16_autocast_training_step():
    """The bundle trains under bfloat16 autocast on CPU: the logits stay near the float32 ones, forward and backward
    run, and gradients reach every parameter."""
    torch.manual_seed(0)
    net = small(deep_supervision=True)
    x = torch.randn(2, 3, 64, 48)
    with eval_mode(net):
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x).float()
    assert (low - reference).abs().max() < BF16_TOL * reference.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = net.train()(x)
    sum(o.float().square().mean() for o in outputs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_determinism():
    x = torch.rand(2, 3, 64, 64)
    net = small(dropout=0.5, drop_path=0.3)
    with eval_mode(net):
        assert torch.equal(net(x), net(x))
    with train_mode(net):
        set_determinism(seed=0)
        a = net(x)
        set_determinism(seed=0)
        b = net(x)
        c = net(x)
    set_determinism(seed=None)
    assert torch.equal(a, b) and not torch.equal(a, c)  # dropout and drop path act in training only


def test_copy_model_state():
    src = small(deep_supervision=True)
    dst = small()
    _, updated, unchanged = copy_model_state(dst, src)
    assert set(updated) == set(dst.state_dict()) and not unchanged
    x = torch.rand(1, 3, 64, 64)
    with eval_mode(src, dst):
        assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("new_norm", [lambda c: torch.nn.InstanceNorm2d(c, affine=True),
                                      lambda c: torch.nn.GroupNorm(2, c)])
def test_replace_modules_of_every_norm(new_norm):
    net = small()
    names = [(n, m.num_features) for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(names) == 7
    for name, channels in names:
        replace_modules(net, name, new_norm(channels))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    out = net.train()(torch.rand(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 2, 64, 64)


def test_norm_and_act_arguments():
    net = small(norm=("instance", {"affine": True}), act="gelu")
    assert isinstance(net.down_1.norm, torch.nn.InstanceNorm2d) and isinstance(net.up_1.act, torch.nn.GELU)
    assert isinstance(net.up_4.conv_up.norm, torch.nn.InstanceNorm2d)
    assert isinstance(net.up_0.norm, torch.nn.Identity)  # the reference's last stage has none
    assert net.train()(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)  # instance norm trains with batch 1


def test_meta_device_construction():
    """Built on the meta device, materialised with to_empty() and loaded, the network computes what the original
    does (the shift kernels, constants outside the state dict, are rebuilt)."""
    torch.manual_seed(0)
    net = small(spatial_dims=3, in_channels=1).eval()
    with torch.device("meta"):
        lazy = small(spatial_dims=3, in_channels=1)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 20, 24, 36)
    with eval_mode(lazy), torch.no_grad():
        assert torch.equal(lazy(x), net(x))


def test_sliding_window_inference_and_meta_tensor_input():
    net = small(in_channels=1, out_channels=2).eval()
    image = MetaTensor(torch.rand(1, 1, 150, 200), affine=torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0])))
    with torch.no_grad():
        out = sliding_window_inference(image, (96, 96), 2, net, overlap=0.25)
        direct = net(image)
    assert out.shape == (1, 2, 150, 200)
    assert isinstance(direct, MetaTensor) and direct.shape == (1, 2, 150, 200)
    assert torch.equal(direct.affine, image.affine)


def test_fc_layers_are_modules_that_hooks_see():
    """The token-wise linear layers are called as modules (hooks, adapters and quantisation tools act on them) and
    are 1x1 convolutions to tools that look for nn.Conv2d."""
    net = small().eval()
    fc1 = net.down_4.block.mlp.fc1
    assert isinstance(fc1, torch.nn.Conv2d) and fc1.kernel_size == (1, 1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        handle = fc1.register_forward_hook(lambda module, inputs, output: output * 0)
        after = net(x)
        handle.remove()
    assert not torch.equal(before, after)


def test_shift_size_and_mlp_ratio_change_the_network():
    x = torch.rand(1, 3, 64, 64)
    torch.manual_seed(0)
    a = small().eval()
    torch.manual_seed(0)
    b = small(shift_size=3).eval()
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
    wide = small(mlp_ratio=2.0)
    assert wide.down_4.block.mlp.fc1.out_channels == 2 * UNEXT_S_FEATURES[3]
    assert wide(x).shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    "shape,message",
    [((1, 1, 64, 64), r"\(B, 3, \*, \*\), got \[1, 1, 64, 64\]"), ((3, 64, 64), r"got \[3, 64, 64\]")],
)
def test_clear_error_on_wrong_input(shape, message):
    with pytest.raises(ValueError, match=message):
        UNeXt(2, 3, 1)(torch.rand(*shape))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"features": (1, 2, 3)}, "features"),
        ({"in_channels": 0}, "in_channels"),
        ({"shift_size": 0}, "shift_size"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": 1.5}, "dropout"),
        ({"drop_path": -0.1}, "drop_path"),
        ({"drop_path": 1.5}, "drop_path"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNeXt(**kwargs)
