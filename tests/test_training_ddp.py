"""DDP with 2 gloo ranks on CPU: gradients are averaged across ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from genfoundry.training import DistInfo, cleanup_distributed, rank_max, seed_everything, setup_distributed

STEPS = 3
BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, BATCH, 5, generator=g), torch.randn(STEPS, BATCH, 3, generator=g)


def _train(model: nn.Module, rows: slice) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    xs, ys = _data()
    for x, y in zip(xs, ys):
        loss = nn.functional.mse_loss(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = setup_distributed("gloo")
    try:
        assert info.world_size == world_size and info.rank == rank and info.is_main == (rank == 0)
        assert info.device.type == "cpu"
        seed_everything(0, rank)
        model = nn.parallel.DistributedDataParallel(_model())
        per_rank = BATCH // world_size
        _train(model, slice(rank * per_rank, (rank + 1) * per_rank))
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
        # time budgets: every rank sees the slowest rank's clock, so learning rates and stops agree
        with open(os.path.join(out_dir, f"clock{rank}.txt"), "w") as f:
            f.write(repr(rank_max(10.0 + 2.5 * rank, info.device)))
    finally:
        cleanup_distributed()


def test_ddp_two_gloo_ranks_average_gradients(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [float((tmp_path / f"clock{r}.txt").read_text()) for r in range(2)] == [12.5, 12.5]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    single = _model()
    _train(single, slice(0, BATCH))
    start = _model().state_dict()
    for key, value in single.state_dict().items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks diverged at {key}"
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, start[key]), "training did not change the weights"
    # One rank on its half batch alone would differ: the match above comes from averaging.
    half = _model()
    _train(half, slice(0, BATCH // 2))
    assert not torch.allclose(half.state_dict()["0.weight"], rank0["0.weight"], atol=1e-4)


def test_setup_distributed_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = setup_distributed("gloo")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), is_main=True)
    cleanup_distributed()


def test_setup_distributed_bad_input(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        setup_distributed("mpi")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        setup_distributed("gloo")
