"""Cost of distributed training on CPU: SyncBatchNorm off/on, and resident memory per process.

Runs ``configs/train.json`` + ``configs/multi_gpu_train.json`` with ``torchrun --standalone --nproc_per_node N`` (gloo)
on a dataset folder, once with ``sync_batchnorm`` false and once true, each for ``--epochs`` epochs with validation
off, and records MONAI's per-epoch times (rank 0's log) and the peak resident memory (VmHWM) of every worker process,
read from /proc while it runs. With ``CacheDataset`` each process caches only its own share of the training data.

Writes ``benchmarks/results/distributed.json`` and ``.md``::

    python benchmarks/distributed.py --dataset_name isic2018 --dataset_dir ../shared/data/isic2018 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_speed import epoch_times  # noqa: E402


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if fields[1] == str(pid):
                out.append(int(entry))
    return out


def _peak_kib(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(args: argparse.Namespace, sync: bool, work: str) -> dict:
    root = tempfile.mkdtemp(prefix="ddp_", dir=work)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node",
        str(args.processes), "-m", "monai.bundle", "run", "training",
        "--config_file", json.dumps([str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / f"{args.overlay}"),
                                     str(ROOT / "configs" / "multi_gpu_train.json")]),
        "--meta_file", str(ROOT / "configs" / "metadata.json"),
        "--logging_file", str(ROOT / "configs" / "logging.conf"),
        "--bundle_root", root, "--dataset_dir", os.path.abspath(args.dataset_dir), "--max_epochs", str(args.epochs),
        "--val_interval", str(args.epochs + 1), "--sync_batchnorm", str(sync).lower(),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log_path = os.path.join(root, "run.log")
    peaks: dict[int, int] = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for agent_child in _children(proc.pid):
                peak = _peak_kib(agent_child)
                if peak:
                    peaks[agent_child] = max(peaks.get(agent_child, 0), peak)
            time.sleep(0.5)
    text = open(log_path).read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{text[-3000:]}")
    with open(os.path.join(root, "eval", "split.json")) as f:
        n_train = len(json.load(f)["training"])
    times = epoch_times(text)
    steady = times[1:] or times
    return {"sync_batchnorm": sync, "train_images": n_train, "epoch_seconds": times,
            "images_per_second": n_train / (sum(steady) / len(steady)),
            "peak_rss_mib_per_process": sorted(round(v / 1024, 1) for v in peaks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--overlay", default="isic2018.json")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        runs = [run(args, sync, work) for sync in (False, True)]
    import torch

    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}",
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    base = runs[0]["images_per_second"]
    lines = [
        "# Distributed training on CPU (gloo)",
        "",
        f"`{result['command']}` on {result['date']}: {result['machine']}, {args.processes} processes x "
        f"{args.threads} thread(s), {args.epochs} epochs, validation off, load average at the end "
        f"{result['load_average_at_end'][0]:.1f}. Peak RSS is each worker's VmHWM (its own share of the cached data).",
        "",
        "| SyncBatchNorm | training images (all ranks) | images/s (epochs after the first) | x off | peak RSS per "
        "process (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {'on' if r['sync_batchnorm'] else 'off'} | {r['train_images']} | "
                     f"{r['images_per_second']:.1f} | {r['images_per_second'] / base:.2f} | "
                     f"{', '.join(str(v) for v in r['peak_rss_mib_per_process'])} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
