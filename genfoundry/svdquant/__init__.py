"""SVDQuant: W4A4 post-training quantization of any PyTorch model.

Smooth activation outliers into the weights, absorb the weight outliers in a 16-bit low-rank branch
(SVD), quantize the residual to 4 bits; the engine (`genfoundry.nunchaku`) runs the result.

    from genfoundry.svdquant import quantize, QuantConfig, save_quantized, load_quantized, add_lora
    quantize(model, calibrate=lambda m: [m(x) for x in batches], config=QuantConfig(method="svdquant"))
"""

from genfoundry.svdquant.checkpoint import load_quantized, read_quantization_config, save_quantized
from genfoundry.svdquant.linear import SVDQLinear, W4A16Linear, W8A8Linear
from genfoundry.svdquant.lora import add_lora, lora_names, remove_lora, set_lora_strength
from genfoundry.svdquant.quantize import METHODS, QuantConfig, quantize

__all__ = [
    "METHODS",
    "QuantConfig",
    "SVDQLinear",
    "W4A16Linear",
    "W8A8Linear",
    "add_lora",
    "load_quantized",
    "lora_names",
    "quantize",
    "read_quantization_config",
    "remove_lora",
    "save_quantized",
    "set_lora_strength",
]
