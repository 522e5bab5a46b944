"""The fast inference paths compute the plain UNeXt's function: optimized eager, frozen TorchScript, ONNX Runtime."""

import copy
import io
import warnings

import pytest
import torch

from unext_monai import UNEXT_S_FEATURES, UNeXt, from_unext_pytorch
from unext_monai.networks.fast import FastUNeXt, fold_batch_norm, optimize_for_inference

TOL = 1e-4
# (in_channels, out_channels, features): the paper's UNeXt, grayscale multi-class UNeXt-S, odd widths
CONFIGS = [(3, 1, None), (1, 4, UNEXT_S_FEATURES), (2, 3, (8, 12, 20, 24, 40))]
SIZES = [(64, 64), (100, 77), (33, 250), (1, 1)]


def trained(in_channels, out_channels, features, seed=0, **kwargs):
    """A UNeXt with random weights and non-trivial BatchNorm running statistics and affine parameters, in eval."""
    torch.manual_seed(seed)
    kw = {} if features is None else {"features": features}
    net = UNeXt(2, in_channels, out_channels, **kw, **kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.train()
        for _ in range(3):
            net(torch.rand(2, in_channels, 64, 64) * 2)
    return net.eval()


@pytest.fixture(scope="module", params=CONFIGS, ids=["paper-3to1", "small-1to4", "odd-2to3"])
def pair(request):
    net = trained(*request.param)
    return net, optimize_for_inference(net)


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_optimized_eager_matches(pair):
    net, fast = pair
    for size in SIZES:
        x = torch.rand(2, net.in_channels, *size)
        with torch.inference_mode():
            expected, got = net(x), fast(x)
        assert got.shape == expected.shape == (2, net.out_channels, *size)
        assert max_diff(got, expected) < TOL


def test_optimized_eager_any_input_memory_format_and_no_grad_mode(pair):
    net, fast = pair
    x = torch.rand(1, net.in_channels, 96, 64)
    with torch.no_grad():
        expected = net(x)
        assert max_diff(fast(x.contiguous(memory_format=torch.channels_last)), expected) < TOL
        assert max_diff(fast(x[..., :48, :].contiguous()), net(x[..., :48, :])) < TOL


def test_frozen_torchscript_matches_and_saves(pair, tmp_path):
    net, fast = pair
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.script(fast))
    path = tmp_path / "fast.ts"
    torch.jit.save(torch.jit.script(fast), str(path))
    loaded = torch.jit.load(str(path))
    for size in SIZES:
        x = torch.rand(2, net.in_channels, *size)
        with torch.no_grad():
            expected = net(x)
            assert max_diff(frozen(x), expected) < TOL
            assert max_diff(loaded(x), expected) < TOL


def test_traced_matches(pair):
    net, fast = pair
    x = torch.rand(1, net.in_channels, 64, 96)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(fast, x))
        assert max_diff(traced(x), net(x)) < TOL


def test_onnx_runtime_matches(pair, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from unext_monai.networks.export import export_onnx

    net, fast = pair
    path = export_onnx(fast, tmp_path / "fast.onnx", in_channels=net.in_channels, spatial_dims=2)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for shape in [(1, 64, 64), (2, 100, 77), (1, 33, 250), (3, 96, 160)]:
        x = torch.rand(shape[0], net.in_channels, *shape[1:])
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = net(x)
        assert out.shape == tuple(expected.shape)
        assert max_diff(torch.from_numpy(out), expected) < TOL


def test_original_model_untouched_and_still_trains():
    net = trained(3, 2, UNEXT_S_FEATURES)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = optimize_for_inference(net)
    assert net.training and not fast.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in fast.parameters())
    # the fast module holds copies: changing the network does not change it
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = fast(x)
        net.down_1.conv.weight.add_(1.0)
        assert torch.equal(fast(x), out)
    # training continues on the plain model
    loss = net(torch.rand(2, 3, 64, 64)).mean()
    loss.backward()
    assert net.down_1.conv.weight.grad is not None


def test_reference_checkpoints(shared_dir):
    reference = torch.load(shared_dir / "reference" / "unext_pytorch_reference_outputs.pt", weights_only=True)
    for name in ("UNext", "UNext_S"):
        entry = reference[name]
        net = from_unext_pytorch(entry["state_dict"])
        fast = optimize_for_inference(net)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.script(fast))
            for x, expected in zip(entry["inputs"], entry["outputs"]):
                assert max_diff(fast(x), expected) < TOL
                assert max_diff(frozen(x), expected) < TOL


