"""genfoundry: efficient generative AI from model to silicon.

Subpackages: `shapes` (ShapeWorld data + evaluator), `sana` (text-to-image), `svdquant` and `nunchaku`
(W4A4 quantization and its engine), `vilau` (unified understanding + generation), `lego` (accelerator
generator). Import them directly; this module stays light so the CLI starts fast.
"""

__version__ = "0.1.0"
