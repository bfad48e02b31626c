"""The low-rank branch: rank-r SVD (float64) of the smoothed weight, and its iterative refinement.

Convention (the one the engine uses): ``W_hat [N, K] ~= up @ down.T`` with ``up = U_r S_r`` ([N, r])
and ``down = V_r`` ([K, r]), so the branch computes ``(x_hat @ down) @ up.T``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def rank_r_svd(
    w: torch.Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    power_iters: int = 4,
    oversample: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-`rank` factors ``(up [N, r], down [K, r])`` of ``w`` in float64.

    Small matrices use the exact `torch.linalg.svd`; large ones a randomized range finder with power
    iterations (Halko, Martinsson & Tropp 2011), which costs O(N K r) instead of O(N K min(N, K)) and
    matches the exact top singular subspace closely once a few power iterations have run."""
    n, k = w.shape
    if not 0 <= rank <= min(n, k):
        raise ValueError(f"rank {rank} must be between 0 and min(N, K) = {min(n, k)} for a weight of shape {(n, k)}")
    w64 = w.to(torch.float64)
    if rank == 0:
        return w64.new_zeros(n, 0), w64.new_zeros(k, 0)
    if rank + oversample >= min(n, k) // 2 or min(n, k) <= 256:
        u, s, vh = torch.linalg.svd(w64, full_matrices=False)
        return u[:, :rank] * s[:rank], vh[:rank].t()
    sketch = torch.randn(k, rank + oversample, dtype=torch.float64, generator=generator, device="cpu").to(w64.device)
    q, _ = torch.linalg.qr(w64 @ sketch)
    for _ in range(power_iters):
        z, _ = torch.linalg.qr(w64.t() @ q)
        q, _ = torch.linalg.qr(w64 @ z)
    u_small, s, vh = torch.linalg.svd(q.t() @ w64, full_matrices=False)
    u = q @ u_small
    return u[:, :rank] * s[:rank], vh[:rank].t()


@dataclass
class LowRankResult:
    up: torch.Tensor  # [N, r] float64
    down: torch.Tensor  # [K, r] float64 (for the smoothed input)
    residual_q: torch.Tensor  # [N, K] fake-quantized residual W_hat - up @ down.T (fp32)
    error: float
    iterations: int


def refine_lowrank(
    w_hat: torch.Tensor,
    rank: int,
    quantize_residual: Callable[[torch.Tensor], torch.Tensor],
    error: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float],
    *,
    max_iters: int = 100,
    generator: torch.Generator | None = None,
) -> LowRankResult:
    """Low-rank branch with refinement ``L <- SVD_r(W - Q(W - L))``.

    Starts from the plain rank-r SVD, keeps the factors with the lowest ``error(up, down, residual_q)``
    and stops at the first iteration that does not improve it (or after `max_iters`)."""
    w64 = w_hat.to(torch.float64)
    up, down = rank_r_svd(w64, rank, generator=generator)
    rq = quantize_residual((w64 - up @ down.t()).float())
    best = LowRankResult(up, down, rq, error(up, down, rq), 0)
    if rank == 0:
        return best
    for it in range(1, max_iters + 1):
        up, down = rank_r_svd(w64 - best.residual_q.to(torch.float64), rank, generator=generator)
        rq = quantize_residual((w64 - up @ down.t()).float())
        err = error(up, down, rq)
        if not err < best.error:
            break
        best = LowRankResult(up, down, rq, err, it)
    return best
