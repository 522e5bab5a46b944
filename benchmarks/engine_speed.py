"""CPU speed of the released model through each inference path, as ratios to the paper's code through ONNX Runtime in
the same rounds: the targets of the fast CPU inference issue.

Run from the repository root::

    .venv/bin/python benchmarks/engine_speed.py                  # 1 and 2 threads, batch 1 and 8
    .venv/bin/python benchmarks/engine_speed.py --runs 5         # a smoke run

Paths, all on one input of 256x256 (random, seeded), per thread count and batch, each made in a process of its own
and alternating call by call with the reference alone (``--runs`` rounds after 3 warm-up rounds; with all paths in
one process, in turn, each call found the caches filled by the others: slower by up to 0.05 of the reference, as a
deployment, which runs one engine, is not): median milliseconds per call, and the median
over the rounds of the path's time divided by the reference's in the same round (robust to the load of a shared
machine, which drifts slower than a round):

- the paper's code through ONNX Runtime (the reference, 1.00): the straightforward UNeXt of ``benchmarks/speed.py``
  (the paper's code structure: token layout, pad/chunk/roll shift, its module names) with its BatchNorm statistics
  set by a few training passes, exported with ``torch.onnx.export``;
- the released ``models/model.onnx`` through ONNX Runtime as a plain session (the released files as a user ran
  them, subnormal numbers computed as such), and through :class:`unext_monai.inferers.EngineInferer` ``fp32``
  (ONNX Runtime, subnormals as 0, the bundle's static size) and ``bf16`` (OpenVINO bfloat16 where the CPU computes
  it natively; the first convolution in float32), and OpenVINO f32; bf16 with the other choices of precise
  convolutions of ``engine_accuracy.LADDER`` (their accuracy: ``engine_accuracy.py``), for what precision costs;
- the released ``models/model.ts`` (TorchScript) in float32;
- post-training int8 of ``model.onnx``, calibrated on ``--calibration`` pictures (the first 100 found, resized to
  256x256): ONNX Runtime's static QDQ quantization (per-channel int8 weights, uint8 activations; VNNI/AMX kernels
  where the CPU has them) and, where ``nncf`` is installed, OpenVINO's (NNCF ``quantize``; the other layers bf16
  where native).

Every result names the CPU and its bf16/int8 flags. Writes ``benchmarks/results/engine_speed_<cpu>.json`` and
``.md``: one file per CPU measured.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_accuracy import LADDER, cpu_line  # noqa: E402
from speed import StraightforwardUNeXt, ort_session, trained_bn  # noqa: E402

from unext_monai import inferers  # noqa: E402

REFERENCE = "paper's code, ONNX Runtime"


def paper_onnx(path: str) -> str:
    torch.manual_seed(0)
    net = trained_bn(StraightforwardUNeXt(), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.rand(2, 3, 256, 256), path, input_names=["image"], output_names=["pred"],
                          dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}}, opset_version=18, dynamo=False)
    return path


def calibration(folder: Path, n: int = 100) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:n] if folder.is_dir() else []
    return [(np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR), dtype=np.float32)
             .transpose(2, 0, 1)[None] / 255).copy() for f in files]


def int8_makers(onnx_file: str, folder: Path, threads: int, workdir: str) -> list:
    """``model.onnx`` quantized after training to int8 by ONNX Runtime and, where nncf is installed, OpenVINO, each
    calibrated on the pictures of ``folder`` (none where it holds none)."""
    if not calibration(folder, 1):
        return []

    def onnxruntime_int8():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(calibration(folder))

            def get_next(self):
                x = next(self.items, None)
                return None if x is None else {"image": x}

        path = os.path.join(workdir, f"int8_{threads}.onnx")
        quantize_static(onnx_file, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        session = ort_session(path, threads)
        return "model.onnx, ONNX Runtime int8 (static QDQ)", lambda x: session.run(None, {"image": x})

    def openvino_int8():
        import nncf
        import openvino as ov
        from openvino._offline_transformations import apply_moc_transformations

        core = ov.Core()
        model = core.read_model(onnx_file)
        model.reshape([-1, 3, 256, 256])
        apply_moc_transformations(model, cf=True)  # folds the weights' reshapes, which NNCF needs constant
        pictures = calibration(folder)
        quantized = nncf.quantize(model, nncf.Dataset(pictures), subset_size=len(pictures))
        hint = "bf16" if inferers.native_bf16() else "f32"
        request = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                         "INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        return f"model.onnx, OpenVINO int8 (NNCF, rest {hint})", lambda x: request.infer({0: x})

    return [onnxruntime_int8] + ([openvino_int8] if importlib.util.find_spec("nncf") else [])


def _no_onnxruntime(*args):
    raise ImportError  # as where only OpenVINO is installed


def path_makers(models: Path, threads: int, workdir: str, pictures: Path) -> list:
    """The paths as makers of ``(name, function of the input)``, the reference first: each path is made in the
    process that times it."""
    onnx_file, size = str(models / "model.onnx"), [256, 256]

    def reference():
        paper = ort_session(os.path.join(workdir, "paper.onnx"), threads)
        return REFERENCE, lambda x: paper.run(None, {"image": x})

    def as_released():  # subnormals computed as such, as before the engine inferer
        plain = ort_session(onnx_file, threads)

        def run(x: np.ndarray):
            torch.set_flush_denormal(False)
            try:
                return plain.run(None, {"image": x})
            finally:
                torch.set_flush_denormal(True)

        return "model.onnx, ONNX Runtime (plain session)", run

    def engine(kind: str, f32: int = 1, split: int = 1, label: str = "", no_onnxruntime: bool = False):
        precise = functools.partial(inferers._precise_start, f32=f32, split=split)
        with mock.patch.object(inferers, "_precise_start", precise), contextlib.ExitStack() as stack:
            if no_onnxruntime:
                stack.enter_context(mock.patch.object(inferers, "_onnxruntime", _no_onnxruntime))
            inferer = inferers.EngineInferer(onnx_file, kind, size, threads)
        name = f"model.onnx, {inferer.name}" + (f", {label} (not offered)" if label else "")
        return (name if label or no_onnxruntime else f"model.onnx, EngineInferer {kind}: {inferer.name}"), inferer.run

    def torchscript():
        ts = torch.jit.load(str(models / "model.ts"), map_location="cpu").eval()
        return "model.ts, TorchScript fp32", lambda x: ts(torch.from_numpy(x))

    makers = [reference, as_released, functools.partial(engine, "fp32"), functools.partial(engine, "bf16")]
    if inferers.native_bf16():  # what the precise convolutions cost
        makers += [functools.partial(engine, "bf16", f32, split, name) for name, f32, split in LADDER]
    makers.append(functools.partial(engine, "fp32", no_onnxruntime=True))  # OpenVINO f32
    return makers + int8_makers(onnx_file, pictures, threads, workdir) + [torchscript]


def time_beside_reference(maker, reference, threads: int, batches: list[int], runs: int) -> list[dict]:
    """Rows of the path ``maker`` makes, timed alternating call by call with the reference's."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    (name, run), ref = maker(), reference()[1]
    rows = []
    for batch in batches:
        x = np.random.default_rng(0).random((batch, 3, 256, 256), dtype=np.float32)
        times, refs = [], []
        with torch.inference_mode():
            for r in range(3 + (max(5, runs // batch * 2) if batch > 1 else runs)):
                start = time.perf_counter()
                ref(x)
                middle = time.perf_counter()
                run(x)
                if r >= 3:
                    refs.append(middle - start)
                    times.append(time.perf_counter() - middle)
        med = statistics.median(times)
        rows.append({"path": name, "threads": threads, "batch": batch, "median_ms": med * 1e3,
                     "images_per_s": batch / med, "ratio": statistics.median(a / b for a, b in zip(times, refs)),
                     "ratio_of_medians": med / statistics.median(refs), "runs": len(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "bundle" / "unext_isic2018" / "models")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--calibration", type=Path,
                        default=ROOT.parent / "shared" / "data" / "isic2018" / "ISIC2018_Task1-2_Training_Input",
                        help="pictures to calibrate int8 with (int8 is left out where there are none)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cpu = cpu_line()
    if args.child is not None:  # one path, in a process of its own
        makers = path_makers(args.models, args.threads[0], args.workdir, args.calibration)
        rows = time_beside_reference(makers[args.child], makers[0], args.threads[0], args.batches, args.runs)
        print("ROWS " + json.dumps(rows))
        return
    rows, load = [], [os.getloadavg()]
    with tempfile.TemporaryDirectory() as workdir:
        paper_onnx(os.path.join(workdir, "paper.onnx"))
        for threads in args.threads:
            for i in range(len(path_makers(args.models, threads, workdir, args.calibration))):
                command = [sys.executable, __file__, "--child", str(i), "--threads", str(threads), "--batches",
                           *map(str, args.batches), "--runs", str(args.runs), "--models", str(args.models),
                           "--calibration", str(args.calibration), "--workdir", workdir]
                out = subprocess.run(command, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(out.stderr)
                rows += json.loads(next(line[5:] for line in out.stdout.splitlines() if line.startswith("ROWS ")))
                print(f"[{cpu}] {threads} thread(s), load {os.getloadavg()}: " + "; ".join(
                    f"{r['path']} batch {r['batch']} {r['median_ms']:.2f} ms {r['ratio']:.2f}" for r in rows[-2:]),
                    flush=True)
    load.append(os.getloadavg())
    slug = re.sub(r"\W+", "_", cpu.split(";")[0]).strip("_").lower()
    result = {"command": "python benchmarks/engine_speed.py " + " ".join(sys.argv[1:]), "cpu": cpu,
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "logical_cpus": os.cpu_count(),
              "load_average": [[round(v, 2) for v in la] for la in load], "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"engine_speed_{slug}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    cells = sorted({(r["threads"], r["batch"]) for r in rows})
    lines = ["# Inference paths on this CPU, as ratios to the paper's code through ONNX Runtime", "",
             f"`{result['command']}` ({result['date']}); CPU: {cpu}; {result['logical_cpus']} logical CPUs; torch "
             f"{result['torch']}; load average before {result['load_average'][0]}, after {result['load_average'][1]}. "
             "256x256; each path alternating call by call with the reference; median ms per call (median over the "
             "rounds of the ratio to the reference's time in the same round).", "",
             "| path | " + " | ".join(f"{t} thread{'s' * (t > 1)}, batch {b}" for t, b in cells) + " |",
             "|---|" + "---|" * len(cells)]
    for name in dict.fromkeys(r["path"] for r in rows):
        row = {(r["threads"], r["batch"]): r for r in rows if r["path"] == name}
        lines.append(f"| {name} | " + " | ".join(
            f"{row[c]['median_ms']:.1f} ({row[c]['ratio']:.2f})" if c in row else "-" for c in cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
