"""SANA text-to-image: linear DiT, DC-AE, decoder-only LLM text encoder, flow samplers, pipeline."""

from genfoundry.sana.dcae import DCAE
from genfoundry.sana.layout import LayoutError, Region, plan_layout
from genfoundry.sana.pipeline import SanaPipeline, SanaPipelineConfig, SanaPipelineOutput
from genfoundry.sana.samplers import (
    SAMPLERS,
    Schedule,
    classifier_free_guidance,
    flow_dpm_solver,
    flow_dpm_solver_schedule,
    flow_euler,
    flow_euler_schedule,
    get_sampler,
)
from genfoundry.sana.text_encoder import DEFAULT_CHI, TextEncoder
from genfoundry.sana.transformer import (
    NAMED_CONFIGS,
    SanaTransformer,
    SanaTransformerConfig,
    named_config,
)

__all__ = [
    "DCAE",
    "DEFAULT_CHI",
    "NAMED_CONFIGS",
    "SAMPLERS",
    "LayoutError",
    "Region",
    "SanaPipeline",
    "SanaPipelineConfig",
    "SanaPipelineOutput",
    "SanaTransformer",
    "SanaTransformerConfig",
    "Schedule",
    "TextEncoder",
    "classifier_free_guidance",
    "flow_dpm_solver",
    "flow_dpm_solver_schedule",
    "flow_euler",
    "flow_euler_schedule",
    "get_sampler",
    "named_config",
    "plan_layout",
]
