"""Training throughput of the bundle's own ``train.json``, end to end (data loading and caching included).

Each variant runs ``python -m monai.bundle run training`` in its own process on a real dataset, with validation off
(``val_interval`` past the last epoch) so that only training is timed, and reads MONAI's per-epoch times from the log
(``Epoch[N] Complete. Time taken``). Images per second = training images per epoch / epoch time; the first epoch
includes the workers' start, the later ones are the steady state. The whole run's wall time (process start, imports,
the pre-flight check, caching) is recorded too.

Writes ``benchmarks/results/train_speed.json`` and ``.md``::

    git worktree add ../baseline 5bad0bc   # the revision before the fast CPU path
    python benchmarks/train_speed.py --dataset_dir ../shared/data/isic2018 --dataset_name isic2018 \\
        --baseline_root ../baseline --epochs 2
    python benchmarks/train_speed.py --dataset_dir ../shared/data/isic2018 --variants default "default in fp32"

A variant is a name and a list of bundle overrides (see ``VARIANTS``); ``--baseline_root`` adds the run of an earlier
revision, its ``train.json`` with its own package (``git worktree add ../baseline REV``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: name -> bundle overrides on top of configs/train.json + the dataset's overlay
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "default in fp32": ["--precision", "fp32"],
    "default, freed memory returned to the system": ["--reuse_freed_memory", "False"],
    "default with 2 worker processes": ["--num_workers", "2"],
    "default, batches prepared in a thread": ["--train#dataloader#_target_", "ThreadDataLoader"],
}
_EPOCH = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def epoch_times(log: str) -> list[float]:
    """Seconds of each trainer epoch, from MONAI's 'Epoch[N] Complete. Time taken: HH:MM:SS' lines."""
    times = {}
    for line in log.splitlines():
        if "SupervisedTrainer" not in line:
            continue
        m = _EPOCH.search(line)
        if m:
            times[int(m.group(1))] = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
    return [times[k] for k in sorted(times)]


def run_variant(config_files: list[str], overrides: list[str], args: argparse.Namespace, work: str,
                code_root: Path = ROOT) -> dict:
    """One timed training run of ``config_files`` with the package and configs of the checkout ``code_root``."""
    root = tempfile.mkdtemp(prefix="bundle_", dir=work)
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--meta_file", str(code_root / "configs" / "metadata.json"),
        "--config_file", json.dumps(config_files),
        "--logging_file", str(code_root / "configs" / "logging.conf"),
        "--bundle_root", root,
        "--dataset_dir", os.path.abspath(args.dataset_dir),
        *(["--dataset_name", args.dataset_name] if args.dataset_name else []),
        "--max_epochs", str(args.epochs),
        "--val_interval", str(args.epochs + 1),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(code_root)}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log[-3000:]}")
    with open(os.path.join(root, "eval", "split.json")) as f:
        n_train = len(json.load(f)["training"])
    times = epoch_times(log)
    steady = times[1:] or times
    return {
        "overrides": overrides,
        "config_files": config_files,
        "train_images": n_train,
        "epoch_seconds": times,
        "images_per_second": n_train / (sum(steady) / len(steady)),
        "first_epoch_images_per_second": n_train / times[0],
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--overlay", default="", help="a config overlay on train.json (default: none, the bundle's "
                        "own train.json)")
    parser.add_argument("--dataset_name", default=None,
                        help="the layout of --dataset_dir (isic2018, busi), for revisions that do not detect it")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"any of {list(VARIANTS)}")
    parser.add_argument("--baseline_root", default=None,
                        help="a checkout of an earlier revision (`git worktree add DIR REV`): its train.json, with its "
                             "own package, is timed as 'baseline'")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds: each runs every variant once, in turn; images/s is the median over the rounds")
    parser.add_argument("--out", default=str(RESULTS / "train_speed"))
    args = parser.parse_args()

    overlay = [str(ROOT / args.overlay)] if args.overlay else []
    runs: dict[str, dict] = {}
    plan = [(name, [str(ROOT / "configs" / "train.json"), *overlay], VARIANTS[name], ROOT) for name in args.variants]
    if args.baseline_root:
        old = Path(args.baseline_root).resolve()
        plan.insert(0, ("baseline", [str(old / "configs" / "train.json"), *overlay], [], old))
    rounds: dict[str, list[dict]] = {name: [] for name, *_ in plan}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):  # interleaved, so that a machine whose speed drifts treats all alike
            for name, config_files, overrides, code_root in plan:
                rounds[name].append(run_variant(config_files, overrides, args, work, code_root))
                print(name, f"{rounds[name][-1]['images_per_second']:.1f} img/s", flush=True)
    for name, results in rounds.items():
        ordered = sorted(results, key=lambda r: r["images_per_second"])
        per_round = [r["images_per_second"] for r in results]
        runs[name] = {**ordered[len(ordered) // 2], "rounds_images_per_second": per_round}
    import torch

    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}",
        "cpu_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "dataset_dir": args.dataset_dir,
        "overlay": args.overlay or None,
        "baseline_root": args.baseline_root,
        "epochs": args.epochs,
        "threads": args.threads,
        "repeats": args.repeats,
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    first = runs.get("baseline") or next(iter(runs.values()))
    lines = [
        "# Training throughput of configs/train.json",
        "",
        f"`{result['command']}` on {result['date']}: {result['machine']}, {args.threads} threads per run, "
        f"{args.epochs} epochs per run, {args.repeats} interleaved round(s) (median), validation off, load average at "
        "the end "
        f"{result['load_average_at_end'][0]:.1f}.",
        "Images/s = training images per epoch / epoch time (MONAI's log), epochs after the first; wall time includes "
        "start-up, the pre-flight check and caching.",
        "",
        "| run | overrides | training images | images/s | first epoch images/s | x first row | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | `{' '.join(r['overrides']) or '-'}` | {r['train_images']} | {r['images_per_second']:.1f} | "
            f"{r['first_epoch_images_per_second']:.1f} | {r['images_per_second'] / first['images_per_second']:.2f} | "
            f"{r['wall_seconds']:.0f} |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
