"""Resident memory of a long training run: does it grow from epoch to epoch?

Runs ``configs/train.json`` in this process (as ``python -m monai.bundle run training`` does) on the built-in demo set
for ``--epochs`` epochs and records the resident set size (RSS) after every epoch, from a handler attached to the
trainer: psutil when installed, else ``/proc/self/status`` (``VmRSS``, and ``VmHWM`` for the peak). DataLoader worker
processes (``--num_workers`` > 0) are added when they can be found. Nothing is asserted: the result says whether RSS
after epoch 2 stays within 10% up to the last epoch.

Writes ``benchmarks/results/memory.json`` and ``memory.md``::

    python benchmarks/memory.py                       # 20 epochs, 128x128, num_workers 0
    python benchmarks/memory.py --epochs 5 --spatial_size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
MIB = 1024.0 * 1024.0


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (DataLoader workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def memory_now() -> dict[str, float | None]:
    """RSS of this process and of its child processes, and this process's peak RSS, in MiB."""
    pid = os.getpid()
    try:
        import psutil

        proc = psutil.Process(pid)
        rss = proc.memory_info().rss / MIB
        children = sum(c.memory_info().rss for c in proc.children()) / MIB
        source = "psutil"
    except ImportError:
        rss = (_status_kib("self", "VmRSS") or 0) / 1024.0
        children = sum((_status_kib(c, "VmRSS") or 0) for c in _children(pid)) / 1024.0
        source = "/proc/self/status"
    hwm = _status_kib("self", "VmHWM")
    return {"rss_mib": rss, "children_rss_mib": children, "peak_rss_mib": hwm / 1024.0 if hwm else None,
            "source": source}


def run(epochs: int, spatial_size: int, num_workers: int, bundle_root: str) -> dict:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    samples: list[dict] = []
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=bundle_root,
        max_epochs=epochs,
        spatial_size=[spatial_size, spatial_size],
        num_workers=num_workers,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    start = {"epoch": 0, "seconds": 0.0, **memory_now()}
    t0 = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _sample(engine) -> None:
        samples.append({"epoch": engine.state.epoch, "seconds": round(time.perf_counter() - t0, 2), **memory_now()})
        s = samples[-1]
        print(f"[memory] epoch {s['epoch']}: RSS {s['rss_mib']:.1f} MiB (+{s['children_rss_mib']:.1f} MiB in workers)",
              flush=True)

    wf.run()
    wf.finalize()
    n_train = len(wf.parser.get_parsed_content("train_datalist"))
    return {"start": start, "epochs": samples, "n_train": n_train}


def summarise(result: dict, epochs: int, spatial_size: int, num_workers: int) -> dict:
    rows = result["epochs"]
    total = [r["rss_mib"] + r["children_rss_mib"] for r in rows]
    base = total[1] if len(total) > 1 else total[0]  # after epoch 2: caches are filled, optimiser state exists
    later = total[1:] if len(total) > 1 else total
    growth_max = (max(later) - base) / base * 100.0
    growth_final = (total[-1] - base) / base * 100.0
    return {
        "benchmark": "resident memory per epoch of configs/train.json on the demo set",
        "settings": {"epochs": epochs, "spatial_size": [spatial_size, spatial_size], "num_workers": num_workers,
                     "batch_size": 8, "train_images": result["n_train"], "cache": "train.json's default",
                     "network": "UNeXt features (16, 32, 128, 160, 256)", "device": "cpu"},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "torch": __import__("torch").__version__,
                    "monai": __import__("monai").__version__},
        "source": rows[0]["source"] if rows else None,
        "rss_before_training_mib": round(result["start"]["rss_mib"], 1),
        "rss_after_epoch_2_mib": round(base, 1),
        "rss_final_mib": round(total[-1], 1),
        "rss_max_from_epoch_2_mib": round(max(later), 1),
        "growth_from_epoch_2_max_percent": round(growth_max, 2),
        "growth_from_epoch_2_final_percent": round(growth_final, 2),
        "peak_rss_mib": round(max(r["peak_rss_mib"] or 0 for r in rows), 1),
        "within_10_percent_after_epoch_2": bool(growth_max <= 10.0),
        "per_epoch": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "source"}
                      for r in rows],
        "seconds_total": rows[-1]["seconds"] if rows else None,
    }


def markdown(s: dict) -> str:
    st = s["settings"]
    lines = [
        "# Resident memory over a long training run",
        "",
        f"`python benchmarks/memory.py --epochs {st['epochs']} --spatial_size {st['spatial_size'][0]} "
        f"--num_workers {st['num_workers']}`: configs/train.json on the demo set ({st['train_images']} training images,"
        f" cached), batch {st['batch_size']}, {st['network']}, CPU; RSS sampled after every epoch from {s['source']}.",
        f"Machine: {s['machine']['cpus']} CPUs, {s['machine']['platform']}, Python {s['machine']['python']}, "
        f"torch {s['machine']['torch']}, MONAI {s['machine']['monai']}; {s['seconds_total']} s of training.",
        "",
        f"- before training: {s['rss_before_training_mib']} MiB",
        f"- after epoch 2: {s['rss_after_epoch_2_mib']} MiB",
        f"- after the last epoch: {s['rss_final_mib']} MiB ({s['growth_from_epoch_2_final_percent']:+.2f}% from "
        "epoch 2)",
        f"- highest after epoch 2: {s['rss_max_from_epoch_2_mib']} MiB ({s['growth_from_epoch_2_max_percent']:+.2f}%)",
        f"- peak RSS (VmHWM): {s['peak_rss_mib']} MiB",
        f"- within 10% of epoch 2 throughout: **{'yes' if s['within_10_percent_after_epoch_2'] else 'no'}**",
        "",
        "| epoch | RSS MiB | workers MiB | peak MiB | s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in s["per_epoch"]:
        lines.append(f"| {r['epoch']} | {r['rss_mib']:.1f} | {r['children_rss_mib']:.1f} | "
                     f"{(r['peak_rss_mib'] or 0):.1f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--spatial_size", type=int, default=128)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--bundle_root", default=None, help="run folder (default: a temporary one, removed after)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for memory.json and .md")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (growth is measured from epoch 2)")
    with tempfile.TemporaryDirectory(prefix="unext_memory_") as tmp:
        result = run(args.epochs, args.spatial_size, args.num_workers, args.bundle_root or tmp)
    summary = summarise(result, args.epochs, args.spatial_size, args.num_workers)
    out = Path(args.out)
    _write(out / "memory.json", json.dumps(summary, indent=2) + "\n")
    _write(out / "memory.md", markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
