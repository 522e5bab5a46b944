"""What a distributed run (``torchrun``: every process runs the same configs) needs beyond PyTorch's engine: a step
that writes files (the run's folders) run in one process, its result handed to every rank, and a clean end."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch.distributed as dist

__all__ = ["on_rank0", "is_rank0", "distributed", "end_process_group"]

T = TypeVar("T")

_final_barrier: list[dist.Work] = []


def distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank0() -> bool:
    """True in the process of rank 0, and in any process that is not part of a distributed run."""
    return not distributed() or dist.get_rank() == 0


def on_rank0(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``step(*args, **kwargs)`` computed on rank 0 only, its result (which must pickle) returned on every rank; its
    failure raised on rank 0 and, as ``RuntimeError`` with its message, on the others (ignite's ``one_rank_only``
    returns nothing to the others and leaves them waiting when rank 0 fails)."""
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
    """Wait until every rank gets here, then destroy the default process group; nothing without one. The barrier's
    handle is kept until the process ends: a gloo worker thread that freed it (and the last metric ``all_gather``'s
    Python tensors it holds) during interpreter shutdown would abort the finished run."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    barrier = dist.barrier(async_op=True)
    barrier.wait()
    _final_barrier.append(barrier)
    dist.destroy_process_group()
