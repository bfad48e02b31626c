"""VILA-U: a unified vision tower (residual-quantized tokens aligned with text) and an LLM with a depth
transformer that both answers questions about images and draws them."""

from genfoundry.vilau.convert import load_official, save_official
from genfoundry.vilau.depth import DepthConfig, DepthTransformer, RQTransformer, build_depth_transformer
from genfoundry.vilau.model import SPECIAL_TOKENS, Segment, VilaU, VilaUConfig, build_vilau_tokenizer
from genfoundry.vilau.tower import ResidualQuantizer, TowerConfig, VisionTower, build_tower

__all__ = [
    "SPECIAL_TOKENS", "DepthConfig", "DepthTransformer", "RQTransformer", "ResidualQuantizer", "Segment",
    "TowerConfig", "VilaU", "VilaUConfig", "VisionTower", "build_depth_transformer", "build_tower",
    "build_vilau_tokenizer", "load_official", "save_official",
]
