"""The export paths of UNeXt, checked as MONAI checks its own networks: TorchScript at the default tolerance of
MONAI's ``test_script_save``, ONNX through ``monai.networks.utils.convert_to_onnx`` with both of PyTorch's exporters
and ONNX Runtime at a second size, ``torch.compile`` at a second size, ``torch.export`` with dynamic dimensions."""

import pytest
import torch
from monai.networks.utils import convert_to_onnx, convert_to_torchscript

from unext_monai import UNEXT_S_FEATURES, UNeXt
from unext_monai.networks.export import export_onnx

# MONAI's tests/test_convert_to_onnx.py compares ONNX Runtime with PyTorch at these tolerances
ONNX_RTOL, ONNX_ATOL = 1e-3, 1e-4

# (constructor arguments, example input shape)
SCRIPT_CASES = [
    ({"spatial_dims": 2, "in_channels": 3, "out_channels": 1}, (2, 3, 64, 64)),
    ({"spatial_dims": 2, "in_channels": 1, "out_channels": 5, "features": UNEXT_S_FEATURES}, (3, 1, 33, 47)),
    ({"spatial_dims": 3, "in_channels": 4, "out_channels": 2, "features": UNEXT_S_FEATURES}, (1, 4, 17, 20, 33)),
    ({"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "features": UNEXT_S_FEATURES,
      "deep_supervision": True}, (1, 3, 40, 56)),
    ({"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "features": UNEXT_S_FEATURES, "dropout": 0.3,
      "drop_path": 0.2}, (2, 3, 96, 50)),
    ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": UNEXT_S_FEATURES,
      "norm": ("instance", {"affine": True}), "act": "gelu"}, (1, 1, 64, 64)),
]
IDS = ["paper", "small-odd", "3d", "deep-supervision", "dropout-drop-path", "instance-gelu"]


def trained(**kwargs) -> UNeXt:
    """A UNeXt with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    net = UNeXt(**kwargs)
    with torch.no_grad():
        net.train()
        for _ in range(2):
            net(torch.rand(2, net.in_channels, *([40] * net.spatial_dims)) * 2)
    return net.eval()


def script_save(net: torch.nn.Module, *inputs: torch.Tensor, path, rtol: float = 1e-4, atol: float = 0.0) -> None:
    """MONAI's ``tests/test_utils.py::test_script_save`` (not installed with MONAI), with its default tolerance:
    script, save, reload, and compare with the module's output without gradients."""
    convert_to_torchscript(net, str(path), verify=True, inputs=inputs, device="cpu", rtol=rtol, atol=atol)


def dynamic_axes(spatial_dims: int) -> dict:
    axes = {0: "batch", **{2 + i: f"spatial_{i}" for i in range(spatial_dims)}}
    return {"x": axes, "y": axes}


def check_onnx_runtime(path, net: UNeXt, shapes) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in shapes:
        x = torch.rand(*shape)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            expected = net(x)
        assert out.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=ONNX_RTOL, atol=ONNX_ATOL)


#: the cases that script the biggest networks run with the slow tests
SLOW_SCRIPT_CASES = {"paper", "3d", "dropout-drop-path"}


@pytest.mark.parametrize("kwargs,shape", [
    pytest.param(*case, id=name, marks=[pytest.mark.slow] if name in SLOW_SCRIPT_CASES else [])
    for case, name in zip(SCRIPT_CASES, IDS)])
def test_script_save(kwargs, shape, tmp_path):
    net = trained(**kwargs)
    script_save(net, torch.randn(*shape), path=tmp_path / "model.ts")


def test_torchscript_deep_supervision_in_training_and_input_check():
    ds = torch.jit.script(UNeXt(2, 1, 1, features=UNEXT_S_FEATURES, deep_supervision=True).train())
    assert [tuple(o.shape) for o in ds(torch.rand(2, 1, 64, 48))][:2] == [(2, 1, 64, 48), (2, 1, 32, 24)]
    with pytest.raises(Exception, match="expects an input of shape"):
        torch.jit.script(UNeXt(2, 3, 1).eval())(torch.rand(1, 1, 64, 64))


def test_frozen_torchscript_matches(tmp_path):
    """The deployment form the speed table times: frozen TorchScript folds the BatchNorms into the convolutions."""
    net = trained(spatial_dims=2, in_channels=3, out_channels=2)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.script(net))
        torch.jit.save(frozen, str(tmp_path / "frozen.ts"))
        loaded = torch.jit.load(str(tmp_path / "frozen.ts"))
        for size in [(64, 64), (100, 77), (1, 1)]:
            x = torch.rand(2, 3, *size)
            torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # the exporter's own
@pytest.mark.parametrize("kwargs,shape", [SCRIPT_CASES[1], SCRIPT_CASES[2]], ids=["2d", "3d"])
def test_onnx_torchscript_exporter(kwargs, shape, tmp_path):
    net = trained(**kwargs)
    path = tmp_path / "model.onnx"
    convert_to_onnx(net, [torch.randn(*shape)], input_names=["x"], output_names=["y"],
                    dynamic_axes=dynamic_axes(net.spatial_dims), filename=str(path), verify=True, device="cpu",
                    use_ort=True, rtol=ONNX_RTOL, atol=ONNX_ATOL, use_trace=True, dynamo=False)
    d = net.spatial_dims
    check_onnx_runtime(path, net, [(1, net.in_channels) + (32,) * d, (3, net.in_channels) + (45, 70, 33)[:d],
                                   (1, net.in_channels) + (1,) * d])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("kwargs,shape", [(SCRIPT_CASES[1][0], (2, 1, 64, 96)),
                                          (SCRIPT_CASES[2][0], (2, 4, 40, 64, 36))], ids=["2d", "3d"])
