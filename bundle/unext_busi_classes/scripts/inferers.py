"""Inferers MONAI lacks for inference: the exported network through a CPU inference engine, and flip test-time
augmentation (:mod:`unext_monai.autocast` has the training's)."""

from __future__ import annotations

import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import SimpleInferer
from monai.utils import convert_to_dst_type

__all__ = ["EngineInferer", "ENGINES", "FlipTTAInferer", "native_bf16"]

logger = logging.getLogger(__name__.split(".")[0])


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    return any(getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)() for isa in ("avx512_bf16", "amx_tile"))


#: the ``engine`` settings of :class:`EngineInferer`
ENGINES = ("fp32", "bf16", "pytorch")


def _precise_start(core: Any, model: Any, f32: int = 1, split: int = 1) -> Any:
    """``model`` for bfloat16 (8 significant bits: ``benchmarks/results/engine_accuracy.md``): its first ``f32``
    convolutions in float32 (marked ``precise`` in its IR, which OpenVINO keeps; its Python API cannot mark a node), the
    next ``split`` reading their input twice, by each weight's bfloat16 part and by the rest: 16 bits at bf16 speed."""
    import openvino as ov

    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    for conv in convs[f32:f32 + split]:
        w, x = conv.input_value(1).get_node().get_data(), conv.input_value(0)
        high = (w.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        conv.input(0).replace_source_output(ov.opset13.concat([x, x], 1).output(0))
        conv.input(1).replace_source_output(ov.opset13.constant(np.concatenate([high, w - high], 1)).output(0))
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, os.path.join(tmp, "m.xml"), compress_to_fp16=False)
        ir = ET.parse(os.path.join(tmp, "m.xml")).getroot()
        for layer in (e for e in ir.iter("layer") if e.get("name") in [c.get_friendly_name() for c in convs[:f32]]):
            ET.SubElement(ET.SubElement(layer, "rt_info"), "attribute", name="precise", version="0")
        return core.read_model(ET.tostring(ir), ov.Tensor(np.fromfile(os.path.join(tmp, "m.bin"), np.uint8)))


def _openvino(model_file: str, precision: str, threads: int, size: Sequence[int] | None) -> tuple[str, Callable]:
    import openvino as ov

    core, precision = ov.Core(), {"fp32": "f32"}.get(precision, precision)
    model = _precise_start(core, core.read_model(model_file)) if precision == "bf16" else core.read_model(model_file)
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "CPU_DENORMALS_OPTIMIZATION": True}
    requests: dict[Any, Any] = {}  # one static shape each where the size is fixed: OpenVINO folds the shape arithmetic

    def run(x: np.ndarray) -> np.ndarray:
        key = x.shape if size else None
        if key not in requests:
            model.reshape(list(x.shape) if size else [-1, x.shape[1], *[-1] * (x.ndim - 2)])
            requests[key] = core.compile_model(model, "CPU", config).create_infer_request()
        return requests[key].infer({0: x})[0]

    run(np.zeros((1, model.inputs[0].partial_shape[1].get_length(), *(size or [64, 64])), np.float32))  # compiled
    return f"OpenVINO {ov.__version__.split('-')[0]} {precision}", run


def _onnxruntime(model_file: str, precision: str, threads: int, size: Sequence[int] | None) -> tuple[str, Callable]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy waiting on shared CPUs
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # its pool threads; the caller's below
    torch.set_flush_denormal(True)  # weights that weight decay drove near 0 give subnormal products: slow on x86
    for i, side in enumerate(size or []):  # export_onnx's names of the dynamic sides
        options.add_free_dimension_override_by_name(f"spatial_{i}", int(side))
    session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return f"ONNX Runtime {ort.__version__} fp32", lambda x: session.run(None, {name: x})[0]


