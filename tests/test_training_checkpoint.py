"""Checkpoints: a killed run resumed from its checkpoint continues the same trajectory; clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from genfoundry import hub
from genfoundry.training import (
    EMA,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)


def _parts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, EMA(model, decay=0.9)


def _steps(model, opt, ema, n):
    for _ in range(n):
        # Every random source in play: torch (data + dropout), python, numpy.
        x = torch.randn(6, 4) * (1 + random.random()) + float(np.random.rand())
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)


def test_resume_continues_same_trajectory(tmp_path):
    seed_everything(3)
    model, opt, ema = _parts()
    _steps(model, opt, ema, 6)

    seed_everything(3)
    first, opt1, ema1 = _parts()
    _steps(first, opt1, ema1, 3)
    save_checkpoint(checkpoint_path(tmp_path, 3), model=first, optimizer=opt1, ema=ema1, step=3,
                    extra={"note": "half"})
    seed_everything(99)  # the "killed" process's RNG is lost
    resumed, opt2, ema2 = _parts()
    step, extra = load_checkpoint(latest_checkpoint(tmp_path), model=resumed, optimizer=opt2, ema=ema2)
    assert step == 3 and extra == {"note": "half"}
    _steps(resumed, opt2, ema2, 3)

    for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    for key in ema.shadow:
        assert torch.equal(ema.shadow[key], ema2.shadow[key]), key


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "nothing") is None
    assert latest_checkpoint(tmp_path) is None
    model, opt, _ = _parts()
    for step in (5, 40, 7):
        save_checkpoint(checkpoint_path(tmp_path, step), model=model, optimizer=opt, step=step)
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 40)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    model, opt, ema = _parts()
    with pytest.raises(hub.CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "checkpoint-00000001.pt", model=model, optimizer=opt)
    path = save_checkpoint(tmp_path / "good.pt", model=model, optimizer=opt, ema=ema, step=1)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(hub.CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "truncated.pt", model=model, optimizer=opt)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(hub.CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "garbage.pt", model=model)
    other = nn.Linear(3, 3)
    with pytest.raises(hub.CheckpointError, match="missing keys"):
        load_checkpoint(path, model=other)


def test_ema_average_and_copy():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    ema.update(model)  # 0 -> 2 -> 3
    target = nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.allclose(target.weight, torch.full((1, 2), 3.0))
    restored = EMA(target, decay=0.1)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.5 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)
