"""CPU speed of UNeXt: its inference paths beside MONAI's networks, and its training throughput.

Run from the repository root::

    .venv/bin/python benchmarks/speed.py                          # the full run (~30 minutes on 2 loaded cores)
    .venv/bin/python benchmarks/speed.py --quick                  # a smoke test: 256x256 only, few runs
    .venv/bin/python benchmarks/speed.py --baseline-rev c4d979a   # also time the network of an earlier commit

It writes ``benchmarks/results/speed.md`` (Markdown tables with the machine) and ``benchmarks/results/speed.json``
(every timing); ``--out-dir`` writes elsewhere.

Method: for each input size and thread count, all models run round-robin (one forward each, in turn, ``--runs``
times after ``--warmup`` rounds), so background load on a shared machine hits them alike; the tables give the
median and the 10th-90th percentiles in milliseconds, batch 1, under ``torch.inference_mode()``. Parameters and
multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` on the eager model (MACs = FLOPs / 2,
convolutions and matrix products only). Every UNeXt path is checked against the eager network of this tree (max
abs difference) before it is timed. Training: images/second of forward + backward + Adam step at batch 8, 256x256,
loss 0.5 * BCE-with-logits + soft Dice as the paper trains, in float32 and under bfloat16 autocast as the bundle
trains on CPUs with native bfloat16 (forward under ``torch.autocast``, loss in float32); models interleaved step by
step, median over ``--train-steps`` steps after ``--train-warmup``.

``--baseline-rev REV`` extracts ``unext_monai/`` of that commit (``git archive``) into a temporary folder under
another package name and times its paths in the same rounds: its eager network, and where that commit had
``unext_monai.networks.fast`` its ``optimize_for_inference`` module, which its TorchScript and ONNX rows then use.

Threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` for PyTorch, no spinning in ONNX Runtime) unless ``--spin``
is given: on a shared machine with more runnable threads than cores, spin-waiting OpenMP threads make 2-thread
timings 10-20x slower and meaningless. MONAI's heavy networks (BasicUNet, BasicUNetPlusPlus, AttentionUnet) run at
256x256 only unless ``--heavy-sizes 256 512``.

The "straightforward" baseline is defined in this file only, for comparison: the paper's network written the
direct way from its description, as its code is structured (and with its state-dict keys): channel-first
convolutions, token layout (B, N, C) inside the tokenized stages with ``nn.Linear`` for fc1/fc2 and ``nn.LayerNorm``
on tokens, transposes/reshapes between tokens and maps around the depthwise conv, and the shift as zero-pad ->
``torch.chunk`` -> ``torch.roll`` per group -> ``torch.cat`` -> crop. UNeXt gets its weights through the package's
converter (``unext_monai.convert_unext_pytorch_state_dict``), and their outputs are checked to match.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

if "--spin" not in sys.argv:  # must be set before PyTorch loads its OpenMP runtime
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from unext_monai import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt, from_unext_pytorch  # noqa: E402
from unext_monai.networks.export import export_onnx  # noqa: E402

# --------------------------------------------------------------------------------------------------------------------
# the straightforward baseline (token layout, the reference's module names), for comparison only


class _DWConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class _TokenShiftMLP(nn.Module):
    """shift(H) -> Linear -> depthwise 3x3 -> GELU -> shift(W) -> Linear, on tokens (B, N, C)."""

    def __init__(self, channels: int, shift_size: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels)
        self.dwconv = _DWConv(channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(channels, channels)
        self.shift_size = shift_size

    def _shift(self, tokens: torch.Tensor, h: int, w: int, dim: int) -> torch.Tensor:
        b, n, c = tokens.shape
        pad = self.shift_size // 2
        image = tokens.transpose(1, 2).reshape(b, c, h, w)
        image = F.pad(image, (pad, pad, pad, pad))
        groups = torch.chunk(image, self.shift_size, 1)
        shifted = torch.cat([torch.roll(g, s, dim) for g, s in zip(groups, range(-pad, pad + 1))], 1)
        shifted = shifted.narrow(2, pad, h).narrow(3, pad, w)
        return shifted.reshape(b, c, h * w).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = tokens.shape
        x = self.fc1(self._shift(tokens, h, w, 2))
        x = self.act(self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
        return self.fc2(self._shift(x, h, w, 3))


class _TokenBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = _TokenShiftMLP(channels)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens + self.mlp(self.norm2(tokens), h, w)


class _PatchEmbed(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class StraightforwardUNeXt(nn.Module):
    """The paper's UNeXt written the direct way (see the module docstring); 2D, sides multiples of 32."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features=UNEXT_FEATURES) -> None:
        super().__init__()
        f = features
        self.encoder1, self.ebn1 = nn.Conv2d(in_channels, f[0], 3, padding=1), nn.BatchNorm2d(f[0])
        self.encoder2, self.ebn2 = nn.Conv2d(f[0], f[1], 3, padding=1), nn.BatchNorm2d(f[1])
        self.encoder3, self.ebn3 = nn.Conv2d(f[1], f[2], 3, padding=1), nn.BatchNorm2d(f[2])
        self.patch_embed3, self.norm3 = _PatchEmbed(f[2], f[3]), nn.LayerNorm(f[3])
        self.patch_embed4, self.norm4 = _PatchEmbed(f[3], f[4]), nn.LayerNorm(f[4])
        self.block1, self.block2 = nn.ModuleList([_TokenBlock(f[3])]), nn.ModuleList([_TokenBlock(f[4])])
        self.decoder1, self.dbn1 = nn.Conv2d(f[4], f[3], 3, padding=1), nn.BatchNorm2d(f[3])
        self.dblock1, self.dnorm3 = nn.ModuleList([_TokenBlock(f[3])]), nn.LayerNorm(f[3])
        self.decoder2, self.dbn2 = nn.Conv2d(f[3], f[2], 3, padding=1), nn.BatchNorm2d(f[2])
        self.dblock2, self.dnorm4 = nn.ModuleList([_TokenBlock(f[2])]), nn.LayerNorm(f[2])
        self.decoder3, self.dbn3 = nn.Conv2d(f[2], f[1], 3, padding=1), nn.BatchNorm2d(f[1])
        self.decoder4, self.dbn4 = nn.Conv2d(f[1], f[0], 3, padding=1), nn.BatchNorm2d(f[0])
        self.decoder5 = nn.Conv2d(f[0], f[0], 3, padding=1)
        self.final = nn.Conv2d(f[0], out_channels, 1)

    @staticmethod
    def _to_image(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def _tokens(self, x: torch.Tensor, block: nn.ModuleList, norm: nn.Module) -> torch.Tensor:
        _, _, h, w = x.shape
        return self._to_image(norm(block[0](x.flatten(2).transpose(1, 2), h, w)), h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t1 = F.relu(F.max_pool2d(self.ebn1(self.encoder1(x)), 2, 2))
        t2 = F.relu(F.max_pool2d(self.ebn2(self.encoder2(t1)), 2, 2))
        t3 = F.relu(F.max_pool2d(self.ebn3(self.encoder3(t2)), 2, 2))
        tokens, h, w = self.patch_embed3(t3)
        t4 = self._to_image(self.norm3(self.block1[0](tokens, h, w)), h, w)
        tokens, h, w = self.patch_embed4(t4)
        out = self._to_image(self.norm4(self.block2[0](tokens, h, w)), h, w)
        out = self._tokens(F.relu(self._up(self.dbn1(self.decoder1(out)))) + t4, self.dblock1, self.dnorm3)
        out = self._tokens(F.relu(self._up(self.dbn2(self.decoder2(out)))) + t3, self.dblock2, self.dnorm4)
        out = F.relu(self._up(self.dbn3(self.decoder3(out)))) + t2
        out = F.relu(self._up(self.dbn4(self.decoder4(out)))) + t1
        return self.final(F.relu(self._up(self.decoder5(out))))


# --------------------------------------------------------------------------------------------------------------------
# helpers


#: the CPU features that decide the fast paths (bf16 and int8 arithmetic), named with every result
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")


def cpu_text(info: dict) -> str:
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in info.get("cpu_flags", {}).items())
    return f"{info['cpu']} ({flags})" if flags else info["cpu"]


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
                    .split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    info = {
        "cpu": cpu,
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() // 2


def trained_bn(net: nn.Module, in_channels: int) -> nn.Module:
    """Give BatchNorms non-trivial running statistics (a few training-mode passes), then eval mode."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(2, in_channels, 64, 64))
    return net.eval()


def import_revision(rev: str, workdir: str):
    """``unext_monai`` of git revision ``rev``, extracted into ``workdir`` and imported as ``unext_monai_<rev>``."""
    name = "unext_monai_" + re.sub(r"\W", "_", rev)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "unext_monai"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", workdir], input=archive, check=True)
    package = Path(workdir) / name
    (Path(workdir) / "unext_monai").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\bunext_monai\b", name, path.read_text()))
    sys.path.insert(0, workdir)
    return importlib.import_module(name)


def ort_session(path: str, threads: int, spin: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def round_robin(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Time each callable once per round, ``runs`` rounds after ``warmup`` rounds; seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(seconds: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in seconds)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return {"median_ms": statistics.median(ms), "p10_ms": q[0], "p90_ms": q[-1], "min_ms": ms[0], "runs": len(ms)}


# --------------------------------------------------------------------------------------------------------------------
# inference


HEAVY = ("MONAI BasicUNet", "MONAI BasicUNetPlusPlus", "MONAI AttentionUnet (16-256)")
BASELINE = "UNeXt straightforward eager (baseline)"


def monai_models() -> dict[str, nn.Module]:
    from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, SegResNet, UNet

    return {
        "MONAI UNet (16-256, 2 res units)": UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=3, out_channels=1),
        "MONAI BasicUNetPlusPlus": BasicUNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=1),
        "MONAI AttentionUnet (16-256)": AttentionUnet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2)),
        "MONAI SegResNet": SegResNet(spatial_dims=2, in_channels=3, out_channels=1),
    }


def unext_paths(net: nn.Module, deployed: nn.Module, tag: str, workdir: str, args) -> dict:
    """The timed paths of one trained UNeXt: eager ``net``, and ``deployed`` (``net`` itself, or an earlier
    commit's inference module) frozen in TorchScript and in ONNX Runtime."""
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.script(deployed))
    paths = {f"{tag} eager": {"call": net}}
    if deployed is not net:
        paths[f"{tag} optimized eager"] = {"call": deployed}
    paths[f"{tag} TorchScript frozen"] = {"call": frozen}
    if not args.no_onnx:
        onnx_path = os.path.join(workdir, re.sub(r"\W", "_", tag) + ".onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(deployed, onnx_path, in_channels=3, spatial_dims=2)
        paths[f"{tag} ONNX Runtime"] = {"ort": {t: ort_session(onnx_path, t, args.spin) for t in args.threads}}
    return paths


def build_models(args, workdir: str, old) -> dict:
    """name -> {"call" or "ort", "count" (the module whose size is counted), "reference" (expected function)}."""
    models: dict[str, dict] = {}
    for width, features in (("UNeXt", UNEXT_FEATURES), ("UNeXt-S", UNEXT_S_FEATURES)):
        torch.manual_seed(0)
        baseline = trained_bn(StraightforwardUNeXt(features=features), 3) if width == "UNeXt" else None
        if baseline is not None:
            net = from_unext_pytorch(baseline.state_dict())
        else:
            net = trained_bn(UNeXt(2, 3, 1, features=features), 3)
        paths = unext_paths(net, net, width, workdir, args)
        if baseline is not None:
            paths[BASELINE] = {"call": baseline}
        if old is not None:
            old_net = old.UNeXt(2, 3, 1, features=features)
            old_net.load_state_dict(net.state_dict())
            old_net.eval()
            deployed = old_net
            if importlib.util.find_spec(f"{old.__name__}.networks.fast") is not None:
                fast = importlib.import_module(f"{old.__name__}.networks.fast")
                deployed = fast.optimize_for_inference(old_net)
            paths.update(unext_paths(old_net, deployed, f"{width} ({args.baseline_rev})", workdir, args))
        for entry in paths.values():
            entry.update(count=net, reference=net)
        models.update(paths)
    for name, m in monai_models().items():
        models[name] = {"call": m.eval(), "count": m, "reference": None, "heavy": name in HEAVY}
    return models


def run_inference(args, workdir: str, old) -> dict:
    models = build_models(args, workdir, old)
    results: dict = {"models": {}, "timings": []}
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        xn = x.numpy()
        torch.set_num_threads(max(args.threads))
        here = {name: m for name, m in models.items() if not m.get("heavy") or size in args.heavy_sizes}
        for name, m in here.items():  # parameters, multiply-adds, parity with this tree's eager network
            entry = results["models"].setdefault(name, {})
            entry["params"] = count_params(m["count"])
            entry.setdefault("macs", {})[str(size)] = count_macs(m["count"], x)
            if m["reference"] is not None:
                with torch.inference_mode():
                    expected = m["reference"](x)
                    if "ort" in m:
                        got = torch.from_numpy(next(iter(m["ort"].values())).run(None, {"image": xn})[0])
                    else:
                        got = m["call"](x)
                diff = (got - expected).abs().max().item()
                entry.setdefault("max_abs_diff", {})[str(size)] = diff
                if diff > 1e-4:
                    raise RuntimeError(f"{name} differs from UNeXt eager by {diff} at {size}x{size}")
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = {}
            for name, m in here.items():
                if "ort" in m:
                    fns[name] = lambda s=m["ort"][threads], xn=xn: s.run(None, {"image": xn})
                else:
                    fns[name] = lambda f=m["call"], x=x: f(x)
            print(f"[inference] {cpu_text(machine_info())}: {size}x{size}, {threads} thread(s), load {load_average()}",
                  flush=True)
            with torch.inference_mode():
                times = round_robin(fns, args.runs, args.warmup)
            for name, t in times.items():
                row = {"model": name, "size": size, "threads": threads, **summarize(t)}
                results["timings"].append(row)
                print(f"  {name:45s} {row['median_ms']:9.2f} ms", flush=True)
    return results


# --------------------------------------------------------------------------------------------------------------------
# training


def training_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> Callable[[], None]:
    from monai.losses import DiceLoss

    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    dice, bce = DiceLoss(sigmoid=True), nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        out = out.float()
        loss = 0.5 * bce(out, y) + dice(out, y)
        loss.backward()
        opt.step()

    return step


def run_training(args, old) -> list[dict]:
    from monai.networks.nets import UNet

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        baseline = StraightforwardUNeXt()
        unext = from_unext_pytorch(baseline.state_dict())
        nets = {"UNeXt": unext}
        if old is not None:
            nets[f"UNeXt ({args.baseline_rev})"] = old.UNeXt(2, 3, 1)
            nets[f"UNeXt ({args.baseline_rev})"].load_state_dict(unext.state_dict())
        nets["UNeXt straightforward (baseline)"] = baseline
        nets["MONAI UNet (16-256, 2 res units)"] = UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2),
                                                        num_res_units=2)
        x = torch.rand(args.train_batch, 3, 256, 256)
        y = (torch.rand(args.train_batch, 1, 256, 256) > 0.5).float()
        steps = {(name, p): training_step(net, x, y, p) for p in args.precisions for name, net in nets.items()}
        print(f"[training] {cpu_text(machine_info())}: batch {args.train_batch}, {threads} thread(s), "
              f"load {load_average()}", flush=True)
        times = round_robin({f"{n}|{p}": s for (n, p), s in steps.items()}, args.train_steps, args.train_warmup)
        for key, t in times.items():
            name, precision = key.split("|")
            med = statistics.median(t)
            row = {"model": name, "precision": precision, "threads": threads, "batch": args.train_batch,
                   "size": 256, "median_step_s": med, "images_per_s": args.train_batch / med, "steps": len(t)}
            rows.append(row)
            print(f"  {name:40s} {precision:5s} {row['images_per_s']:7.2f} img/s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------------------------------
# report


def _fmt_count(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.1f} k"


def _median(results: dict, name: str, size: int, threads: int) -> float | None:
    for row in results["inference"]["timings"]:
        if row["model"] == name and row["size"] == size and row["threads"] == threads:
            return row["median_ms"]
    return None


def targets_section(results: dict) -> list[str]:
    """The issues' targets, checked on this run's medians (batch 1; batch 8 for training)."""
    lines = ["## Targets (this run)", ""]
    rev = results.get("baseline_rev")
    for size in results["sizes"]:
        for t in results["threads"]:
            m = {name: _median(results, name, size, t) for name in results["inference"]["models"]}
            plural = "s" if t > 1 else ""
            parts = []
            eager, base, unet = m.get("UNeXt eager"), m.get(BASELINE), m.get("MONAI UNet (16-256, 2 res units)")
            if eager and base:
                parts.append(f"UNeXt eager / straightforward = {eager / base:.2f} (target <= 0.55)")
            if eager and unet:
                parts.append(f"UNeXt eager / MONAI UNet = {eager / unet:.2f}")
            if rev:
                for width in ("UNeXt", "UNeXt-S"):
                    for path in ("eager", "TorchScript frozen", "ONNX Runtime"):
                        new, old = m.get(f"{width} {path}"), m.get(f"{width} ({rev}) {path}")
                        if new and old:
                            parts.append(f"{width} {path} now / {rev} = {new / old:.2f}")
            if parts:
                lines.append(f"- {size}x{size}, {t} thread{plural}: " + "; ".join(parts))
    training = results.get("training") or []
    for t in results["threads"]:
        for precision in results.get("precisions", []):
            rows = {r["model"]: r["images_per_s"] for r in training
                    if r["threads"] == t and r["precision"] == precision}
            base, ours = rows.get("UNeXt straightforward (baseline)"), rows.get("UNeXt")
            if not (base and ours):
                continue
            text = f"- training {precision}, batch 8, {t} thread{'s' if t > 1 else ''}: UNeXt {ours:.2f} images/s, "
            text += f"{ours / base:.2f}x the straightforward baseline (target >= 1.5x)"
            if rev and rows.get(f"UNeXt ({rev})"):
                text += f", {ours / rows[f'UNeXt ({rev})']:.2f}x UNeXt of {rev}"
            lines.append(text)
    return lines + [""]


def write_report(results: dict, path_md: Path, path_json: Path) -> None:
    info = results["machine"]
    rev = results.get("baseline_rev")
    lines = [
        "# UNeXt CPU speed",
        "",
        f"- CPU: {cpu_text(info)} ({info['logical_cpus']} logical CPUs, "
        f"PyTorch CPU capability {info['torch_cpu_capability']})",
        f"- torch {info['torch']}, MONAI {info.get('monai', '-')}, ONNX Runtime {info.get('onnxruntime', '-')}, "
        f"Python {info['python']}",
        f"- threads: {', '.join(str(t) for t in results['threads'])} (torch.set_num_threads / ORT intra-op threads); "
        f"OMP_WAIT_POLICY={results['omp_wait_policy']}, ONNX Runtime spinning "
        f"{'on' if results['spin'] else 'off'}",
        f"- load average (1, 5, 15 min) before: {results['load_before']}, after: {results['load_after']}",
        f"- command: `{results['command']}`; {results['runs']} timed runs per cell after {results['warmup']} "
        "warm-up rounds, models interleaved round-robin; batch 1; median ms (10th-90th percentile)",
        "",
        "UNeXt eager = `unext_monai.UNeXt` in eval mode (the one network, as it trains); TorchScript frozen = "
        "`torch.jit.freeze(torch.jit.script(net))` (BatchNorm folded into the convolutions); ONNX Runtime = "
        "`unext_monai.networks.export.export_onnx`, CPUExecutionProvider, all graph optimisations. The "
        "straightforward baseline is the paper's network written the direct way (token layout (B, N, C) with "
        "`nn.Linear` and token `nn.LayerNorm`, shift = pad -> chunk -> roll -> cat -> crop, channel-first "
        "convolutions), defined in `benchmarks/speed.py` only; UNeXt loads its weights through the package's "
        "converter and computes the same outputs.",
    ]
    if rev:
        lines.append(f"Rows marked ({rev}) run the network of commit {rev} in the same rounds; where that commit had "
                     "`networks/fast.py`, its optimized eager row is `optimize_for_inference(net)` and its TorchScript "
                     "and ONNX rows export that module, as its speed table did.")
    lines.append(f"BasicUNet, BasicUNetPlusPlus and AttentionUnet run at "
                 f"{', '.join(str(s) for s in results['heavy_sizes'])} only (`--heavy-sizes`).")
    lines.append("")
    timings = results["inference"]["timings"]
    models = results["inference"]["models"]
    for size in results["sizes"]:
        header = "| model | params | MACs | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in
                                                           results["threads"]) + " |"
        lines += [f"## Inference, {size}x{size}, batch 1", "", header,
                  "|" + "---|" * (3 + len(results["threads"]))]
        for name, entry in models.items():
            cells = []
            for t in results["threads"]:
                row = next((r for r in timings if r["model"] == name and r["size"] == size and r["threads"] == t), None)
                cells.append(f"{row['median_ms']:.1f} ({row['p10_ms']:.1f}-{row['p90_ms']:.1f})" if row else "-")
            macs = entry["macs"].get(str(size))
            lines.append(f"| {name} | {_fmt_count(entry['params'])} | {_fmt_count(macs) if macs else '-'} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += targets_section(results)
    if results.get("training"):
        lines += ["## Training, batch 8, 256x256 (forward + backward + Adam step)", "",
                  f"Median of {results['train_steps']} steps after {results['train_warmup']} warm-up steps, every "
                  "model and precision interleaved step by step.", "",
                  "| model | precision | threads | s/step (median) | images/s | vs baseline |",
                  "|---|---|---|---|---|---|"]
        for row in results["training"]:
            base = next(r for r in results["training"] if r["threads"] == row["threads"]
                        and r["precision"] == row["precision"] and "baseline" in r["model"])
            lines.append(f"| {row['model']} | {row['precision']} | {row['threads']} | {row['median_step_s']:.3f} | "
                         f"{row['images_per_s']:.2f} | {row['images_per_s'] / base['images_per_s']:.2f}x |")
        lines.append("")
    lines += ["Parity of every UNeXt path with UNeXt eager (max abs difference of the logits):", ""]
    for name, entry in models.items():
        if "max_abs_diff" in entry:
            diffs = ", ".join(f"{s}: {d:.1e}" for s, d in entry["max_abs_diff"].items())
            lines.append(f"- {name}: {diffs}")
    lines.append("")
    path_md.write_text("\n".join(lines))
    path_json.write_text(json.dumps(results, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 256 only, 5 runs, 2 training steps")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="input sides (default 256 512)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per cell (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 5)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per model (default 10)")
    p.add_argument("--train-warmup", type=int, default=None, help="untimed training steps per model (default 2)")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="training precisions (default fp32 bf16)")
    p.add_argument("--no-train", action="store_true", help="skip the training benchmark")
    p.add_argument("--no-inference", action="store_true", help="skip the inference benchmark")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--baseline-rev", default=None, help="also time the network of this git revision")
    p.add_argument("--heavy-sizes", type=int, nargs="+", default=[256],
                   help="sizes at which BasicUNet, BasicUNetPlusPlus and AttentionUnet run (default 256)")
    p.add_argument("--spin", action="store_true",
                   help="let OpenMP and ONNX Runtime threads spin-wait (default: they wait passively)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([256] if quick else [256, 512])
    args.threads = args.threads or ([1] if quick else [1, 2])
    args.runs = args.runs or (5 if quick else 30)
    args.warmup = args.warmup or (1 if quick else 5)
    args.train_steps = args.train_steps or (2 if quick else 10)
    args.train_warmup = args.train_warmup or (1 if quick else 2)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.no_onnx is False:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime is not installed: skipping ONNX Runtime", flush=True)
            args.no_onnx = True
    start = time.time()
    results = {
        "machine": machine_info(),
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sizes": args.sizes,
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "train_steps": args.train_steps,
        "train_warmup": args.train_warmup,
        "precisions": [] if args.no_train else args.precisions,
        "baseline_rev": args.baseline_rev,
        "load_before": load_average(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "heavy_sizes": args.heavy_sizes,
        "spin": args.spin,
    }
    threads_before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as workdir:
        old = import_revision(args.baseline_rev, workdir) if args.baseline_rev else None
        results["inference"] = {"models": {}, "timings": []} if args.no_inference else run_inference(args, workdir, old)
        results["training"] = [] if args.no_train else run_training(args, old)
    torch.set_num_threads(threads_before)
    results["load_after"] = load_average()
    results["wall_s"] = round(time.time() - start, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_report(results, args.out_dir / "speed.md", args.out_dir / "speed.json")
    print(f"wrote {args.out_dir / 'speed.md'} in {results['wall_s']} s", flush=True)
    return results


if __name__ == "__main__":
    main()
