"""CPU speed of UNeXt: inference paths side by side with MONAI's networks, and training throughput.

Run from the repository root::

    .venv/bin/python benchmarks/speed.py            # the full run (~10-15 minutes on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick    # a smoke test: 256x256 only, few runs (~1-2 minutes)

It writes ``benchmarks/results/speed.md`` (Markdown tables with the machine) and ``benchmarks/results/speed.json``
(every timing); ``--out-dir`` writes elsewhere.

Method: for each input size and thread count, all models run round-robin (one forward each, in turn, ``--runs``
times after ``--warmup`` rounds), so background load on a shared machine hits them alike; the tables give the
median and the 10th-90th percentiles in milliseconds, batch 1, under ``torch.inference_mode()``. Parameters and
multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` on the plain eager model (MACs = FLOPs / 2,
convolutions and matrix products only). Every UNeXt path is checked against the plain model (max abs difference)
before it is timed. Training: images/second of forward + backward + Adam step at batch 8, 256x256, loss
0.5 * BCE-with-logits + soft Dice, as the paper trains.

Threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` for PyTorch, no spinning in ONNX Runtime) unless ``--spin``
is given: on a shared machine with more runnable threads than cores, spin-waiting OpenMP threads make 2-thread
timings 10-20x slower and meaningless. MONAI's heavy networks (BasicUNet, BasicUNetPlusPlus, AttentionUnet) run at
256x256 only unless ``--heavy-sizes 256 512`` (at 512x512 they add 5-10 minutes and run 10-60x slower than UNeXt).

The "straightforward" baseline is defined in this file only, for comparison: the paper's network written the
direct way from its description (docs/unext_reference.md in the shared folder), as its code is structured:
channel-first convolutions, token layout (B, N, C) inside the tokenized stages with ``nn.Linear`` for fc1/fc2 and
``nn.LayerNorm`` on tokens, transposes/reshapes between tokens and maps around the depthwise conv, and the shift as
zero-pad -> ``torch.chunk`` -> ``torch.roll`` per group -> ``torch.cat`` -> crop. It loads the same weights and its
outputs match UNeXt's (checked below).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

from unext_monai import UNEXT_S_FEATURES, UNeXt  # noqa: E402
from unext_monai.networks.fast import optimize_for_inference  # noqa: E402

# --------------------------------------------------------------------------------------------------------------------
# the straightforward baseline (token layout), for comparison only


class _TokenShiftMLP(nn.Module):
    """shift(H) -> Linear -> depthwise 3x3 -> GELU -> dropout -> shift(W) -> Linear -> dropout, on tokens (B, N, C)."""

    def __init__(self, channels: int, shift_size: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(channels, channels)
        self.drop = nn.Dropout(0.0)
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
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(x))
        x = self.fc2(self._shift(x, h, w, 3))
        return self.drop(x)


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

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features=(16, 32, 128, 160, 256)) -> None:
        super().__init__()
        f = features
        self.encoder1, self.ebn1 = nn.Conv2d(in_channels, f[0], 3, padding=1), nn.BatchNorm2d(f[0])
        self.encoder2, self.ebn2 = nn.Conv2d(f[0], f[1], 3, padding=1), nn.BatchNorm2d(f[1])
        self.encoder3, self.ebn3 = nn.Conv2d(f[1], f[2], 3, padding=1), nn.BatchNorm2d(f[2])
        self.patch_embed3, self.block1, self.norm3 = _PatchEmbed(f[2], f[3]), _TokenBlock(f[3]), nn.LayerNorm(f[3])
        self.patch_embed4, self.block2, self.norm4 = _PatchEmbed(f[3], f[4]), _TokenBlock(f[4]), nn.LayerNorm(f[4])
        self.decoder1, self.dbn1 = nn.Conv2d(f[4], f[3], 3, padding=1), nn.BatchNorm2d(f[3])
        self.dblock1, self.dnorm3 = _TokenBlock(f[3]), nn.LayerNorm(f[3])
        self.decoder2, self.dbn2 = nn.Conv2d(f[3], f[2], 3, padding=1), nn.BatchNorm2d(f[2])
        self.dblock2, self.dnorm4 = _TokenBlock(f[2]), nn.LayerNorm(f[2])
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t1 = F.relu(F.max_pool2d(self.ebn1(self.encoder1(x)), 2, 2))
        t2 = F.relu(F.max_pool2d(self.ebn2(self.encoder2(t1)), 2, 2))
        t3 = F.relu(F.max_pool2d(self.ebn3(self.encoder3(t2)), 2, 2))
        tokens, h, w = self.patch_embed3(t3)
        t4 = self._to_image(self.norm3(self.block1(tokens, h, w)), h, w)
        tokens, h, w = self.patch_embed4(t4)
        out = self._to_image(self.norm4(self.block2(tokens, h, w)), h, w)
        out = F.relu(self._up(self.dbn1(self.decoder1(out)))) + t4
        _, _, h, w = out.shape
        out = self._to_image(self.dnorm3(self.dblock1(out.flatten(2).transpose(1, 2), h, w)), h, w)
        out = F.relu(self._up(self.dbn2(self.decoder2(out)))) + t3
        _, _, h, w = out.shape
        out = self._to_image(self.dnorm4(self.dblock2(out.flatten(2).transpose(1, 2), h, w)), h, w)
        out = F.relu(self._up(self.dbn3(self.decoder3(out)))) + t2
        out = F.relu(self._up(self.dbn4(self.decoder4(out)))) + t1
        return self.final(F.relu(self._up(self.decoder5(out))))

    @torch.no_grad()
    def load_from_unext(self, net: UNeXt) -> StraightforwardUNeXt:
        """Copy the weights of a 2D :class:`UNeXt` (same widths, shift_size 5, mlp_ratio 1)."""
        pairs = {
            "encoder1": net.down_1.conv, "ebn1": net.down_1.norm, "encoder2": net.down_2.conv, "ebn2": net.down_2.norm,
            "encoder3": net.down_3.conv, "ebn3": net.down_3.norm,
            "patch_embed3.proj": net.down_4.patch_embed, "patch_embed3.norm": net.down_4.embed_norm,
            "block1": net.down_4.block, "norm3": net.down_4.norm,
            "patch_embed4.proj": net.down_5.patch_embed, "patch_embed4.norm": net.down_5.embed_norm,
            "block2": net.down_5.block, "norm4": net.down_5.norm,
            "decoder1": net.up_4.conv_up.conv, "dbn1": net.up_4.conv_up.norm, "dblock1": net.up_4.block,
            "dnorm3": net.up_4.norm, "decoder2": net.up_3.conv_up.conv, "dbn2": net.up_3.conv_up.norm,
            "dblock2": net.up_3.block, "dnorm4": net.up_3.norm, "decoder3": net.up_2.conv, "dbn3": net.up_2.norm,
            "decoder4": net.up_1.conv, "dbn4": net.up_1.norm, "decoder5": net.up_0.conv, "final": net.final_conv,
        }
        for name, source in pairs.items():
            target = self.get_submodule(name)
            if isinstance(target, _TokenBlock):
                target.norm2.load_state_dict(source.norm.state_dict())
                for part in ("fc1", "fc2"):
                    conv = getattr(source.mlp, part)
                    getattr(target.mlp, part).weight.copy_(conv.weight.flatten(1))
                    getattr(target.mlp, part).bias.copy_(conv.bias)
                target.mlp.dwconv.load_state_dict(source.mlp.dwconv.state_dict())
            else:
                target.load_state_dict(source.state_dict())
        return self


# --------------------------------------------------------------------------------------------------------------------
# helpers


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
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


def trained_bn(net: nn.Module, in_channels: int, seed: int = 0) -> nn.Module:
    """Give BatchNorms non-trivial running statistics (a few training-mode passes), then eval mode."""
    torch.manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(2, in_channels, 64, 64))
    return net.eval()


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
    with torch.inference_mode():
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


def monai_models() -> dict[str, nn.Module]:
    from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, SegResNet, UNet

    return {
        "MONAI UNet (16-256, 2 res units)": UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=3, out_channels=1),
        "MONAI BasicUNetPlusPlus": BasicUNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=1),
        "MONAI AttentionUnet (16-256)": AttentionUnet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2)),
        "MONAI SegResNet": SegResNet(spatial_dims=2, in_channels=3, out_channels=1),
    }


def build_unext_paths(net: UNeXt, tag: str, workdir: str, with_ort: bool, threads_list: list[int],
                      spin: bool) -> dict:
    """The timed paths of one trained UNeXt: name -> {"call" or "ort", "count", "reference"}."""
    from unext_monai.networks.export import export_onnx

    fast = optimize_for_inference(net)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.script(fast))
    paths = {
        f"{tag} eager": {"call": net},
        f"{tag} optimized eager": {"call": fast},
        f"{tag} TorchScript frozen": {"call": frozen},
    }
    if with_ort:
        onnx_path = os.path.join(workdir, f"{tag.replace(' ', '_')}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(fast, onnx_path, in_channels=net.in_channels, spatial_dims=2)
        paths[f"{tag} ONNX Runtime"] = {"ort": {t: ort_session(onnx_path, t, spin) for t in threads_list}}
    for entry in paths.values():
        entry["count"] = net  # the same function and multiply-adds as the plain model
        entry["reference"] = net
    return paths


def run_inference(args, threads_list: list[int], workdir: str) -> dict:
    torch.manual_seed(0)
    unext = trained_bn(UNeXt(2, 3, 1), 3)
    unext_s = trained_bn(UNeXt(2, 3, 1, features=UNEXT_S_FEATURES), 3)
    baseline = StraightforwardUNeXt().load_from_unext(unext).eval()
    models: dict[str, dict] = {}
    models.update(build_unext_paths(unext, "UNeXt", workdir, not args.no_onnx, threads_list, args.spin))
    models["UNeXt straightforward eager (baseline)"] = {"call": baseline, "count": baseline, "reference": unext}
    models.update(build_unext_paths(unext_s, "UNeXt-S", workdir, not args.no_onnx, threads_list, args.spin))
    for name, m in monai_models().items():
        models[name] = {"call": m.eval(), "count": m, "reference": None, "heavy": name in HEAVY}

    results: dict = {"models": {}, "timings": []}
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        xn = x.numpy()
        torch.set_num_threads(max(threads_list))
        here = {name: m for name, m in models.items() if not m.get("heavy") or size in args.heavy_sizes}
        for name, m in here.items():  # parameters, multiply-adds, parity with the plain model
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
                entry.setdefault("max_abs_diff_vs_plain", {})[str(size)] = diff
                if diff > 1e-4:
                    raise RuntimeError(f"{name} differs from the plain model by {diff} at {size}x{size}")
        for threads in threads_list:
            torch.set_num_threads(threads)
            fns = {}
            for name, m in here.items():
                if "ort" in m:
                    fns[name] = lambda s=m["ort"][threads], xn=xn: s.run(None, {"image": xn})
                else:
                    fns[name] = lambda f=m["call"], x=x: f(x)
            print(f"[inference] {size}x{size}, {threads} thread(s), load {load_average()}", flush=True)
            times = round_robin(fns, args.runs, args.warmup)
            for name, t in times.items():
                row = {"model": name, "size": size, "threads": threads, **summarize(t)}
                results["timings"].append(row)
                print(f"  {name:45s} {row['median_ms']:9.2f} ms", flush=True)
    return results


# --------------------------------------------------------------------------------------------------------------------
# training


class _PointwiseHead(nn.Module):
    """A 1x1 convolution computed as ``F.linear`` on the channel-last view (the proposed change to UNeXt.final_conv:
    at one thread and batch < 16, PyTorch runs a 1x1 convolution through its fallback kernel, slow_conv2d, whose
    backward pass zero-fills and copies full-resolution buffers; F.linear is a plain GEMM both ways)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.permute(0, 2, 3, 1), self.conv.weight.flatten(1), self.conv.bias)
        return y.permute(0, 3, 1, 2)


