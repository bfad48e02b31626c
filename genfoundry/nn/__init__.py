"""Layers shared by the models: attention (softmax and ReLU-linear), norms, GLUMBConv, embeddings.

Parameter names follow the diffusers conventions (`to_q`, `to_out.0`, `conv_inverted`, `linear_1`, ...)
so checkpoints in the diffusers layout load into these modules without renaming.
"""

from genfoundry.nn.attention import (
    CrossAttention,
    LinearSelfAttention,
    relu_linear_attention,
    softmax_attention,
    text_mask_to_bias,
)
from genfoundry.nn.embeddings import (
    TimestepEmbedding,
    sincos_pos_embed_2d,
    timestep_sinusoidal,
)
from genfoundry.nn.glumbconv import GLUMBConv
from genfoundry.nn.norms import RMSNorm, modulate

__all__ = [
    "CrossAttention",
    "GLUMBConv",
    "LinearSelfAttention",
    "RMSNorm",
    "TimestepEmbedding",
    "modulate",
    "relu_linear_attention",
    "sincos_pos_embed_2d",
    "softmax_attention",
    "text_mask_to_bias",
    "timestep_sinusoidal",
]
