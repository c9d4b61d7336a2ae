"""Small helpers for training on several processes (GPUs or machines) with torch.distributed.

Launch any script that calls :func:`sela_edu.training.train` under torchrun; each process trains on its
own shard of the data and the label optimisation runs jointly over all shards::

    # one machine, 4 GPUs (nccl), or 4 CPU processes (gloo) when there is no GPU
    torchrun --standalone --nproc_per_node=4 my_script.py

    # two machines with 8 GPUs each (run on both; node_rank 0 and 1)
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \
             --rdzv_backend=c10d --rdzv_endpoint=HOST_OF_NODE_0:29500 my_script.py

``train`` calls :func:`init_from_env` itself, so the script needs no changes. torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them everything runs in one process.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None, *, timeout_minutes: float = 30.0) -> tuple[int, int]:
    """Join the process group described by torchrun's environment variables; return (rank, world_size).

    Does nothing (and returns (0, 1)) when WORLD_SIZE is unset or 1; returns the current group's values
    when one is already initialised. ``backend`` defaults to nccl when CUDA is available, else gloo.
    On CUDA, each process uses the GPU numbered LOCAL_RANK.
    """
    if is_initialized():
        return get_rank(), get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not; launch with torchrun")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return get_rank(), get_world_size()


def device_for_rank(device: torch.device) -> torch.device:
    """With several processes on one machine, each takes its own GPU (cuda:LOCAL_RANK)."""
    if device.type == "cuda" and is_initialized() and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only CPU ones.
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(rows: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``rows`` (same trailing shape and dtype, any number of rows), in rank order.

    all_gather needs equal sizes, so the blocks are padded to the longest and cut back afterwards.
    """
    if not is_initialized():
        return [rows]
    device = _comm_device()
    rows = rows.to(device).contiguous()
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(get_world_size())]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], dtype=torch.int64, device=device))
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [block[:count] for block, count in zip(gathered, counts)]


def all_gather_labels(labels: torch.Tensor, indices: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Assemble the full label table from each rank's rows.

    ``labels`` is num_heads x n_local (or n_local), ``indices`` the data-set positions of those n_local
    rows. Returns num_heads x num_rows (or num_rows) on the CPU, identical on every rank. A position
    covered by several ranks (DistributedSampler pads its shards by repeating a few images) gets the same
    label from each, since every rank scored the same image with the same weights. Raises ValueError if
    some position is covered by no rank.
    """
    squeeze = labels.dim() == 1
    labels = labels.reshape(-1, labels.shape[-1]) if not squeeze else labels.unsqueeze(0)
    if indices.numel() != labels.shape[1]:
        raise ValueError(f"{indices.numel()} indices for {labels.shape[1]} label columns")
    # Gather rows of (index, label_head0, label_head1, ...) in one collective.
    table = torch.cat([indices.reshape(1, -1).to(torch.int64).cpu(), labels.to(torch.int64).cpu()], dim=0).T
    blocks = [b.cpu() for b in all_gather_rows(table)]
    merged = torch.cat(blocks, dim=0)
    full = torch.full((labels.shape[0], num_rows), -1, dtype=torch.int64)
    full[:, merged[:, 0]] = merged[:, 1:].T
    if (full < 0).any():
        missing = int((full[0] < 0).sum())
        raise ValueError(f"{missing} of {num_rows} images got no label from any rank: the shards do not cover the data")
    return full[0] if squeeze else full


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (shape and dtype must already agree)."""
    if not is_initialized():
        return tensor
    device = _comm_device()
    moved = tensor.to(device).contiguous()
    dist.broadcast(moved, src=src)
    return moved.to(tensor.device)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``tensor`` over ranks (same shape and dtype on every rank), on its device."""
    if not is_initialized():
        return tensor
    moved = tensor.to(_comm_device()).contiguous()
    dist.all_reduce(moved, op=dist.ReduceOp.MAX)
    return moved.to(tensor.device)


def all_reduce_mean(value: float) -> float:
    """The mean of a Python number over ranks (for logging the loss of the whole batch)."""
    if not is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def average_buffers(module: torch.nn.Module) -> None:
    """Make every rank's floating-point buffers (BatchNorm running statistics) their mean over ranks.

    DistributedDataParallel copies rank 0's buffers to the others at the start of each forward pass,
    but the last forward of a phase leaves each rank with statistics of its own batch. Averaging before
    scoring, evaluating or saving gives all ranks one network (and the statistics of all shards).
    """
    if not is_initialized():
        return
    device = _comm_device()
    world = get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            moved = buffer.detach().to(device, copy=True)
            dist.all_reduce(moved)
            buffer.copy_(moved.div_(world).to(buffer.device))
        else:
            moved = buffer.detach().to(device, copy=True)
            dist.broadcast(moved, src=0)
            buffer.copy_(moved.to(buffer.device))