def test_onnx_dynamo_exporter(kwargs, shape, tmp_path):
    """PyTorch's default exporter (torch.export), from an example of batch 2 with sides over 32."""
    net = trained(**kwargs)
    path = tmp_path / "model.onnx"
    convert_to_onnx(net, [torch.randn(*shape)], input_names=["x"], output_names=["y"],
                    dynamic_axes=dynamic_axes(net.spatial_dims), filename=str(path), verify=True, device="cpu",
                    use_ort=True, rtol=ONNX_RTOL, atol=ONNX_ATOL, use_trace=False)
    d = net.spatial_dims
    check_onnx_runtime(path, net, [(1, net.in_channels) + (32,) * d, (3, net.in_channels) + (45, 70, 33)[:d],
                                   (1, net.in_channels) + (1,) * d])


def test_export_onnx_dynamic_batch_and_size(tmp_path):
    net = trained(spatial_dims=2, in_channels=3, out_channels=2, features=UNEXT_S_FEATURES)
    path = export_onnx(net, tmp_path / "model.onnx", in_channels=3, spatial_dims=2)
    check_onnx_runtime(path, net, [(1, 3, 64, 64), (3, 3, 96, 160), (2, 3, 100, 77)])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_export_onnx_gives_the_pointwise_convolutions_as_convolutions(tmp_path):
    """The network computes its 1x1 convolutions as matrix products (faster in PyTorch); the ONNX file has them as
    Conv nodes, which OpenVINO fuses and runs in bfloat16 (a MatMul over the map ran in float32, between reorders)."""
    import onnx

    net = trained(spatial_dims=2, in_channels=3, out_channels=1, features=UNEXT_S_FEATURES)
    graph = onnx.load(export_onnx(net, tmp_path / "model.onnx", in_channels=3)).graph
    kernels = {t.name: list(t.dims[2:]) for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    pointwise = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    assert pointwise == 9 and "MatMul" not in ops and "Gemm" not in ops, ops
    assert sum(n.op_type == "Conv" and kernels.get(n.input[1]) == [1, 1] for n in graph.node) == pointwise


def test_export_onnx_zeroes_negligible_folded_constants(tmp_path):
    """BatchNorm folded into a convolution multiplies weights of 1e-15 by a scale of 1e-20: products that ONNX Runtime
    would compute as subnormal numbers, many times slower. The file has them as 0 and still matches PyTorch."""
    import onnx
    from onnx import numpy_helper

    net = trained(spatial_dims=2, in_channels=3, out_channels=1, features=UNEXT_S_FEATURES)
    with torch.no_grad():
        net.up_4.conv_up.conv.weight[:3] = 1e-15
        net.up_4.conv_up.norm.weight[:3] = 1e-20
    path = export_onnx(net, tmp_path / "model.onnx", in_channels=3, spatial_dims=2)
    constants = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer]
    assert not [c for c in constants if c.dtype.kind == "f" and ((c != 0) & (abs(c) < 1e-30)).any()]
    check_onnx_runtime(path, net, [(1, 3, 64, 64)])


@pytest.mark.slow
def test_torch_compile_at_a_second_size():
    """``torch.compile`` captures the whole network as one graph (``fullgraph``: no graph break), and the second size
    recompiles with dynamic shapes. The backend is ``aot_eager``: TorchDynamo's capture and AOTAutograd as the default
    inductor backend gets them, without inductor's C++ code generation (torch's own concern, and two minutes of
    compiling on a cold cache: most of this suite's time)."""
    net = trained(spatial_dims=2, in_channels=1, out_channels=2, features=UNEXT_S_FEATURES)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for shape in [(2, 1, 33, 47), (2, 1, 64, 50)]:
            x = torch.randn(*shape)
            out = compiled(x)
            assert out.is_contiguous()
            torch.testing.assert_close(out, net(x), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_torch_export_with_dynamic_dimensions():
    """Batch and sides dynamic (sides multiples of 32, from 64: torch.export specialises maps of one pixel, which
    the bottleneck has at sides of 32); the program runs at other batches and sizes."""
    from torch.export import Dim, export

    net = trained(spatial_dims=2, in_channels=3, out_channels=2, features=UNEXT_S_FEATURES)
    dims = {0: Dim("batch", min=1, max=64), 2: 32 * Dim("h", min=2, max=64), 3: 32 * Dim("w", min=2, max=64)}
    program = export(net, (torch.randn(2, 3, 64, 96),), dynamic_shapes={"x": dims}).module()
    with torch.no_grad():
        for shape in [(1, 3, 64, 64), (3, 3, 160, 96)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(program(x), net(x), rtol=0, atol=1e-5)
