"""Inferers: the exported network on a CPU inference engine, and flip test-time augmentation."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from unext_monai import UNeXt, inferers
from unext_monai.inferers import EngineInferer, FlipTTAInferer, native_bf16


@pytest.fixture(scope="module")
def net() -> UNeXt:
    torch.manual_seed(0)
    return UNeXt(2, 3, 1, features=(8, 16, 32, 64, 128)).eval()


def test_flip_tta_is_the_mean_over_flipped_passes(net: UNeXt) -> None:
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        y = FlipTTAInferer()(x, net)
        expected = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(3)).flip(3) + net(x.flip(2, 3)).flip(2, 3)) / 4
    assert torch.allclose(y, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(FlipTTAInferer(flips=[[]])(x, net), net(x))
    with pytest.raises(ValueError, match="at least one pass"):
        FlipTTAInferer(flips=[])


@pytest.fixture(scope="module")
def engine_net() -> UNeXt:
    """A small UNeXt whose logits span a few units around the threshold, as a trained network's do."""
    torch.manual_seed(1)
    net = UNeXt(2, 3, 1, features=(8, 16, 32, 64, 128)).eval()
    with torch.no_grad():
        net.final_conv.weight.mul_(100.0)
        net.final_conv.bias.zero_()
    return net


@pytest.fixture(scope="module")
def onnx_file(engine_net: UNeXt, tmp_path_factory) -> str:
    from unext_monai.networks.export import export_onnx

    return export_onnx(engine_net, tmp_path_factory.mktemp("engine") / "model.onnx", in_channels=3)


