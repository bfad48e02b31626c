"""Smoothing: move activation outliers into the weights, ``X W^T = (X / l) (W * l)^T``.

``l_j = max|X_j|^a / max|W_j|^b`` per input channel j. The search tries the (a, b) pairs of
`SMOOTH_GRID` ((0, 0), (a, 0), (a, 1 - a) for a = 0.05 .. 0.95) and keeps the one with the lowest layer
output error measured with the low-rank branch and both quantizers active, on a small sample of
calibration tokens. Layers that read the same input (q/k/v) are searched together with one shared l
(the sum of their relative output errors is minimised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from genfoundry.svdquant.lowrank import rank_r_svd

_ALPHAS = [round(0.05 * i, 2) for i in range(1, 20)]
SMOOTH_GRID: tuple[tuple[float, float], ...] = (
    ((0.0, 0.0),) + tuple((a, 0.0) for a in _ALPHAS) + tuple((a, round(1.0 - a, 2)) for a in _ALPHAS)
)
_EPS = 1e-5


def weight_channel_amax(weights: list[torch.Tensor]) -> torch.Tensor:
    """max |W[:, j]| over the output rows of every weight in the list -> [K] fp32."""
    return torch.stack([w.detach().float().abs().amax(dim=0) for w in weights]).amax(dim=0)


def smooth_factors(x_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``l = max|X|^alpha / max|W|^beta`` (fp32 [K]), with zero channels treated as tiny, not zero."""
    lam = x_amax.float().clamp_min(_EPS).pow(alpha) / w_amax.float().clamp_min(_EPS).pow(beta)
    return lam.clamp(1e-4, 1e4)


@dataclass
class LayerProblem:
    """One linear layer as the search sees it."""

    weight: torch.Tensor  # [N, K] fp32
    sample: torch.Tensor | None  # [T, K] fp32 calibration tokens (None: never called -> weight error)
    unsigned: bool = False

    def __post_init__(self) -> None:
        self.reference = None if self.sample is None else self.sample @ self.weight.t()
        self._ref_norm = None if self.reference is None else float(self.reference.pow(2).sum().clamp_min(1e-20))


def output_error(
    problem: LayerProblem,
    lam: torch.Tensor,
    up: torch.Tensor,
    down: torch.Tensor,
    residual_q: torch.Tensor,
    quantize_act: Callable[[torch.Tensor, bool], torch.Tensor],
    x_hat_q: torch.Tensor | None = None,
) -> float:
    """Relative squared output error ``||Y_q - X W^T||^2 / ||X W^T||^2`` of the quantized layer.

    ``Y_q = Qa(X / l) Qw(R)^T + (X / l) down up^T``. Without a sample: relative weight error."""
    up32, down32 = up.float(), down.float()
    if problem.sample is None:
        w_q = (residual_q + up32 @ down32.t()) / lam
        return float((w_q - problem.weight).pow(2).sum() / problem.weight.pow(2).sum().clamp_min(1e-20))
    x_hat = problem.sample / lam
    xq = quantize_act(x_hat, problem.unsigned) if x_hat_q is None else x_hat_q
    y = xq @ residual_q.t()
    if up32.shape[1]:
        y = y + (x_hat @ down32) @ up32.t()
    return float((y - problem.reference).pow(2).sum()) / problem._ref_norm


def search_smoothing(
    problems: list[LayerProblem],
    x_amax: torch.Tensor,
    rank: int,
    quantize_weight: Callable[[torch.Tensor], torch.Tensor],
    quantize_act: Callable[[torch.Tensor, bool], torch.Tensor],
    *,
    grid: tuple[tuple[float, float], ...] = SMOOTH_GRID,
    generator: torch.Generator | None = None,
    power_iters: int = 2,
) -> tuple[torch.Tensor, tuple[float, float], float]:
    """Grid search of (a, b) for layers sharing one input -> ``(l [K], (a, b), summed error)``.

    Each candidate costs one rank-r SVD per layer (no refinement; fewer power iterations than the
    final SVD, enough to rank candidates) and one quantized forward on the token sample."""
    w_amax = weight_channel_amax([p.weight for p in problems])
    best: tuple[torch.Tensor, tuple[float, float], float] | None = None
    for alpha, beta in grid:
        lam = smooth_factors(x_amax, w_amax, alpha, beta).to(problems[0].weight.device)
        total = 0.0
        shared_xq: dict[bool, torch.Tensor] = {}
        for p in problems:
            w_hat = p.weight * lam
            up, down = rank_r_svd(w_hat, rank, generator=generator, power_iters=power_iters)
            rq = quantize_weight((w_hat.double() - up @ down.t()).float())
            xq = None
            if p.sample is not None:
                if p.unsigned not in shared_xq:
                    shared_xq[p.unsigned] = quantize_act(p.sample / lam, p.unsigned)
                xq = shared_xq[p.unsigned]
            total += output_error(p, lam, up, down, rq, quantize_act, xq)
        if best is None or total < best[2]:
            best = (lam, (alpha, beta), total)
    assert best is not None
    return best
