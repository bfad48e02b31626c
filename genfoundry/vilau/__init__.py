"""VILA-U: a unified vision tower (residual-quantized tokens aligned with text) and an LLM with a depth
transformer that both answers questions about images and draws them."""

from genfoundry.vilau.depth import DepthConfig, DepthTransformer
from genfoundry.vilau.model import SPECIAL_TOKENS, Segment, VilaU, VilaUConfig, build_vilau_tokenizer
from genfoundry.vilau.tower import ResidualQuantizer, TowerConfig, VisionTower

__all__ = [
    "SPECIAL_TOKENS", "DepthConfig", "DepthTransformer", "ResidualQuantizer", "Segment", "TowerConfig", "VilaU",
    "VilaUConfig", "VisionTower", "build_vilau_tokenizer",
]
