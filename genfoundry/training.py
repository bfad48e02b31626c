"""Training utilities shared by every model in the package: distributed setup, seeds, EMA, checkpoints.

- `setup_distributed()` reads the variables `torchrun` sets (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT) and starts a process group (gloo on CPU, nccl on CUDA). Without them it is
  a no-op that describes a single process.
- `save_checkpoint` / `load_checkpoint` store model, optimizer, EMA, step and the RNG state of every
  rank (python, numpy, torch, cuda) in one atomically written file, so a killed run resumed from its
  last checkpoint continues the same trajectory.
"""

from __future__ import annotations

import datetime
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from genfoundry import hub

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


# ----------------------------------------------------------------------------------------------
# Distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    `backend` None picks nccl when CUDA is available and gloo otherwise; "gloo" always trains on CPU.
    With WORLD_SIZE unset or 1 nothing is initialised and the result describes one process.
    """
    if backend not in (None, "gloo", "nccl"):
        raise ValueError(f"backend must be None, 'gloo' or 'nccl', got {backend!r}")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("backend 'nccl' needs CUDA, but torch.cuda.is_available() is False; use 'gloo'")
    if backend == "nccl":
        device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun")
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, is_main=rank == 0)


def cleanup_distributed() -> None:
    """Leave the process group if one was started (safe to call in every case).

    Ranks first wait for each other: a rank that tears gloo down while another still has a collective
    in flight can abort ("terminate called without an active exception"). The gloo wait has a timeout,
    so a rank whose peer already died still exits."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: leave anyway
    dist.destroy_process_group()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_max(value: float, device: torch.device) -> float:
    """The largest `value` over all ranks (e.g. elapsed seconds: the slowest rank's clock), the same on
    every rank, so that time-driven decisions (learning rate, stopping) agree across the job."""
    if _distributed():
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())
    return float(value)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or torch.compile) wrapper."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# ----------------------------------------------------------------------------------------------
# Seeds and RNG state


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices); each rank gets its own stream (seed + rank)."""
    value = int(seed) + int(rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as plain types and tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------------------------
# EMA


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers, kept in fp32."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().float().clone() for k, v in self._tracked(model).items()}

    @staticmethod
    def _tracked(model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in unwrap(model).state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = self._tracked(model)
        if current.keys() != self.shadow.keys():
            raise ValueError("EMA.update: the model's parameters differ from those the EMA was built for")
        keys = list(self.shadow)
        averages = [self.shadow[k] for k in keys]
        values = [current[k].detach().float() for k in keys]
        torch._foreach_lerp_(averages, values, 1.0 - self.decay)  # one fused launch, not one per tensor

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones (cast to each tensor's dtype)."""
        target = unwrap(model).state_dict()
        for key, value in self.shadow.items():
            if key not in target:
                raise ValueError(f"EMA.copy_to: the model has no tensor named {key!r}")
            target[key].copy_(value.to(target[key].dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        hub.check_state_dict(shadow, self.shadow, what="EMA state")
        self.decay = float(state["decay"])
        self.shadow = {k: shadow[k].float().to(self.shadow[k].device).clone() for k in self.shadow}


# ----------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"checkpoint-{int(step):08d}.pt"


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `folder` (named checkpoint-<step>.pt), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ema: EMA | None = None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model, optimizer, EMA, step, `extra` and every rank's RNG state to `path` atomically.

    Under torch.distributed this is collective: call it on every rank (the RNG states are gathered);
    rank 0 writes the file and all ranks wait until it exists.
    """
    path = Path(path)
    states = [rng_state()]
    if _distributed():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if not _distributed() or dist.get_rank() == 0:
        payload = {
            "format": "genfoundry-training-checkpoint-v1",
            "step": int(step),
            "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "extra": dict(extra or {}),
            "rng": states,
        }
        hub.torch_save_atomic(payload, path)
    if _distributed():
        dist.barrier()
    return path


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: EMA | None = None,
) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint written by `save_checkpoint` (including this rank's RNG state).

    Returns (step, extra). A missing, truncated or foreign file raises `hub.CheckpointError`.
    """
    path = Path(path)
    if not path.exists():
        raise hub.CheckpointError(f"cannot resume: checkpoint not found: {path}")
    if path.is_dir():
        raise hub.CheckpointError(f"cannot resume: expected a checkpoint file, got a folder: {path} "
                                  f"(latest in it: {latest_checkpoint(path)})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise hub.CheckpointError(f"cannot resume: {path} is corrupt or not a training checkpoint "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != "genfoundry-training-checkpoint-v1":
        raise hub.CheckpointError(f"cannot resume: {path} is not a genfoundry training checkpoint")
    target = unwrap(model)
    hub.check_state_dict(payload["model"], target.state_dict(), what=f"checkpoint {path}")
    target.load_state_dict(payload["model"])
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise hub.CheckpointError(f"cannot resume: {path} holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    if ema is not None:
        if payload["ema"] is None:
            raise hub.CheckpointError(f"cannot resume: {path} holds no EMA state")
        ema.load_state_dict(payload["ema"])
    rank = dist.get_rank() if _distributed() else 0
    states = payload["rng"]
    if rank < len(states):
        set_rng_state(states[rank])
    return int(payload["step"]), dict(payload["extra"])