class EngineInferer(SimpleInferer):
    """``SimpleInferer`` that runs the exported network (``model.onnx``) through a CPU inference engine (MONAI's
    inferers only call the network), chosen and loaded once, here: ``"fp32"``: ONNX Runtime in float32 (OpenVINO where
    only it is installed); ``"bf16"``: OpenVINO in bfloat16 (its start more precise: :func:`_precise_start`) on CPUs
    that compute it natively (AVX-512 BF16, AMX), ``"fp32"`` elsewhere; ``"pytorch"``: the network. A missing engine
    or file falls back (ONNX Runtime, then the network) with one log line saying why. The first output is checked
    against the network's: if the lesion masks disagree (Dice under 0.99) or float32 logits differ beyond rounding,
    the network runs from then on, with a warning. CUDA inputs, other sizes than ``spatial_size`` and calls with extra
    arguments go to the network.

    Args:
        model_file: the ONNX file exported from the network (:func:`unext_monai.networks.export.export_onnx`).
        engine: one of :data:`ENGINES`; ``threads``: the engine's (default ``torch.get_num_threads()``).
        spatial_size: the one input size the engine will see (the bundle's resized input), or None for any size.
    """

    def __init__(self, model_file: str, engine: str = "fp32", spatial_size: Sequence[int] | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        self.spatial_size = list(spatial_size) if spatial_size else None
        self.name, self.run, self.checked = "PyTorch network", None, False
        why = ["no native bfloat16 on this CPU"] if engine == "bf16" and not native_bf16() else []
        tries = [(_openvino, "bf16")] if engine == "bf16" and not why else []
        if engine != "pytorch":
            tries += [(_onnxruntime, "fp32"), (_openvino, "fp32")]
            if not os.path.isfile(str(model_file)):
                tries, why = [], why + [f"{model_file} does not exist"]
        missing = False
        for load, precision in tries:
            try:
                self.name, self.run = load(str(model_file), precision, threads or torch.get_num_threads(),
                                           self.spatial_size)
                break
            except ImportError:
                missing = True
                why.append(f"{load.__name__[1:]} is not installed (pip install onnxruntime openvino)")
        (logger.warning if missing else logger.info)(f"inference: {self.name}" + (f"; {'; '.join(why)}" * bool(why)))

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        size_ok = self.spatial_size is None or list(inputs.shape[2:]) == self.spatial_size
        if self.run is None or inputs.device.type != "cpu" or args or kwargs or not size_ok:
            return network(inputs, *args, **kwargs)
        x = np.ascontiguousarray(inputs.as_subclass(torch.Tensor).detach().float().cpu().numpy())  # no MetaTensor ops
        out = torch.from_numpy(np.asarray(self.run(x), dtype=np.float32))
        if not self.checked:
            self.checked = True
            ref = torch.as_tensor(network(inputs)).detach().cpu().float()
            a, b = (out > 0, ref > 0) if out.shape[1] == 1 else (out.argmax(1) > 0, ref.argmax(1) > 0)  # lesion
            dice = 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum())) if a.any() or b.any() else 1.0
            diff = float((out - ref).abs().max())  # float32 engines compute the network's function to rounding
            if dice < 0.99 or ("bf16" not in self.name and diff > 1e-3 * (1 + float(ref.abs().max()))):
                logger.warning(f"inference: {self.name} disagrees with the network on the first input (mask Dice "
                               f"{dice:.4f}, logits up to {diff:.3g} apart): using the PyTorch network")
                self.name, self.run = "PyTorch network", None
                return network(inputs)
        return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # a MetaTensor input's metadata (a batch's too)


class FlipTTAInferer(SimpleInferer):
    """The mean of the logits over copies of the input (B, C, *spatial) flipped along ``flips`` (axes per pass, ``()``
    as is), each run by ``inferer`` (default: the network) and flipped back. Deterministic, so it slots in where
    ``SimpleInferer`` does (MONAI's ``TestTimeAugmentation`` draws random transforms)."""

    def __init__(self, flips: Sequence[Sequence[int]] = ((), (0,), (1,), (0, 1)), inferer: Any = None) -> None:
        super().__init__()
        self.inferer = inferer or SimpleInferer()  # each pass, e.g. through an EngineInferer
        self.flips = [tuple(int(a) for a in f) for f in flips]
        if not self.flips:
            raise ValueError("flips must name at least one pass, e.g. [[], [0], [1]]")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for axes in self.flips:
            dims = [2 + a for a in axes]
            x = torch.flip(inputs, dims) if dims else inputs
            y = self.inferer(x, network, *args, **kwargs)
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"FlipTTAInferer needs a network that returns one tensor, got {type(y).__name__}")
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        return total / len(self.flips)
