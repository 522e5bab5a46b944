"""TorchScript and ONNX export of UNeXt, as MONAI's ckpt_export and ONNX Runtime consumers use them."""

import pytest
import torch

from unext_monai import UNEXT_S_FEATURES, UNeXt


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = UNeXt(2, 3, 2, features=UNEXT_S_FEATURES)
    # give BatchNorm non-trivial statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64))
    return model.eval()


def test_torchscript_matches_eager(net, tmp_path):
    scripted = torch.jit.script(net)
    path = tmp_path / "model.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    for size in [(64, 64), (100, 77)]:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            assert torch.allclose(loaded(x), net(x), atol=1e-5)


def test_torchscript_deep_supervision_and_3d():
    ds = torch.jit.script(UNeXt(2, 1, 1, features=UNEXT_S_FEATURES, deep_supervision=True).train())
    assert len(ds(torch.rand(2, 1, 64, 64))) == 5
    vol = torch.jit.script(UNeXt(3, 1, 1, features=UNEXT_S_FEATURES).eval())
    assert vol(torch.rand(1, 1, 32, 32, 40)).shape == (1, 1, 32, 32, 40)


def test_torchscript_keeps_input_check(net):
    with pytest.raises(Exception, match="expects an input of shape"):
        torch.jit.script(net)(torch.rand(1, 1, 64, 64))


def test_onnx_dynamic_batch_and_size_matches_pytorch(net, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    from unext_monai.networks.export import export_onnx

    export_onnx(net, str(path), in_channels=3, spatial_dims=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (3, 3, 96, 160), (2, 3, 100, 77)]:
        x = torch.rand(*shape)
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = net(x).numpy()
        assert out.shape == expected.shape
        assert abs(out - expected).max() < 1e-4
