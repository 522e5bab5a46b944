"""Where the time of an inference run goes: a packaged bundle's ``inference.json`` end to end per image (read,
preprocess, model, post-process, write mask and overlay) and the same steps timed one by one, beside the model alone.

Run from the repository root::

    .venv/bin/python benchmarks/pipeline_speed.py --bundle bundle/unext_isic2018 \\
        --images ../shared/data/isic2018/ISIC2018_Task1-2_Training_Input --n 40

``--threads`` (default 1: ``torch.set_num_threads``, the engine's threads too). For each ``--engine``: the whole
``evaluator.run()`` over ``--n`` pictures, ``--rounds`` times (outputs overwritten), per image; then, on the same
pictures, each step alone: the dataset item (read with ``LoadImaged``, channels, resize), collation, the inferer,
and every post-processing transform (sigmoid, ``Invertd`` back to the picture's size, threshold, writing the mask
and the overlay), and the paper's code through ONNX Runtime (``benchmarks/engine_speed.py``'s reference) after each
round. Also end to end at ``--batch_size`` and, with ``--thread_loader``, with MONAI's ``ThreadDataLoader``. Median
per image in milliseconds. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_accuracy import cpu_line  # noqa: E402
from monai.bundle import ConfigWorkflow  # noqa: E402
from monai.data import decollate_batch, list_data_collate  # noqa: E402


def workflow(bundle: Path, images: Path, out: Path, engine: str, **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="inference",
                        bundle_root=str(bundle), input_path=str(images),
                        output_dir=str(out / f"out_{engine}_{len(overrides)}_{hash(str(overrides))}"), engine=engine,
                        overwrite=True, **overrides)
    wf.initialize()
    return wf


def steps(wf: ConfigWorkflow) -> dict[str, float]:
    """Seconds per image of each step, over the run's pictures."""
    p = wf.parser.get_parsed_content
    dataset, inferer, network, post = p("dataset"), p("inferer"), p("network"), p("postprocessing")
    network.eval()
    names = ["read + preprocess", "collate", "model (inferer)", "decollate"]
    names += [type(t).__name__ for t in post.transforms]
    times = {n: 0.0 for n in names}
    with torch.inference_mode():
        for i in range(len(dataset)):
            t0 = time.perf_counter()
            item = dataset[i]
            t1 = time.perf_counter()
            batch = list_data_collate([item])
            t2 = time.perf_counter()
            batch["pred"] = inferer(batch["image"], network)
            t3 = time.perf_counter()
            d = decollate_batch(batch)[0]
            t4 = time.perf_counter()
            for n, dt in zip(names[:4], (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[n] += dt
            for t in post.transforms:
                s = time.perf_counter()
                d = t(d)
                times[type(t).__name__] += time.perf_counter() - s
    return {n: v / len(dataset) for n, v in times.items()}


def writing(images: Path, out: Path, rounds: int = 5) -> dict[str, float]:
    """Median ms per image of ``write_segmentation`` (mask and overlay) with its files flushed to disk (``fsync``, as
    before) and without (as the bundle writes them now), interleaved image by image."""
    from unittest import mock

    import numpy as np

    from unext_monai import io, transforms

    times = {"fsync": [], "no fsync": []}
    files = sorted(images.iterdir())
    for _ in range(rounds):
        for f in files:
            labels = np.zeros(transforms.read_picture(str(f)).shape[1:], dtype=np.uint8)
            labels[labels.shape[0] // 4: labels.shape[0] // 2, labels.shape[1] // 4: labels.shape[1] // 2] = 1
            for name in times:
                durable = name == "fsync"
                with mock.patch.object(transforms, "write_atomic", lambda p, w, durable=False, d=durable:
                                       io.write_atomic(p, w, durable=d)):
                    start = time.perf_counter()
                    transforms.write_segmentation(labels, str(f), str(out / "m.png"), str(out / "o.png"))
                    times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundle" / "unext_isic2018")
    parser.add_argument("--images", type=Path,
                        default=ROOT.parent / "shared" / "data" / "isic2018" / "ISIC2018_Task1-2_Training_Input")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["pytorch", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8, help="also end to end at this batch size (0: not)")
    parser.add_argument("--thread_loader", action="store_true",
                        help="also end to end with MONAI's ThreadDataLoader (loading on a second thread; not shipped: "
                        "an error in its thread ends the run without one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    previous = args.out.with_suffix(".json")  # the last run's figures, shown as "before"
    before = json.loads(previous.read_text()) if previous.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        for f in sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.n]:
            shutil.copy(f, images / f.name)
        sys.path.insert(0, str(args.bundle.resolve()))  # the bundle's scripts/, as MONAI runs it
        flows = {e: workflow(args.bundle.resolve(), images, tmp, e) for e in args.engines}
        batched = {e: workflow(args.bundle.resolve(), images, tmp, e, **{"dataloader#batch_size": args.batch_size})
                   for e in args.engines if args.batch_size > 1}
        threaded = {e: workflow(args.bundle.resolve(), images, tmp, e, **{"dataloader#_target_": "ThreadDataLoader"})
                    for e in args.engines if args.thread_loader}
        from engine_speed import ort_session, paper_onnx

        paper = ort_session(paper_onnx(str(tmp / "paper.onnx")), args.threads)
        x = np.random.default_rng(0).random((max(1, args.batch_size), 3, 256, 256), dtype=np.float32)
        reference, reference_batched = [], []
        runs, runs_batched, runs_threaded = {e: [] for e in flows}, {e: [] for e in batched}, {e: [] for e in threaded}
        split = {e: [] for e in flows}
        load = [os.getloadavg()]
        for _ in range(args.rounds):
            for e, wf in flows.items():
                start = time.perf_counter()
                wf.run()
                runs[e].append((time.perf_counter() - start) / args.n)
                split[e].append(steps(wf))
            for e, wf in batched.items():
                start = time.perf_counter()
                wf.run()
                runs_batched[e].append((time.perf_counter() - start) / args.n)
            for e, wf in threaded.items():
                start = time.perf_counter()
                wf.run()
                runs_threaded[e].append((time.perf_counter() - start) / args.n)
            for _ in range(args.n):  # the paper's code through ONNX Runtime, in the same rounds
                start = time.perf_counter()
                paper.run(None, {"image": x[:1]})
                reference.append(time.perf_counter() - start)
            for _ in range(args.n // max(1, args.batch_size) * bool(batched)):
                start = time.perf_counter()
                paper.run(None, {"image": x})
                reference_batched.append((time.perf_counter() - start) / len(x))
        written = writing(images, tmp)
        load.append(os.getloadavg())
    rows = {}
    for e in flows:
        rows[e] = {"end_to_end_ms": statistics.median(runs[e]) * 1e3,
                   "steps_ms": {k: statistics.median(s[k] for s in split[e]) * 1e3 for k in split[e][0]},
                   "engine": flows[e].parser.get_parsed_content("engine_inferer").name}
        if e in batched:
            rows[e]["end_to_end_batched_ms"] = statistics.median(runs_batched[e]) * 1e3
        if e in threaded:
            rows[e]["end_to_end_thread_loader_ms"] = statistics.median(runs_threaded[e]) * 1e3
    paper_ms = statistics.median(reference) * 1e3
    result = {"paper_onnxruntime_ms": paper_ms, "batch_size": args.batch_size}
    if batched:
        result["paper_onnxruntime_batched_ms"] = paper_batched_ms = statistics.median(reference_batched) * 1e3
    result |= {"command": "python benchmarks/pipeline_speed.py " + " ".join(sys.argv[1:]), "cpu": cpu_line(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "images": args.n,
              "rounds": args.rounds, "threads": args.threads,
              "load_average": [[round(v, 2) for v in la] for la in load], "rows": rows,
              "write_segmentation_ms": written, "before": before and {k: before[k] for k in
                                                                     ("command", "date", "load_average", "rows")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    names = list(next(iter(rows.values()))["steps_ms"])
    lines = ["# inference.json per image: end to end and its steps", "",
             f"`{result['command']}` ({result['date']}); CPU: {result['cpu']}; torch {result['torch']}; "
             f"{args.threads} thread(s); "
             f"{args.n} pictures, median of {args.rounds} rounds; load average before {result['load_average'][0]}, "
             f"after {result['load_average'][1]}. Milliseconds per image.", "",
             "| step | " + " | ".join(f"`--engine {e}` ({rows[e]['engine']})" for e in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{rows[e]['steps_ms'][n]:.2f}" for e in rows) + " |")
    lines.append("| sum of the steps | " + " | ".join(f"{sum(rows[e]['steps_ms'].values()):.2f}" for e in rows) + " |")
    lines.append("| **end to end (evaluator.run / images)** | "
                 + " | ".join(f"**{rows[e]['end_to_end_ms']:.2f}**" for e in rows) + " |")
    lines.append(f"| end to end / the paper's code through ONNX Runtime ({paper_ms:.2f} ms, same rounds) | "
                 + " | ".join(f"{rows[e]['end_to_end_ms'] / paper_ms:.2f}" for e in rows) + " |")
    lines.append("| end to end / model | " + " | ".join(
        f"{rows[e]['end_to_end_ms'] / rows[e]['steps_ms']['model (inferer)']:.2f}" for e in rows) + " |")
    if batched:
        lines.append(f"| end to end at batch {args.batch_size} (overlays read their picture again) | " + " | ".join(
            f"{rows[e]['end_to_end_batched_ms']:.2f}" for e in rows) + " |")
        lines.append(f"| the same / the paper's code at batch {args.batch_size} ({paper_batched_ms:.2f} ms an image) | "
                     + " | ".join(f"{rows[e]['end_to_end_batched_ms'] / paper_batched_ms:.2f}" for e in rows) + " |")
    if threaded:
        cells = " | ".join(f"{rows[e]['end_to_end_thread_loader_ms']:.2f}" for e in rows)
        lines.append("| end to end, batch 1, with MONAI's `ThreadDataLoader` (not shipped: an error in its thread ends "
                     f"the run as if done) | {cells} |")
    lines += ["", f"Writing the mask and the overlay (`write_segmentation`, interleaved, per image): "
              f"{written['fsync']:.2f} ms with each file flushed to disk (`fsync`, as before), "
              f"{written['no fsync']:.2f} ms without (as the bundle writes them now)."]
    if before:
        engines = [e for e in rows if e in before["rows"]]
        lines += ["", f"Before (the previous run of this file, {before['date']}, load average "
                  f"{before['load_average'][0]}; another run, so compare with care):", "",
                  "| engine | end to end before | now | model before | now | rest before | now |", "|---|" + "---|" * 6]
        for e in engines:
            b, n = before["rows"][e], rows[e]
            cells = [b["end_to_end_ms"], n["end_to_end_ms"], b["steps_ms"]["model (inferer)"],
                     n["steps_ms"]["model (inferer)"], b["end_to_end_ms"] - b["steps_ms"]["model (inferer)"],
                     n["end_to_end_ms"] - n["steps_ms"]["model (inferer)"]]
            lines.append(f"| {e} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