def _engine_log(caplog, *args, **kwargs) -> tuple[EngineInferer, list[logging.LogRecord]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unext_monai"):
        inferer = EngineInferer(*args, **kwargs)
    return inferer, [r for r in caplog.records if r.name == "unext_monai"]


@pytest.mark.parametrize("engine", ["fp32", "bf16"])
def test_engine_gives_the_mask_of_the_fp32_network(engine_net: UNeXt, onnx_file: str, engine: str) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    inferer = EngineInferer(onnx_file, engine, spatial_size=[64, 64])
    bf16 = engine == "bf16" and native_bf16()
    assert inferer.name.startswith("OpenVINO" if bf16 else "ONNX Runtime") and inferer.name.endswith(engine * bf16)
    with torch.no_grad():
        expected = engine_net(x)
        y = inferer(x, engine_net)
        again = inferer(x, engine_net)  # after the first call's check
    assert y.shape == expected.shape and y.dtype == torch.float32 and torch.equal(y, again)
    tolerance = float(expected.abs().max()) * (0.05 if bf16 else 1e-5)  # bf16 rounding; fp32: the same function
    assert float((y - expected).abs().max()) < tolerance
    sure = expected.abs() > tolerance  # the same mask wherever fp32 is not within that rounding of the threshold
    assert torch.equal((y > 0)[sure], (expected > 0)[sure]) and float(sure.float().mean()) > 0.5


def test_engine_bf16_keeps_the_first_convolution_in_fp32_and_the_second_s_weights_in_two_parts(onnx_file: str) -> None:
    ov = pytest.importorskip("openvino")
    if not native_bf16():
        pytest.skip("no native bfloat16 on this CPU")
    core = ov.Core()
    model = inferers._precise_start(core, core.read_model(onnx_file))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    convolutions = [op.get_rt_info()["runtimePrecision"].astype(str)
                    for op in compiled.get_runtime_model().get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert convolutions[0] == "f32" and set(convolutions[1:]) == {"bf16"}, convolutions
    first, second = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"][:2]
    weights = second.input_value(1).get_node().get_data()
    assert weights.shape[1] == 2 * first.get_output_partial_shape(0)[1].get_length()  # its input, twice
    high, low = np.split(weights, 2, axis=1)
    assert not (high.view(np.uint32) & 0xFFFF).any()  # bfloat16 holds the high part exactly
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ours, plain = (core.compile_model(m, "CPU", f32)({0: x})[0] for m in (model, core.read_model(onnx_file)))
    assert np.abs(ours - plain).max() <= 1e-5 * np.abs(plain).max()  # the same function: the parts add up


def test_engine_falls_back_with_one_line_when_not_installed(engine_net: UNeXt, onnx_file: str, caplog,
                                                            monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails
    inferer, lines = _engine_log(caplog, onnx_file, "bf16")
    if native_bf16():
        assert inferer.name.startswith("ONNX Runtime") and len(lines) == 1 and lines[0].levelno == logging.WARNING
        assert "openvino is not installed" in lines[0].getMessage()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    inferer, lines = _engine_log(caplog, onnx_file, "fp32")
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    hint = "is not installed (pip install onnxruntime openvino)"
    assert lines[0].getMessage() == f"inference: PyTorch network; onnxruntime {hint}; openvino {hint}"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(inferer(x, engine_net), engine_net(x))


def test_engine_bf16_without_native_bf16_runs_fp32(engine_net: UNeXt, onnx_file: str, caplog, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(inferers, "native_bf16", lambda: False)
    inferer, lines = _engine_log(caplog, onnx_file, "bf16")
    assert inferer.name.startswith("ONNX Runtime") and inferer.name.endswith("fp32")
    assert len(lines) == 1 and "no native bfloat16 on this CPU" in lines[0].getMessage()


def test_engine_setting_forces_either_path(engine_net: UNeXt, onnx_file: str, caplog, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 64, 64)
    inferer, lines = _engine_log(caplog, onnx_file, "pytorch")
    assert inferer.name == "PyTorch network" and len(lines) == 1
    with torch.no_grad():
        assert torch.equal(inferer(x, engine_net), engine_net(x))
    assert EngineInferer(onnx_file, "fp32").name.startswith("ONNX Runtime")
    inferer, lines = _engine_log(caplog, tmp_path / "none.onnx", "fp32")
    assert inferer.name == "PyTorch network" and "does not exist" in lines[0].getMessage()
    with pytest.raises(ValueError, match="engine must be one of"):
        EngineInferer(onnx_file, "tensorrt")


def test_engine_that_disagrees_with_the_network_gives_way(engine_net: UNeXt, onnx_file: str, caplog) -> None:
    pytest.importorskip("onnxruntime")
    other = UNeXt(2, 3, 1, features=(8, 16, 32, 64, 128)).eval()  # other weights than the exported ones
    with torch.no_grad():
        other.final_conv.bias.fill_(5.0)
    inferer = EngineInferer(onnx_file, "fp32")
    x = torch.rand(1, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="unext_monai"), torch.no_grad():
        assert torch.equal(inferer(x, other), other(x))
        assert torch.equal(inferer(x, other), other(x))
    assert inferer.name == "PyTorch network" and "disagrees with the network" in caplog.text
    tuned = UNeXt(2, 3, 1, features=(8, 16, 32, 64, 128)).eval()  # fine-tuned since the export: the same masks
    tuned.load_state_dict(engine_net.state_dict())
    with torch.no_grad():
        tuned.final_conv.weight.mul_(1.01)
    inferer = EngineInferer(onnx_file, "fp32")
    with torch.no_grad():
        assert torch.equal(inferer(x, tuned), tuned(x)) and inferer.run is None


def test_engine_keeps_the_metadata_of_a_batch(engine_net: UNeXt, onnx_file: str) -> None:
    """A collated batch of MetaTensors (``inference.json`` with ``dataloader#batch_size`` over 1) comes back with its
    items' metadata, so that ``Invertd`` restores each picture's size."""
    pytest.importorskip("onnxruntime")
    from monai.data import MetaTensor, decollate_batch, list_data_collate

    items = [{"image": MetaTensor(torch.rand(3, 64, 64), meta={"filename_or_obj": f"{i}.png"})} for i in range(3)]
    batch = list_data_collate(items)["image"]
    with torch.no_grad():
        out = EngineInferer(onnx_file, "fp32")(batch, engine_net)
        assert torch.allclose(out, engine_net(batch.as_tensor()), atol=1e-4)
    assert isinstance(out, MetaTensor) and out.is_batch
    assert [d.meta["filename_or_obj"] for d in decollate_batch(out)] == ["0.png", "1.png", "2.png"]


def test_flip_tta_runs_its_passes_through_an_engine(engine_net: UNeXt, onnx_file: str) -> None:
    pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = FlipTTAInferer(inferer=EngineInferer(onnx_file, "fp32"))(x, engine_net)
        assert torch.allclose(y, FlipTTAInferer()(x, engine_net), atol=1e-4)
