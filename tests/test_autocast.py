"""Autocast: bf16 on the CPU with float32 outputs, and the default precision of a device."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from unext_monai import UNeXt
from unext_monai.autocast import AutocastInferer, default_precision
from unext_monai.inferers import native_bf16


@pytest.fixture(scope="module")
def net() -> UNeXt:
    torch.manual_seed(0)
    return UNeXt(2, 3, 1, features=(8, 16, 32, 64, 128)).eval()


def test_fp32_is_simple_inferer(net: UNeXt) -> None:
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(AutocastInferer("fp32")(x, net), SimpleInferer()(x, net))


def test_bf16_runs_in_bf16_and_returns_float32(net: UNeXt) -> None:
    x = torch.rand(2, 3, 64, 64)
    seen = []
    hook = net.down_1.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.no_grad():
            y = AutocastInferer("bf16")(x, net)
            reference = net(x)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]
    assert y.dtype == torch.float32 and y.shape == reference.shape
    assert float((y - reference).abs().max()) < 0.1  # bf16 rounding, not another function


def test_bf16_deep_supervision_outputs_are_float32_and_train() -> None:
    net = UNeXt(2, 1, 2, features=(8, 16, 32, 64, 128), deep_supervision=True).train()
    outputs = AutocastInferer("bf16")(torch.rand(2, 1, 64, 64), net)
    assert isinstance(outputs, list) and all(o.dtype == torch.float32 for o in outputs)
    sum(o.mean() for o in outputs).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of \\['bf16', 'fp32'\\], got 'fp16'"):
        AutocastInferer("fp16")


def test_default_precision_follows_the_cpu() -> None:
    assert default_precision("cpu") == ("bf16" if native_bf16() else "fp32")
    assert default_precision("meta") == "fp32"
