"""Float32 CPU training steps with trained weights that hold subnormal-producing values, with and without flushing
subnormal numbers to zero (``train.json``'s ``flush_denormal``, on by default).

Weight decay keeps shrinking the weights of units that stopped learning, so a long training ends with many weight
values far below 1e-30 (``unext_monai.networks.weights``); products with them are subnormal numbers, which x86 CPUs
compute in microcode. The checkpoint loader zeroes such values when a run starts or resumes, but a float32 training
makes new ones as it goes. bfloat16 autocast (this machine's default) does not notice them.

Run from the repository root, the machine otherwise idle::

    .venv/bin/python benchmarks/fp32_subnormal_training.py --weights-rev f0588ec

Cells: the network, loss and optimizer of ``configs/train.json`` (Adam, lr 1e-4, weight decay 1e-4, float32), batch 8
at 256x256, with either a fresh initialisation or the ISIC 2018 weights as stored at ``--weights-rev`` (loaded with
``load_state_dict``, so their tiny values stay, as in the middle of a training), subnormals flushed or not, 1 and 2
threads. Each cell runs in a fresh process that sets ``torch.set_flush_denormal`` before any parallel work (as the
training's ``initialize`` does: threads started earlier keep their own setting), then ``--warmup`` steps and
``--steps`` timed steps (median); cells run in turn for ``--rounds`` rounds.

Writes ``benchmarks/results/fp32_subnormal_training.json`` and ``.md``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEIGHTS = "bundle/unext_isic2018/models/model.pt"


def _cell(weights_rev: str | None, flush: bool, threads: int, warmup: int, steps: int) -> dict:
    """One cell, in this (fresh) process: seconds per training step and the weights' count of values below 1e-30."""
    import torch

    from unext_monai.networks.weights import negligible_values

    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)  # before the first parallel operation, as train.json's initialize
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser.update({"device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network")
    if weights_rev is not None:
        stored = subprocess.run(["git", "show", f"{weights_rev}:{WEIGHTS}"], cwd=ROOT, check=True,
                                stdout=subprocess.PIPE).stdout
        network.load_state_dict(torch.load(io.BytesIO(stored), map_location="cpu", weights_only=True))
    with torch.no_grad():
        tiny = sum(int(negligible_values(p).sum()) for p in network.parameters())
    loss_function = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 256, 256, generator=generator)
    labels = (torch.rand(8, 1, 256, 256, generator=generator) > 0.7).float()
    network.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(network(images), labels)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return {"seconds_per_step": sorted(times)[len(times) // 2], "values_below_1e-30": tiny}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-rev", default="f0588ec",
                        help=f"git revision whose {WEIGHTS} holds tiny values (f0588ec: unext_isic2018 0.3.4)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell, print its JSON
    args = parser.parse_args()
    if args.cell:
        spec = json.loads(args.cell)
        print(json.dumps(_cell(spec["rev"], spec["flush"], spec["threads"], args.warmup, args.steps)))
        return
    rev = subprocess.run(["git", "rev-parse", "--short", args.weights_rev], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    specs = [{"weights": label, "rev": r, "flush": flush, "threads": threads}
             for threads in (1, 2) for label, r in (("fresh initialisation", None), (f"ISIC 2018 at {rev}", rev))
             for flush in (False, True)]
    load_before = os.getloadavg()
    measured: dict[int, list[dict]] = {i: [] for i in range(len(specs))}
    for _ in range(args.rounds):
        for i, spec in enumerate(specs):
            cmd = [sys.executable, __file__, "--cell", json.dumps(spec), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
            out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
            measured[i].append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for i, spec in enumerate(specs):
        seconds = sorted(m["seconds_per_step"] for m in measured[i])
        rows.append({"weights": spec["weights"], "values_below_1e-30": measured[i][0]["values_below_1e-30"],
                     "flush_denormal": spec["flush"], "threads": spec["threads"],
                     "seconds_per_step": round(seconds[len(seconds) // 2], 3),
                     "seconds_per_step_rounds": [round(s, 3) for s in seconds]})
    import torch

    machine = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()]}
    command = (f"python benchmarks/fp32_subnormal_training.py --weights-rev {rev} --steps {args.steps} "
               f"--warmup {args.warmup} --rounds {args.rounds}")
    result = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine, "rows": rows}
    out_dir = Path(args.out_dir)
    from unext_monai.io import write_json_atomic

    write_json_atomic(out_dir / "fp32_subnormal_training.json", result)
    lines = ["# Float32 training steps with subnormal-producing weights", "",
             f"`{command}` ({result['date']}): `configs/train.json`'s network, loss and Adam optimizer in float32, "
             f"batch 8 at 256x256; median of {args.steps} steps after {args.warmup} warm-up steps, the median over "
             f"{args.rounds} rounds (cells in turn, each in a fresh process). torch {machine['torch']}, "
             f"{machine['cpus']} CPUs; load average before {machine['load_before']}, after {machine['load_after']}. "
             "`flush_denormal` is `train.json`'s setting (`torch.set_flush_denormal`, on by default).", "",
             "| weights | parameter values below 1e-30 | threads | flush_denormal | s per step |",
             "|---|---|---|---|---|"]
    for r in rows:
        flush = str(r["flush_denormal"]).lower()
        lines.append(f"| {r['weights']} | {r['values_below_1e-30']} | {r['threads']} | {flush} "
                     f"| {r['seconds_per_step']:.3f} |")
    (out_dir / "fp32_subnormal_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
