# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""What a distributed run needs beyond PyTorch's engine: preparation in one process, and CPU-capable SyncBatchNorm.

Under ``torchrun`` every process runs the same configs. Steps that write files (the demo set, ``split.json``, the
run's folders) must run in one process only, and the others must use its result, not whatever they find on disk
while it is being written. :func:`on_rank0` runs a step in the process of rank 0 and hands the result to every rank
through ``torch.distributed`` (no shared file is polled); when the step fails there, every rank fails with its
message instead of waiting. Without an initialised process group it simply calls the step.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

__all__ = ["on_rank0", "is_rank0", "distributed", "end_process_group", "SyncBatchNorm", "with_sync_batchnorm"]

T = TypeVar("T")

# The final barrier's handle, held until the interpreter exits: see end_process_group.
_final_barrier: list[dist.Work] = []


def distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank0() -> bool:
    """True in the process of rank 0, and in any process that is not part of a distributed run."""
    return not distributed() or dist.get_rank() == 0


def on_rank0(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``step(*args, **kwargs)`` computed on rank 0 only; every rank returns its result (which must pickle).

    Raises:
        the step's own exception on rank 0; ``RuntimeError`` with rank 0's message on the other ranks.
    """
    if not distributed():
        return step(*args, **kwargs)
    payload: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", step(*args, **kwargs))
        except Exception as e:  # every rank must learn of it, or the others wait for ever
            error = e
            payload[0] = ("error", f"{type(e).__name__}: {e}")
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if error is not None:
        raise error
    if status == "error":
        raise RuntimeError(f"rank 0 failed to prepare the run, so this rank (rank {dist.get_rank()}) stops: {value}")
    return value


def end_process_group() -> None:
    """Wait until every rank gets here, then destroy the default process group; nothing without one.

    The barrier's handle is kept for the rest of the process, so the main thread, not one of gloo's worker threads,
    is the one that frees it. A finished gloo barrier holds the collectives that were still in flight when it was
    issued (the last metric ``all_gather``, whose tensors belong to Python); freeing them needs the GIL, and a worker
    thread that asks for the GIL while the interpreter is already shutting down aborts the whole process
    ("terminate called without an active exception") after the run has finished and saved.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    barrier = dist.barrier(async_op=True)
    barrier.wait()
    _final_barrier.append(barrier)
    dist.destroy_process_group()


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with statistics over every process's batch (all-reduced sums), forward and backward, on
    any device; the same arithmetic as PyTorch's CUDA-only ``SyncBatchNorm``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, eps: float,
                momentum: float) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([xf.numel() / xf.shape[1]])])
        dist.all_reduce(local)
        channels = x.shape[1]
        count = local[-1]
        mean = local[:channels] / count
        var = (local[channels: 2 * channels] / count - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            unbiased = var * count / (count - 1).clamp_min(1)
            running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        xhat = (xf - mean.view(shape)) * invstd.view(shape)
        y = xhat * weight.float().view(shape) if weight is not None else xhat
        y = y + bias.float().view(shape) if bias is not None else y
        ctx.save_for_backward(xf, weight, mean, invstd, count)
        ctx.has_bias = bias is not None
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        xf, weight, mean, invstd, count = ctx.saved_tensors
        dims = [0] + list(range(2, xf.dim()))
        shape = [1, -1] + [1] * (xf.dim() - 2)
        dy = grad.float()
        xmu = xf - mean.view(shape)
        local_dy, local_dy_xmu = dy.sum(dims), (dy * xmu).sum(dims)
        sums = torch.cat([local_dy, local_dy_xmu])
        dist.all_reduce(sums)
        channels = xf.shape[1]
        mean_dy, mean_dy_xmu = sums[:channels] / count, sums[channels:] / count
        scale = invstd * (weight.float() if weight is not None else 1.0)
        grad_x = (dy - mean_dy.view(shape) - xmu * (invstd * invstd * mean_dy_xmu).view(shape)) * scale.view(shape)
        grad_weight = (local_dy_xmu * invstd).to(weight.dtype) if weight is not None else None
        grad_bias = local_dy.to(weight.dtype) if ctx.has_bias else None
        return grad_x.to(grad.dtype), grad_weight, grad_bias, None, None, None, None


class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics span the batches of all processes of a distributed run, on CPUs
    (gloo) as on GPUs; PyTorch's own ``torch.nn.SyncBatchNorm`` runs on GPUs only. Same parameters and state dict as
    ``BatchNorm{1,2,3}d``; in eval mode, or outside a distributed run, it is plain batch normalisation."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (B, C, ...), got {input.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and distributed()):
            return super().forward(x)
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.0 if self.momentum is None else self.momentum
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
                                            momentum)


def with_sync_batchnorm(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``network`` with every BatchNorm layer replaced by :class:`SyncBatchNorm` (same weights and statistics) when
    ``enabled``; ``network`` unchanged otherwise. Use before wrapping in ``DistributedDataParallel``."""
    if not enabled:
        return network
    for name, module in list(network.named_modules()):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
            state = module.state_dict()
            sync.load_state_dict(state)
            sync.to(next((t.device for t in state.values()), torch.device("cpu")))
            parent_name, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent_name) if parent_name else network, child, sync)
    return network
