"""How the training cache scales: peak memory, cache build time and training speed for 2,000 to 100,000 images.

Writes synthetic data sets of small pictures (``--size`` square RGB PNGs with 0/255 masks, UNeXt-pytorch layout)
under ``--work``, then trains ``configs/train.json`` on each, one process per run, run after run per size:

- ``memory``: the default budget (``cache_memory``: half the memory available at start), every item in RAM here;
- ``disk``: ``--cache_memory 0``, every item written to the disk cache (``cache_dir`` under ``--work``);
- ``disk, reused``: the same again, a later run reading the files the previous one wrote.

Each run: the split is given (the pre-flight check of every file, which is not the cache, is left out), 1% of the
images are the selection part, no validation (``val_interval`` beyond the run), two epochs of ``--steps`` batches of
8 at ``--size``, ``num_workers`` 0. Recorded per run: the peak resident set size (``VmHWM``), the RSS after the cache
is built, the build time of the training cache, and images/s of each epoch (first batch to last, the network's
forward and backward included). Then, per size, one more process trains the network alternately from the RAM cache
and the disk cache of the same items (``--rounds`` blocks of ``--steps`` batches each): the disk / RAM speed ratio
without the drift of a shared machine between runs. Writes ``benchmarks/results/cache_scaling.json`` and ``.md``::

    python benchmarks/cache_scaling.py                           # 2,000, 20,000 and 100,000 images of 64x64
    python benchmarks/cache_scaling.py --counts 2000 --steps 50  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from memory import _status_kib, _write

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ARMS = {"memory": {}, "disk": {"cache_memory": 0}, "disk, reused": {"cache_memory": 0}}


def make_dataset(folder: Path, count: int, size: int) -> Path:
    """``count`` distinct pictures (a gradient, noise and a disc; the pre-flight check would refuse twins) with their
    disc masks; kept when complete."""
    done = folder / f"complete_{count}_{size}"
    if done.exists():
        return folder
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks" / "0").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.1, 0.25) * size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        picture = np.stack([xx * 2 + i % 97, yy * 2 + i // 97 % 97, np.full_like(xx, i // 9409 * 7)], -1)
        picture = picture + rng.integers(0, 16, picture.shape) - disc[..., None] * 60
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(folder / "images" / f"case_{i:06d}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(folder / "masks" / "0" / f"case_{i:06d}.png")
    done.touch()
    return folder


def run_child(args: argparse.Namespace) -> dict:
    """One training run in this process; returns its measurements."""
    sys.path.insert(0, str(ROOT))  # this checkout's unext_monai
    import torch

    torch.set_num_threads(args.threads)
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from unext_monai.data import read_unext_pytorch

    items = read_unext_pytorch(args.dataset)
    n_sel = max(1, len(items) // 100)
    split_file = Path(args.bundle_root) / "given_split.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text(json.dumps({"training": items[n_sel:], "selection": items[:n_sel], "validation": []}))
    del items
    override = json.loads(args.override)
    settings = {"split": f"$__import__('json').load(open({str(split_file)!r}))", "max_epochs": 2,
                "val_interval": 1000, "spatial_size": [args.size, args.size], "cache_dir": args.cache_dir,
                "train#trainer#epoch_length": args.steps, **override}
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=str(CONFIGS / "logging.conf"), workflow_type="train", bundle_root=args.bundle_root,
                        **settings)
    wf.initialize()
    if args.interleaved:
        return run_interleaved(wf, args)
    rss0 = _status_kib("self", "VmRSS")
    start = time.perf_counter()
    wf.parser.get_parsed_content("train#dataset")
    build = time.perf_counter() - start
    rss_built = _status_kib("self", "VmRSS")
    trainer = wf.parser.get_parsed_content("train#trainer")
    marks: dict[int, list] = {}  # epoch: [end of its first batch, end of its last, batches after the first]

    @trainer.on(Events.ITERATION_COMPLETED)
    def _completed(engine) -> None:
        now = time.perf_counter()
        mark = marks.setdefault(engine.state.epoch, [now, now, -1])
        mark[1], mark[2] = now, mark[2] + 1

    wf.run()
    wf.finalize()
    batch = wf.parser.get_parsed_content("batch_size")
    rates = [round(n * batch / (t1 - t0), 1) for t0, t1, n in (marks[e] for e in sorted(marks))]
    return {"train_images": len(wf.parser.get_parsed_content("train_datalist")), "cache_build_s": round(build, 1),
            "rss_before_cache_mib": round(rss0 / 1024, 1), "rss_after_cache_mib": round(rss_built / 1024, 1),
            "peak_rss_mib": round(_status_kib("self", "VmHWM") / 1024, 1), "images_per_s": rates,
            "cache_memory_gb": round(float(wf.parser.get_parsed_content("cache_memory")), 2)}


def run_interleaved(wf, args: argparse.Namespace) -> dict:
    """The bundle's network, loss and optimizer trained alternately from the RAM cache (the default budget) and the
    disk cache (``--cache_memory 0``, the files of the runs before) of the same items: ``--rounds`` x ``--steps``
    batches each, images/s from the end of each block's first batch."""
    from monai.data import DataLoader

    from unext_monai.data.cache import BudgetCacheDataset

    get = wf.parser.get_parsed_content
    datasets = {"memory": get("train#dataset"),
                "disk": BudgetCacheDataset(get("train_datalist"), get("train#preprocessing"), args.cache_dir, 0.0)}
    net, loss, optimizer, inferer, device = get("network"), get("loss"), get("optimizer"), get("train#inferer"), \
        get("device")
    net.train()
    rates: dict[str, list[float]] = {arm: [] for arm in datasets}
    for _ in range(args.rounds):
        for arm, dataset in datasets.items():
            loader, start = iter(DataLoader(dataset, batch_size=8, shuffle=True)), 0.0
            for i in range(args.steps + 1):
                if i == 1:
                    start = time.perf_counter()
                batch = next(loader)
                optimizer.zero_grad(set_to_none=True)
                loss(inferer(batch["image"].to(device), net), batch["label"].to(device)).backward()
                optimizer.step()
            rates[arm].append(round(args.steps * 8 / (time.perf_counter() - start), 1))
    return {"training_images_per_s": rates, "cache_memory_gb": round(float(get("cache_memory")), 2),
            "disk_over_memory": round(float(np.median(rates["disk"]) / np.median(rates["memory"])), 3)}


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [
        "# Training cache: memory and speed from 2,000 to 100,000 images",
        "",
        f"`{result['command']}`",
        "",
        f"configs/train.json on synthetic {s['size']}x{s['size']} RGB PNGs with 0/255 masks (1% of them the selection "
        f"part), batch {s['batch_size']}, {s['threads']} torch thread(s), num_workers 0, no validation, the split "
        "given (the pre-flight check of every file, which is not the cache, left out). One process per run, run after "
        "run per size. `memory`: the default budget (half the memory available at start); `disk`: `--cache_memory 0`, "
        "every item written to the disk cache; `disk, reused`: the next run on those files. Images/s: two epochs of "
        f"{s['steps']} batches each, from the end of the first batch, the network's training step included.",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs shared with other jobs (load average {m['load_before']} before, "
        f"{m['load_after']} after), {m['memory_gb']} GB memory, Python {m['python']}, torch {m['torch']}, MONAI "
        f"{m['monai']}.",
        "",
        "| images | arm | peak RSS MiB | RSS before / after the cache MiB | cache build s | images/s epoch 1 | "
        "epoch 2 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for count, arms in result["runs"].items():
        for arm, r in arms.items():
            lines.append(f"| {count} | {arm} | {r['error']} | | | | |" if "error" in r else
                         f"| {count} | {arm} | {r['peak_rss_mib']:.0f} | {r['rss_before_cache_mib']:.0f} / "
                         f"{r['rss_after_cache_mib']:.0f} | {r['cache_build_s']} | {r['images_per_s'][0]} | "
                         f"{r['images_per_s'][1]} |")
    lines += ["", f"Disk cache against RAM cache, interleaved in one process: the same training items, the bundle's "
              f"network, loss and optimizer trained alternately from each for {s['steps']} batches, {s['rounds']} "
              "rounds (images/s per round; the ratio of the medians).", "",
              "| images | RAM cache images/s | disk cache images/s | disk / RAM |", "|---:|---|---|---:|"]
    for count, r in result["interleaved"].items():
        lines.append(f"| {count} | {r['error']} | | |" if "error" in r else
                     f"| {count} | {', '.join(map(str, r['training_images_per_s']['memory']))} | "
                     f"{', '.join(map(str, r['training_images_per_s']['disk']))} | {r['disk_over_memory']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[2000, 20000, 100000])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved memory / disk training")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    ap.add_argument("--work", default="/tmp/unext_cache_scaling", help="data sets, disk caches and run folders")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--interleaved", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--bundle_root", help=argparse.SUPPRESS)
    ap.add_argument("--cache_dir", help=argparse.SUPPRESS)
    ap.add_argument("--override", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return 0
    import monai
    import torch

    work = Path(args.work)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    result = {"command": "python benchmarks/cache_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": {"size": args.size, "steps": args.steps, "threads": args.threads, "rounds": args.rounds,
                           "batch_size": 8,
                           "counts": args.counts},
              "machine": {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "monai": monai.__version__,
                          "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1),
                          "load_before": " ".join(open("/proc/loadavg").read().split()[:3])},
              "runs": {}, "interleaved": {}}
    print(f"[cache_scaling] {cpu}", flush=True)
    for count in args.counts:
        start = time.perf_counter()
        data = make_dataset(work / f"data_{count}", count, args.size)
        print(f"[cache_scaling] {count} images in {data} ({time.perf_counter() - start:.0f} s)", flush=True)
        shutil.rmtree(work / f"cache_{count}", ignore_errors=True)
        result["runs"][count] = {}
        for arm, override in ARMS.items():
            root = work / f"run_{count}_{arm.replace(', ', '_')}"
            shutil.rmtree(root, ignore_errors=True)
            cache = work / (f"cache_{count}" if arm.startswith("disk") else f"cache_{count}_memory")
            cmd = [sys.executable, __file__, "--child", "--dataset", str(data), "--bundle_root", str(root),
                   "--cache_dir", str(cache), "--size", str(args.size), "--steps", str(args.steps),
                   "--threads", str(args.threads), "--override", json.dumps(override)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            r = json.loads(found[-1][7:]) if found else {"error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
            r["log"] = [line.split(" - ")[-1] for line in proc.stdout.splitlines() if " cache: " in line]
            result["runs"][count][arm] = r
            print(f"[cache_scaling] {count} {arm}: {json.dumps(r)}", flush=True)
            shutil.rmtree(root, ignore_errors=True)
        root = work / f"run_{count}_interleaved"
        cmd = [sys.executable, __file__, "--child", "--interleaved", "--dataset", str(data), "--bundle_root", str(root),
               "--cache_dir", str(work / f"cache_{count}"), "--size", str(args.size), "--steps", str(args.steps),
               "--rounds", str(args.rounds), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        result["interleaved"][count] = (json.loads(found[-1][7:]) if found else
                                        {"error": f"exit {proc.returncode}: {proc.stderr[-300:]}"})
        print(f"[cache_scaling] {count} interleaved: {json.dumps(result['interleaved'][count])}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work / f"cache_{count}", ignore_errors=True)
    result["machine"]["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    out = Path(args.out)
    _write(out / "cache_scaling.json", json.dumps(result, indent=2) + "\n")
    _write(out / "cache_scaling.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