def run_training(args, threads_list: list[int]) -> list[dict]:
    from monai.losses import DiceLoss
    from monai.networks.nets import UNet

    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        unext = UNeXt(2, 3, 1)
        hooked = UNeXt(2, 3, 1)
        hooked.load_state_dict(unext.state_dict())
        hooked.final_conv = _PointwiseHead(hooked.final_conv)
        nets = {
            "UNeXt (ours)": unext,
            "UNeXt (ours) + final conv as F.linear (proposed)": hooked,
            "UNeXt straightforward (baseline)": StraightforwardUNeXt().load_from_unext(unext),
            "MONAI UNet (16-256, 2 res units)": UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        }
        x = torch.rand(args.train_batch, 3, 256, 256)
        y = (torch.rand(args.train_batch, 1, 256, 256) > 0.5).float()
        dice = DiceLoss(sigmoid=True)
        bce = nn.BCEWithLogitsLoss()
        steps = {}
        for name, net in nets.items():
            net.train()
            opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)

            def step(net=net, opt=opt, x=x, y=y, bce=bce, dice=dice):
                opt.zero_grad(set_to_none=True)
                out = net(x)
                loss = 0.5 * bce(out, y) + dice(out, y)
                loss.backward()
                opt.step()

            steps[name] = step
        print(f"[training] batch {args.train_batch}, {threads} thread(s), load {load_average()}", flush=True)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.train_warmup):
            for fn in steps.values():
                fn()
        for _ in range(args.train_steps):
            for name, fn in steps.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            med = statistics.median(t)
            row = {"model": name, "threads": threads, "batch": args.train_batch, "size": 256,
                   "median_step_s": med, "images_per_s": args.train_batch / med, "steps": len(t)}
            rows.append(row)
            print(f"  {name:45s} {row['images_per_s']:7.2f} img/s", flush=True)
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
    """The issue's targets, checked on this run's medians (all at batch 1, or batch 8 for training)."""
    lines = ["## Targets (this run)", ""]
    for size in results["sizes"]:
        for t in results["threads"]:
            paths = [n for n in results["inference"]["models"] if n.startswith("UNeXt ") and "baseline" not in n]
            timed = {n: _median(results, n, size, t) for n in paths}
            timed = {n: v for n, v in timed.items() if v is not None}
            unet = _median(results, "MONAI UNet (16-256, 2 res units)", size, t)
            base = _median(results, "UNeXt straightforward eager (baseline)", size, t)
            if not timed or unet is None:
                continue
            fastest = min(timed, key=timed.get)
            eager, opt = timed.get("UNeXt eager"), timed.get("UNeXt optimized eager")
            plural = "s" if t > 1 else ""
            text = f"- {size}x{size}, {t} thread{plural}: fastest UNeXt path: {fastest}, {timed[fastest]:.1f} ms"
            if size == 256 and t == 1:
                text += f" (target <= 10 ms: {'met' if timed[fastest] <= 10 else 'missed'})"
            if eager and opt:
                text += (f"; UNeXt eager / MONAI UNet = {eager / unet:.2f}, optimized eager / MONAI UNet = "
                         f"{opt / unet:.2f} (target <= 0.6)")
            if base and opt:
                text += f"; straightforward baseline / optimized eager = {base / opt:.2f}"
            lines.append(text)
    training = results.get("training") or []
    for t in results["threads"]:
        rows = {r["model"]: r["images_per_s"] for r in training if r["threads"] == t}
        base = rows.get("UNeXt straightforward (baseline)")
        if base:
            ours = rows.get("UNeXt (ours)")
            hooked = rows.get("UNeXt (ours) + final conv as F.linear (proposed)")
            text = f"- training, batch 8, {t} thread{'s' if t > 1 else ''}: UNeXt / straightforward baseline = "
            text += f"{ours / base:.2f}x images/s (target >= 1.5x)"
            if hooked:
                text += f"; with the proposed final-conv change {hooked / base:.2f}x"
            lines.append(text)
    return lines + [""]