def test_reference_checkpoint_onnx_runtime(shared_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from unext_monai.networks.export import export_onnx

    entry = torch.load(shared_dir / "reference" / "unext_pytorch_reference_outputs.pt", weights_only=True)["UNext"]
    fast = optimize_for_inference(from_unext_pytorch(entry["state_dict"]))
    path = export_onnx(fast, tmp_path / "ref.onnx", in_channels=3)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for x, expected in zip(entry["inputs"], entry["outputs"]):
        (out,) = session.run(None, {"image": x.numpy()})
        assert max_diff(torch.from_numpy(out), expected) < TOL


def test_deep_supervision_dropout_and_drop_path_networks_give_eval_function():
    net = trained(3, 2, UNEXT_S_FEATURES, deep_supervision=True, dropout=0.3, drop_path=0.2)
    fast = optimize_for_inference(net)
    x = torch.rand(2, 3, 80, 48)
    with torch.no_grad():
        out = fast(x)
        assert isinstance(out, torch.Tensor)
        assert max_diff(out, net(x)) < TOL
        assert torch.equal(fast(x), out)  # deterministic


def test_other_shift_size_and_mlp_ratio():
    torch.manual_seed(1)
    net = trained(3, 1, UNEXT_S_FEATURES, shift_size=3, mlp_ratio=2.0)
    fast = optimize_for_inference(net)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(fast(x), net(x)) < TOL
        assert max_diff(torch.jit.script(fast)(x), net(x)) < TOL


def test_3d():
    torch.manual_seed(0)
    net = UNeXt(3, 1, 2, features=UNEXT_S_FEATURES)
    with torch.no_grad():
        net.train()
        net(torch.rand(2, 1, 32, 32, 32))
    net.eval()
    fast = optimize_for_inference(net)
    x = torch.rand(1, 1, 32, 40, 48)
    with torch.no_grad():
        assert max_diff(fast(x), net(x)) < TOL
        assert max_diff(torch.jit.script(fast)(x), net(x)) < TOL


def test_copy_pickle_and_dtype():
    net = trained(3, 1, UNEXT_S_FEATURES)
    fast = optimize_for_inference(net)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = fast(x)  # builds oneDNN's packed weights, which must not break copies
        assert torch.equal(copy.deepcopy(fast)(x), expected)
        buffer = io.BytesIO()
        torch.save(fast, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
        # float64 runs the portable path (no oneDNN)
        assert max_diff(copy.deepcopy(fast).double()(x.double()).float(), expected) < TOL
        state = fast.state_dict()
        again = FastUNeXt(net)
        again.load_state_dict(state)
        assert torch.equal(again(x), expected)


def test_errors():
    with pytest.raises(TypeError, match="expects a UNeXt"):
        optimize_for_inference(torch.nn.Conv2d(1, 1, 1))
    fast = optimize_for_inference(UNeXt(2, 3, 1, features=UNEXT_S_FEATURES).eval())
    with pytest.raises(ValueError, match=r"\(B, 3, \*, \*\), got \[1, 1, 64, 64\]"):
        fast(torch.rand(1, 1, 64, 64))
    with pytest.raises(Exception, match="expects an input of shape"):
        torch.jit.script(fast)(torch.rand(1, 1, 64, 64))


def test_fold_batch_norm():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    bn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-1, 1)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    weight, bias = fold_batch_norm(conv, bn)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        assert max_diff(torch.nn.functional.conv2d(x, weight, bias, padding=1), bn(conv(x))) < 1e-5
        w2, b2 = fold_batch_norm(conv, None)
        assert torch.equal(w2, conv.weight) and torch.equal(b2, conv.bias)
    with pytest.raises(TypeError):
        fold_batch_norm(conv, torch.nn.LayerNorm(6))


def test_float64_network():
    net = trained(3, 1, UNEXT_S_FEATURES).double()
    fast = optimize_for_inference(net)
    assert {b.dtype for b in fast.buffers()} == {torch.float64}
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert max_diff(fast(x), net(x)) < 1e-10
