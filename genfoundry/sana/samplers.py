"""Flow-matching samplers as pure functions of (model_fn, sigmas, latents).

Convention (rectified flow, SANA): x_sigma = (1 - sigma) x0 + sigma eps, sigma in [0, 1]; the model
predicts the velocity v = eps - x0, so x0 = x - sigma v. Schedules reproduce diffusers'
`FlowMatchEulerDiscreteScheduler(shift=s)` and `DPMSolverMultistepScheduler(use_flow_sigmas=True,
flow_shift=s, prediction_type="flow_prediction")` exactly (same float32 values, same model timesteps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

# model_fn(latents [B,C,H,W], timestep [B] in [0, 1000)) -> velocity [B,C,H,W]
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class Schedule:
    """`sigmas` [steps + 1] (ends at 0) and the model timesteps [steps] the sampler feeds the model."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def _shift(sigmas, shift: float):
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_euler_schedule(steps: int, shift: float = 3.0) -> Schedule:
    """diffusers FlowMatchEulerDiscreteScheduler(shift).set_timesteps(steps), float32.

    Like diffusers, the end point sigma_min is the already-shifted 1/1000 and the linspace between
    1 and it is shifted again (so the last sigma is shift(shift(0.001)))."""
    _check_steps(steps)
    train = torch.from_numpy(
        np.linspace(1, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS, dtype=np.float32)[::-1].copy()
    )
    train_sigmas = _shift(train / NUM_TRAIN_TIMESTEPS, shift)
    sigma_max, sigma_min = train_sigmas[0].item(), train_sigmas[-1].item()
    timesteps = np.linspace(sigma_max * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = torch.from_numpy(_shift(timesteps / NUM_TRAIN_TIMESTEPS, shift)).to(torch.float32)
    return Schedule(torch.cat([sigmas, torch.zeros(1)]), sigmas * NUM_TRAIN_TIMESTEPS)


def flow_dpm_solver_schedule(steps: int, shift: float = 3.0) -> Schedule:
    """diffusers DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift) schedule.

    sigma = flip(shift(1 - linspace(1, 1/1000, steps + 1)))[:-1] then 0; the model sees
    int(sigma * 1000) (diffusers stores these timesteps as int64)."""
    _check_steps(steps)
    alphas = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1)
    sigmas = np.flip(_shift(1.0 - alphas, shift))[:-1].copy()
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64).to(torch.float32)
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    return Schedule(sigmas, timesteps)


def _progress(total: int, enabled: bool | None):
    return tqdm(total=total, disable=not enabled if enabled is not None else None, leave=False, desc="sampling")


def _timesteps_or_default(sigmas: torch.Tensor, timesteps: torch.Tensor | None) -> torch.Tensor:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries (start ... 0), got {tuple(sigmas.shape)}")
    if timesteps is None:
        return sigmas[:-1] * NUM_TRAIN_TIMESTEPS
    if len(timesteps) != len(sigmas) - 1:
        raise ValueError(f"need len(sigmas) - 1 = {len(sigmas) - 1} timesteps, got {len(timesteps)}")
    return timesteps


def flow_euler(
    model_fn: ModelFn,
    sigmas: torch.Tensor,
    latents: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    progress: bool | None = False,
) -> torch.Tensor:
    """Euler on the flow ODE: x <- x + (sigma_next - sigma) v. The state is kept in fp32."""
    timesteps = _timesteps_or_default(sigmas, timesteps)
    x = latents.float()
    with _progress(len(timesteps), progress) as bar:
        for i, t in enumerate(timesteps.tolist()):
            v = model_fn(x, torch.full((x.shape[0],), t, device=x.device)).float()
            x = x + (sigmas[i + 1] - sigmas[i]).to(x.device) * v
            bar.update()
    return x


def flow_dpm_solver(
    model_fn: ModelFn,
    sigmas: torch.Tensor,
    latents: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    progress: bool | None = False,
) -> torch.Tensor:
    """Flow-DPM-Solver: multistep DPM-Solver++ (order 2, midpoint) on the data prediction
    x0 = x - sigma v, with alpha = 1 - sigma, lambda = log(alpha / sigma). The first step (no history
    yet) and the final step (to sigma = 0, where the update is exactly x0) are first order, as in
    diffusers with final_sigmas_type="zero"; every other step is second order."""
    timesteps = _timesteps_or_default(sigmas, timesteps)
    sig = sigmas.to(torch.float32).cpu()
    x = latents.float()
    prev_x0: torch.Tensor | None = None
    n = len(timesteps)
    with _progress(n, progress) as bar:
        for i, t in enumerate(timesteps.tolist()):
            v = model_fn(x, torch.full((x.shape[0],), t, device=x.device)).float()
            x0 = x - sig[i].to(x.device) * v
            s_t, s_0 = sig[i + 1], sig[i]
            if i == n - 1 or s_t == 0:
                # lambda_t = +inf: both DPM-Solver++ updates reduce to x0.
                x_next = x0
            else:
                a_t, a_0 = 1 - s_t, 1 - s_0
                lam_t = torch.log(a_t) - torch.log(s_t)
                lam_0 = torch.log(a_0) - torch.log(s_0)
                h = lam_t - lam_0
                phi = torch.exp(-h) - 1.0
                if prev_x0 is None:
                    x_next = (s_t / s_0) * x - (a_t * phi) * x0
                else:
                    s_1 = sig[i - 1]
                    lam_1 = torch.log(1 - s_1) - torch.log(s_1)
                    r0 = (lam_0 - lam_1) / h
                    d1 = (1.0 / r0) * (x0 - prev_x0)
                    x_next = (s_t / s_0) * x - (a_t * phi) * x0 - 0.5 * (a_t * phi) * d1
            prev_x0 = x0
            x = x_next
            bar.update()
    return x


SAMPLERS: dict[str, tuple[Callable[..., torch.Tensor], Callable[[int, float], Schedule]]] = {
    "flow-euler": (flow_euler, flow_euler_schedule),
    "flow-dpm-solver": (flow_dpm_solver, flow_dpm_solver_schedule),
}


def get_sampler(name: str) -> tuple[Callable[..., torch.Tensor], Callable[[int, float], Schedule]]:
    """(sampler function, schedule function) for a sampler name."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def classifier_free_guidance(
    model_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], scale: float
) -> ModelFn:
    """Wrap `model_fn(x, t) -> (v_uncond, v_cond)` into v = v_u + scale (v_c - v_u)."""

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_uncond, v_cond = model_fn(x, t)
        return v_uncond + scale * (v_cond - v_uncond)

    return guided