def write_report(results: dict, args, path_md: Path, path_json: Path) -> None:
    info = results["machine"]
    lines = [
        "# UNeXt CPU speed",
        "",
        f"- CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs, "
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
        "The straightforward baseline is the paper's network written the direct way (token layout (B, N, C) with "
        "`nn.Linear` and token `nn.LayerNorm`, shift = pad -> chunk -> roll -> cat -> crop, channel-first "
        "convolutions), defined in `benchmarks/speed.py` only; it loads the same weights and computes the same "
        "outputs. BasicUNet, BasicUNetPlusPlus and AttentionUnet run at "
        f"{', '.join(str(s) for s in results['heavy_sizes'])} only (`--heavy-sizes`).",
        "Optimized eager = `unext_monai.networks.fast.optimize_for_inference(net)`; TorchScript frozen = "
        "`torch.jit.freeze(torch.jit.script(optimized))`; ONNX Runtime = the optimized module exported with "
        "`export_onnx`, CPUExecutionProvider, all graph optimisations.",
        "",
    ]
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
                  "| model | threads | s/step (median) | images/s | vs baseline |", "|---|---|---|---|---|"]
        for row in results["training"]:
            base = next(r for r in results["training"] if r["threads"] == row["threads"] and "baseline" in r["model"])
            lines.append(f"| {row['model']} | {row['threads']} | {row['median_step_s']:.3f} | "
                         f"{row['images_per_s']:.2f} | {row['images_per_s'] / base['images_per_s']:.2f}x |")
        lines.append("")
    lines += ["Parity of every UNeXt path with the plain model (max abs difference of the logits):", ""]
    for name, entry in models.items():
        if "max_abs_diff_vs_plain" in entry:
            diffs = ", ".join(f"{s}: {d:.1e}" for s, d in entry["max_abs_diff_vs_plain"].items())
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
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per model (default 8)")
    p.add_argument("--train-warmup", type=int, default=None, help="untimed training steps per model (default 2)")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--no-train", action="store_true", help="skip the training benchmark")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
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
    args.train_steps = args.train_steps or (2 if quick else 8)
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
        "load_before": load_average(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "heavy_sizes": args.heavy_sizes,
        "spin": args.spin,
    }
    threads_before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as workdir:
        results["inference"] = run_inference(args, args.threads, workdir)
    results["training"] = [] if args.no_train else run_training(args, args.threads)
    torch.set_num_threads(threads_before)
    results["load_after"] = load_average()
    results["wall_s"] = round(time.time() - start, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_report(results, args, args.out_dir / "speed.md", args.out_dir / "speed.json")
    print(f"wrote {args.out_dir / 'speed.md'} in {results['wall_s']} s", flush=True)
    return results


if __name__ == "__main__":
    main()
