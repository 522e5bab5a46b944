"""CPU inference speed of the released bundles' own files (bundle/NAME/models/), against the same files at an
earlier git revision: what a user of each release gets, trained weights included.

Run from the repository root, the machine otherwise idle::

    .venv/bin/python benchmarks/released_speed.py --before-rev HEAD~1

For each bundle and each revision (``--before-rev`` and the working tree): ``model.ts`` (``torch.jit.load``),
``model.onnx`` (ONNX Runtime, CPUExecutionProvider) and the eager network (``unext_monai.UNeXt`` with ``model.pt``
put in by ``load_state_dict``, as a script would, so the weights are used as stored). Batch 1, 256x256, one thread
(``torch.set_num_threads(1)``, ONNX Runtime intra-op threads 1, no spinning), ``torch.inference_mode()``; all cells
run round-robin (one forward each, in turn) for ``--runs`` rounds after ``--warmup``; median and 10th-90th
percentiles in milliseconds. Beside each file: its count of subnormal weight values (nonzero, below 1.2e-38) and of
values below 1e-30, whose products are subnormal: float32 arithmetic on subnormal numbers is many times slower on
x86 CPUs.

Writes ``benchmarks/results/released_speed.json`` and ``benchmarks/results/released_speed.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unext_monai import UNeXt  # noqa: E402
from unext_monai.io import write_json_atomic  # noqa: E402
from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT, negligible_values  # noqa: E402

BUNDLES = ("unext_isic2018", "unext_busi")


def _file(rev: str | None, rel: str) -> bytes:
    if rev is None:
        return (ROOT / rel).read_bytes()
    return subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout


def _below(tensors, bound: float | None = None) -> int:
    """How many values of the floating-point ``tensors`` are nonzero and below ``bound`` (default: subnormal)."""
    return sum(int(negligible_values(t, bound or torch.finfo(t.dtype).tiny).sum())
               for t in tensors if t.is_floating_point())


def _version(rev: str | None, name: str) -> str:
    return json.loads(_file(rev, f"bundle/{name}/configs/metadata.json"))["version"]


def _runners(rev: str | None, name: str) -> dict[str, tuple]:
    """``{path: (forward callable, its weight tensors)}`` for the bundle's three files at ``rev``."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    models = f"bundle/{name}/models"
    state = torch.load(io.BytesIO(_file(rev, f"{models}/model.pt")), map_location="cpu", weights_only=True)
    eager = UNeXt(spatial_dims=2, in_channels=3, out_channels=1).eval()
    eager.load_state_dict(state)
    ts = torch.jit.load(io.BytesIO(_file(rev, f"{models}/model.ts")), map_location="cpu").eval()
    onnx_bytes = _file(rev, f"{models}/model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    graph = onnx.load_from_string(onnx_bytes).graph
    initializers = [torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer]
    return {
        "eager (model.pt)": (lambda x: eager(x), list(state.values())),
        "TorchScript (model.ts)": (lambda x: ts(x), list(ts.state_dict().values())),
        "ONNX Runtime (model.onnx)": (lambda x: session.run(None, {input_name: x.numpy()}), initializers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-rev", required=True, help="the git revision whose bundle files to compare with")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = subprocess.run(["git", "rev-parse", "--short", args.before_rev], cwd=ROOT, check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    cells = {}
    for name in BUNDLES:
        for label, rev in ((before, args.before_rev), ("working tree", None)):
            version = _version(rev, name)
            for path, (run, weights) in _runners(rev, name).items():
                counts = {"subnormal_values": _below(weights), "values_below_1e-30": _below(weights, NEGLIGIBLE_WEIGHT)}
                cells[(name, version, label, path)] = (run, counts, [])
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()
    with torch.inference_mode():
        for round_ in range(args.warmup + args.runs):
            for run, _, times in cells.values():
                start = time.perf_counter()
                run(x)
                if round_ >= args.warmup:
                    times.append((time.perf_counter() - start) * 1000)
    rows = []
    for (name, version, label, path), (_, counts, times) in cells.items():
        q10, q50, q90 = np.percentile(times, [10, 50, 90])
        rows.append({"bundle": name, "version": version, "revision": label, "file": path, **counts,
                     "median_ms": round(float(q50), 2), "p10_ms": round(float(q10), 2), "p90_ms": round(float(q90), 2)})
    machine = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "onnxruntime": __import__("onnxruntime").__version__, "load_before": [round(v, 2) for v in load_before],
               "load_after": [round(v, 2) for v in os.getloadavg()]}
    command = f"python benchmarks/released_speed.py --before-rev {before} --runs {args.runs}"
    result = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine, "rows": rows}
    out = Path(args.out_dir)
    write_json_atomic(out / "released_speed.json", result)
    lines = ["# CPU inference speed of the released bundles", "",
             f"`{command}` ({result['date']}): batch 1, 256x256, one thread, {args.runs} rounds round-robin after "
             f"{args.warmup} warm-up rounds; median (10th-90th percentile) ms. torch {machine['torch']}, ONNX Runtime "
             f"{machine['onnxruntime']}, {machine['cpus']} CPUs; load average before {machine['load_before']}, after "
             f"{machine['load_after']}. Values counted: nonzero and below 1.2e-38 (subnormal) or 1e-30 (what the "
             "release and the checkpoint loader set to 0: `unext_monai.networks.weights.zero_negligible_weights`).",
             "", "| bundle | version (revision) | file | subnormal values | values below 1e-30 | ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bundle']} | {r['version']} ({r['revision']}) | {r['file']} | {r['subnormal_values']} | "
                     f"{r['values_below_1e-30']} | {r['median_ms']:.1f} ({r['p10_ms']:.1f}-{r['p90_ms']:.1f}) |")
    (out / "released_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
