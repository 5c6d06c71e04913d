"""Data-parallel training under torchrun: which rank this process is, and the process group.

`finetune` started by `torchrun --nproc-per-node N` (or `accelerate launch`) finds its
rank in the environment torchrun sets, joins the process group (gloo between CPU
processes, NCCL between GPUs) and trains its share of every global batch; without torchrun
it is rank 0 of 1 and nothing here costs anything.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import TypeVar

from structune.train.data import TokenizedExample

_T = TypeVar("_T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run: rank `rank` of `world_size`, computing
    on `device` (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, the adapter, logs and the progress bar."""
        return self.rank == 0

    def share(self, batch: list[TokenizedExample]) -> list[TokenizedExample]:
        """This rank's examples of a global batch: every `world_size`-th one, so that the
        shares of a length-grouped batch pad to similar lengths."""
        return batch[self.rank :: self.world_size]

    def broadcast(self, value: _T) -> _T:
        """Rank 0's `value`, on every rank."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def data_parallel() -> Ranks:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR), or run alone where it describes none.

    NCCL between GPUs, gloo between CPU processes. The group stays open for the next
    `finetune` call of the process (joining a second time under torchrun hangs) and is
    left at exit; a group the caller set up is used as it is.
    """
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return Ranks(device=device)
        if device != "cpu":
            torch.cuda.set_device(device)
        dist.init_process_group("gloo" if device == "cpu" else "nccl")
        atexit.register(dist.destroy_process_group)
    return Ranks(dist.get_rank(), dist.get_world_size(), device)
