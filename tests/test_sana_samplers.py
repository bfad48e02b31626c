"""Flow samplers: schedules equal diffusers' schedulers; sampling loops equal diffusers' scheduler loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from genfoundry.sana import (  # noqa: E402
    SanaTransformer,
    SanaTransformerConfig,
    classifier_free_guidance,
    flow_dpm_solver,
    flow_dpm_solver_schedule,
    flow_euler,
    flow_euler_schedule,
    get_sampler,
)


def euler_scheduler(shift):
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)


def dpm_scheduler(shift):
    return diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")


@settings(max_examples=8, deadline=None)
@given(steps=st.integers(1, 60), shift=st.sampled_from([1.0, 3.0, 4.0, 6.0, 2.5]))
def test_schedules_equal_diffusers(steps, shift):
    for make, ours in ((euler_scheduler, flow_euler_schedule), (dpm_scheduler, flow_dpm_solver_schedule)):
        ref = make(shift)
        ref.set_timesteps(steps)
        got = ours(steps, shift)
        assert torch.equal(got.sigmas, ref.sigmas.float())
        assert torch.equal(got.timesteps, ref.timesteps.float())
        assert got.steps == steps and got.sigmas[-1] == 0


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = SanaTransformerConfig(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                cross_attention_dim=16, caption_channels=8, sample_size=4)
    model = SanaTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("steps", [1, 2, 5, 12])
@pytest.mark.parametrize("name", ["flow-euler", "flow-dpm-solver"])
def test_sampling_loop_equals_diffusers_scheduler_loop(tiny_model, name, steps):
    gen = torch.Generator().manual_seed(steps)
    noise = torch.randn(2, 4, 4, 4, generator=gen)
    text = torch.randn(4, 3, 8, generator=gen)

    def model_fn(x, t):  # with classifier-free guidance, as the pipeline runs it
        with torch.no_grad():
            v = tiny_model(torch.cat([x, x]), torch.cat([t, t]), text)
        return v.chunk(2)

    guided = classifier_free_guidance(model_fn, 4.5)
    scheduler = (euler_scheduler if name == "flow-euler" else dpm_scheduler)(3.0)
    scheduler.set_timesteps(steps)
    expected = noise.clone()
    for t in scheduler.timesteps:
        v = guided(expected, t.float().expand(2))
        expected = scheduler.step(v, t, expected, return_dict=False)[0]

    sample, schedule_fn = get_sampler(name)
    schedule = schedule_fn(steps, 3.0)
    got = sample(guided, schedule.sigmas, noise, schedule.timesteps)
    assert (got - expected).abs().max().item() <= 1e-4
    assert (got - noise).abs().max().item() > 1e-2


def test_samplers_solve_a_known_flow():
    """Straight-line flow from x0 = 0.5: v = (x - x0) / sigma exactly; both samplers land on x0."""
    x0 = torch.full((1, 1, 2, 2), 0.5)
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))

    def exact(x, t):
        sigma = (t / 1000).clamp_min(1e-6).view(-1, 1, 1, 1)
        return (x - x0) / sigma

    sched = flow_euler_schedule(8, 1.0)
    assert torch.allclose(flow_euler(exact, sched.sigmas, noise), x0, atol=1e-4)
    sched = flow_dpm_solver_schedule(8, 3.0)
    assert torch.allclose(flow_dpm_solver(exact, sched.sigmas, noise), x0, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        flow_euler_schedule(0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        flow_dpm_solver_schedule(-3)
    with pytest.raises(ValueError, match="unknown sampler 'euler'.*flow-euler, flow-dpm-solver"):
        get_sampler("euler")
    with pytest.raises(ValueError, match="timesteps"):
        flow_euler(lambda x, t: x, torch.tensor([1.0, 0.0]), torch.zeros(1), timesteps=torch.tensor([1.0, 2.0]))
