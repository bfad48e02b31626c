"""SanaPipeline: prompt -> text embeddings -> flow sampler over the DiT -> DC-AE decode -> PIL images.

Folder layout = diffusers' SanaPipeline (model_index.json, transformer/, vae/, text_encoder/,
tokenizer/, scheduler/) plus `genfoundry_sana.json` with what diffusers keeps in code (flow shift,
CHI text, max text length, default steps/sampler/guidance, layout guidance).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genfoundry import hub
from genfoundry.errors import InputError
from genfoundry.sana.dcae import DCAE
from genfoundry.sana.layout import (
    LayoutError,
    Region,
    layout_term,
    plan_layout,
    region_masks,
)
from genfoundry.sana.samplers import SAMPLERS, get_sampler
from genfoundry.sana.text_encoder import DEFAULT_CHI, TextEncoder
from genfoundry.sana.transformer import SanaTransformer

# an int, one per image, None (random), or diffusers-style torch.Generator(s)
Seed = int | list[int] | torch.Generator | list[torch.Generator] | None

PIPELINE_CONFIG_NAME = "genfoundry_sana.json"
MODEL_INDEX_NAME = "model_index.json"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SanaPipelineOutput:
    """What `pipe(..., return_dict=True)` returns, as diffusers' `SanaPipelineOutput`: `.images` is a
    list of PIL images, an array [B, H, W, 3] in [0, 1] ('np'), a tensor [B, 3, H, W] in [0, 1] ('pt')
    or the latents [B, C, H/f, W/f] ('latent'), by `output_type`."""

    images: list[Image.Image] | np.ndarray | torch.Tensor


@dataclass
class SanaPipelineConfig:
    flow_shift: float = 3.0
    max_length: int = 300
    complex_human_instruction: list[str] | None = dataclasses.field(default_factory=lambda: list(DEFAULT_CHI))
    lowercase: bool = True
    steps: int = 20
    guidance_scale: float = 4.5
    sampler: str = "flow-dpm-solver"
    layout_guidance: float = 0.0  # > 0: place the objects of captions that name a relation (layout.py)
    layout_until_sigma: float = 0.75  # layout guidance acts while the noise level is above this

    @classmethod
    def from_dict(cls, raw: dict) -> SanaPipelineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class SanaPipeline:
    """Text-to-image with SANA. `pipe(prompt, height=..., width=..., steps=..., seed=...)` -> PIL images."""

    def __init__(
        self,
        transformer: SanaTransformer,
        vae: DCAE,
        text_encoder: TextEncoder,
        config: SanaPipelineConfig | None = None,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.config = config or SanaPipelineConfig(
            max_length=text_encoder.max_length,
            complex_human_instruction=text_encoder.complex_human_instruction,
            lowercase=text_encoder.lowercase,
        )
        if text_encoder.hidden_size != transformer.config.caption_channels:
            raise ValueError(
                f"text encoder width {text_encoder.hidden_size} != transformer caption_channels "
                f"{transformer.config.caption_channels}"
            )
        if vae.latent_channels != transformer.config.in_channels:
            raise ValueError(
                f"DC-AE latent channels {vae.latent_channels} != transformer in_channels {transformer.config.in_channels}"
            )

    # ------------------------------------------------------------------------------------------
    # properties

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (DC-AE compression x patch size)."""
        return self.vae.spatial_compression_ratio * self.transformer.config.patch_size

    @property
    def default_size(self) -> int:
        return self.transformer.config.sample_size * self.vae.spatial_compression_ratio

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> SanaPipeline:
        """Move all parts; `dtype` applies to the transformer and DC-AE (the text encoder keeps its own)."""
        self.transformer.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        self.text_encoder.to(device=device)
        return self

    # ------------------------------------------------------------------------------------------
    # generation

    def unknown_words(self, prompt: str) -> list[str]:
        return self.text_encoder.unknown_words(prompt)

    def encode_prompt(
        self, prompts: list[str], negative_prompt: str | list[str] = "", guidance: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings and masks; with `guidance` the negative prompts come first: [neg; pos]."""
        text, mask = self.text_encoder.encode(prompts, chi=True)
        if guidance:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
            neg_text, neg_mask = self.text_encoder.encode(negatives, chi=False)
            text, mask = torch.cat([neg_text, text]), torch.cat([neg_mask, mask])
        return text, mask

    def initial_noise(self, batch: int, height: int, width: int, seed: Seed) -> torch.Tensor:
        """fp32 Gaussian latents drawn on the CPU from `seed` (one generator per image for a list); a
        `torch.Generator` (or one per image) draws on its own device, as diffusers' `generator`."""
        f = self.vae.spatial_compression_ratio
        shape = (self.transformer.config.in_channels, height // f, width // f)
        if isinstance(seed, torch.Generator):
            noise = torch.randn((batch, *shape), generator=seed, device=seed.device)
        elif isinstance(seed, (list, tuple)):
            if len(seed) != batch:
                raise ValueError(f"got {len(seed)} seeds for {batch} prompts")
            noise = torch.stack([
                torch.randn(shape, generator=s, device=s.device) if isinstance(s, torch.Generator)
                else torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seed])
        else:
            gen = torch.Generator()
            if seed is None:
                gen.seed()
            else:
                gen.manual_seed(int(seed))
            noise = torch.randn((batch, *shape), generator=gen)
        return noise.to(self.device)

    @torch.inference_mode()
    def generate_latents(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        seed: Seed = 0,
        latents: torch.Tensor | None = None,
        progress: bool | None = None,
        warn_unknown_words: bool = True,
        layout_guidance: float | None = None,
        layouts: Sequence[Sequence[Region] | None] | None = None,
    ) -> torch.Tensor:
        """The sampled latents in the DiT's (scaled) latent space, fp32 [B, C, H/f, W/f].

        `layout_guidance` (default: the pipeline config's) > 0 turns on layout guidance (layout.py) for
        the prompts that have a layout: `layouts[i]` if given (a list of `Region`s, or None for none),
        else the one `plan_layout` reads from the caption. It needs classifier-free guidance."""
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        guidance_scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        layout_guidance = self.effective_layout_guidance(layout_guidance, guidance_scale)
        sample_fn, schedule_fn = get_sampler(cfg.sampler if sampler is None else sampler)
        prompts = self._check_prompts(prompt)
        height, width = self._check_size(height, width)
        if warn_unknown_words:
            for p in prompts:
                unknown = self.unknown_words(p)
                if unknown:
                    warnings.warn(f"prompt {p!r}: words unknown to the tokenizer: {unknown}", stacklevel=3)
        schedule = schedule_fn(steps, cfg.flow_shift)
        guided = guidance_scale > 1.0
        text, mask = self.encode_prompt(prompts, negative_prompt, guided)
        dtype = self.transformer.dtype
        text = text.to(device=self.device, dtype=dtype)
        mask = mask.to(self.device)
        if latents is None:
            latents = self.initial_noise(len(prompts), height, width, seed)
        in_channels = self.transformer.config.in_channels
        time_scale = self.transformer.config.timestep_scale
        regions = self._layout_regions(prompts, layouts, layout_guidance, guided, latents.shape[-2:])
        if regions is not None:
            owner, region_masks_, region_text, region_mask = regions
            text, mask = torch.cat([text, region_text.to(text)]), torch.cat([mask, region_mask.to(mask)])
            rows_of_image = [(b, owner == b) for b in owner.unique().tolist()]
        batch = len(prompts)
        text_context = self.transformer.encode_text(text, mask)  # once: no step changes the text

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # layout guidance on the high-noise steps only (timesteps are sigma * 1000)
            laid_out = regions is not None and float(t[0]) > cfg.layout_until_sigma * 1000
            x_in, t_in, rows = (torch.cat([x, x]), torch.cat([t, t]), 2 * batch) if guided else (x, t, batch)
            if laid_out:
                x_in, t_in, rows = torch.cat([x_in, x[owner]]), torch.cat([t_in, t[owner]]), len(text)
            v = self.transformer(x_in.to(dtype), t_in * time_scale, text_context=text_context.rows(rows)).float()
            if v.shape[1] == 2 * in_channels:  # learned-sigma models: keep the velocity half
                v = v[:, :in_channels]
            if not guided:
                return v
            v_uncond, v_cond = v[:batch], v[batch:2 * batch]
            out = v_uncond + guidance_scale * (v_cond - v_uncond)
            if laid_out:
                v_regions = v[2 * batch:]
                for b, mine in rows_of_image:
                    out[b] += layout_guidance * layout_term(v_regions[mine], v_uncond[b], region_masks_[mine])
            return out

        return sample_fn(velocity, schedule.sigmas, latents, schedule.timesteps, progress=progress)

    def effective_layout_guidance(self, layout_guidance: float | None, guidance_scale: float) -> float:
        """The layout guidance a call runs with: `layout_guidance` if given (>= 0), else the config's,
        which rides on classifier-free guidance (off when guidance_scale <= 1; an explicit value > 0
        without CFG is an error later, in `_layout_regions`)."""
        if layout_guidance is None:
            return self.config.layout_guidance if guidance_scale > 1.0 else 0.0
        layout_guidance = float(layout_guidance)
        if not layout_guidance >= 0:
            raise ValueError(f"layout_guidance must be >= 0 (0 turns it off), got {layout_guidance}")
        return layout_guidance

    def _layout_regions(self, prompts: list[str], layouts, layout_guidance: float, guided: bool, grid) -> tuple | None:
        """(owner image per region, masks [R, 1, h, w], region text embeddings and masks), or None when no
        prompt gets layout guidance."""
        if layout_guidance == 0:
            return None
        if not guided:
            raise ValueError("layout guidance needs classifier-free guidance: set guidance_scale > 1 or layout_guidance=0")
        if layouts is None:
            layouts = [plan_layout(p) for p in prompts]
        elif len(layouts) != len(prompts):
            raise ValueError(f"got {len(layouts)} layouts for {len(prompts)} prompts")
        owner, chosen = [], []
        for b, layout in enumerate(layouts):
            for region in layout or ():
                if not isinstance(region, Region):
                    raise LayoutError(f"layout of prompt {b}: expected Region objects, got {type(region).__name__}")
                owner.append(b)
                chosen.append(region)
        if not chosen:
            return None
        p = self.transformer.config.patch_size
        masks = region_masks(chosen, grid[0] // p, grid[1] // p)
        if p > 1:
            masks = masks.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)
        region_text, region_mask = self.text_encoder.encode([r.prompt for r in chosen], chi=True)
        return torch.tensor(owner, device=self.device), masks.to(self.device), region_text, region_mask

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, tile: bool | None = None) -> torch.Tensor:
        """Scaled latents -> images [B, 3, H, W] in [-1, 1] (fp32)."""
        raw = latents.to(self.vae.dtype) / self.vae.scaling_factor
        return self.vae.decode(raw, tile=tile).float()

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        seed: Seed = 0,
        tile_vae: bool | None = None,
        progress: bool | None = None,
        warn_unknown_words: bool = True,
        layout_guidance: float | None = None,
        layouts: Sequence[Sequence[Region] | None] | None = None,
        *,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool | None = None,
    ) -> list[Image.Image] | np.ndarray | torch.Tensor | SanaPipelineOutput | tuple:
        """Generate one image per prompt. Defaults (None) come from the pipeline config (steps, guidance,
        sampler, layout guidance; 20 / 4.5 / flow-dpm-solver / off unless the model's genfoundry_sana.json
        says otherwise) and the model's native size; `seed` int, per-image list, or None.

        diffusers' names work too: `num_inference_steps` (= steps), `generator` (a torch.Generator or one
        per image, instead of `seed`), `output_type` ('pil', 'np', 'pt', 'latent') and `return_dict`:
        True gives a `SanaPipelineOutput` with `.images`, False the tuple `(images,)`, and None (the
        default) the images themselves."""
        steps, seed = _diffusers_aliases(steps, num_inference_steps, seed, generator, output_type)
        latents = self.generate_latents(
            prompt, negative_prompt, height, width, steps, guidance_scale, sampler, seed,
            progress=progress, warn_unknown_words=warn_unknown_words,
            layout_guidance=layout_guidance, layouts=layouts,
        )
        images = latents if output_type == "latent" else _postprocess(self.decode(latents, tile=tile_vae), output_type)
        if return_dict is None:
            return images
        return SanaPipelineOutput(images) if return_dict else (images,)

    def _check_prompts(self, prompt: str | list[str]) -> list[str]:
        if isinstance(prompt, str):
            return [prompt]
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = list(prompt)
        if not prompts:
            raise ValueError("prompt is an empty list: give at least one prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("every prompt must be a string")
        return prompts

    def _check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        m = self.size_multiple
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % m:
                raise ValueError(f"{name} must be a positive multiple of {m} (DC-AE compression x patch size), got {value!r}")
        return height, width

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        text_encoder_dtype: torch.dtype | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> SanaPipeline:
        """Load a pipeline folder (embedded zoo name, local folder or cached repo id).

        `dtype` (or diffusers' name `torch_dtype`) None computes in float32 on the CPU, where
        half-precision kernels are slow or missing, and in bfloat16 on accelerators: the zoo stores fp16,
        but fp16 activations overflow in the DC-AE's gated convolutions (NaN images; SANA's own releases
        run in bf16 too)."""
        if torch_dtype is not None:
            if dtype is not None and dtype != torch_dtype:
                raise InputError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; give one of them")
            dtype = torch_dtype
        default = torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
        dtype = default if dtype is None else dtype
        text_encoder_dtype = default if text_encoder_dtype is None else text_encoder_dtype
        folder = hub.resolve(name_or_path)
        index_path = folder / MODEL_INDEX_NAME
        if not index_path.exists():
            raise hub.CheckpointError(
                f"{folder} is not a SANA pipeline folder: no {MODEL_INDEX_NAME} "
                "(expected model_index.json, transformer/, vae/, text_encoder/, tokenizer/)"
            )
        index = json.loads(index_path.read_text())
        if "Sana" not in str(index.get("_class_name", "")):
            raise hub.CheckpointError(f"{index_path} describes a {index.get('_class_name')}, not a SanaPipeline")
        missing = [p for p in ("transformer", "vae", "text_encoder", "tokenizer") if not (folder / p).is_dir()]
        if missing:
            raise hub.CheckpointError(f"pipeline folder {folder} lacks sub-folders: {missing}")
        config = _read_pipeline_config(folder)
        transformer = SanaTransformer.from_pretrained(folder / "transformer", dtype=dtype, device=device)
        # fp16 never reaches the DC-AE: its activations overflow there (measured: NaN on CPU and H100)
        vae_dtype = torch.bfloat16 if dtype == torch.float16 else dtype
        vae = DCAE.from_pretrained(folder / "vae", dtype=vae_dtype, device=device)
        text_encoder = TextEncoder.from_pretrained(
            folder / "text_encoder", tokenizer_path=folder / "tokenizer", dtype=text_encoder_dtype, device=device,
            max_length=config.max_length, complex_human_instruction=config.complex_human_instruction,
            lowercase=config.lowercase,
        )
        return cls(transformer, vae, text_encoder, config)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the diffusers SanaPipeline layout (loadable by diffusers) plus genfoundry_sana.json;
        `dtype` (e.g. torch.float16, as the zoo stores) casts the floating-point weights on disk."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        version = _diffusers_version()
        self.transformer.save_pretrained(path / "transformer", dtype=dtype)
        self.vae.save_pretrained(path / "vae", dtype=dtype)
        _save_text_model(self.text_encoder.model, path / "text_encoder", dtype)
        self.text_encoder.tokenizer.save_pretrained(path / "tokenizer")
        hub.write_json_atomic(path / "scheduler" / "scheduler_config.json", {
            "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": version,
            "num_train_timesteps": 1000, "solver_order": 2, "prediction_type": "flow_prediction",
            "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
            "final_sigmas_type": "zero", "use_flow_sigmas": True, "flow_shift": self.config.flow_shift,
        })
        hub.write_json_atomic(path / MODEL_INDEX_NAME, {
            "_class_name": "SanaPipeline", "_diffusers_version": version,
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
            "text_encoder": ["transformers", _transformers_class(self.text_encoder.model)],
            "tokenizer": ["transformers", type(self.text_encoder.tokenizer).__name__],
            "transformer": ["diffusers", "SanaTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderDC"],
        })
        hub.write_json_atomic(path / PIPELINE_CONFIG_NAME, dataclasses.asdict(self.config))
        return path


def _read_pipeline_config(folder: Path) -> SanaPipelineConfig:
    ours = folder / PIPELINE_CONFIG_NAME
    if ours.exists():
        return SanaPipelineConfig.from_dict(json.loads(ours.read_text()))
    config = SanaPipelineConfig()
    scheduler = folder / "scheduler" / "scheduler_config.json"
    if scheduler.exists():  # a diffusers folder: the flow shift lives in the scheduler config
        raw = json.loads(scheduler.read_text())
        config.flow_shift = float(raw.get("flow_shift", raw.get("shift", config.flow_shift)))
        if raw.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
            config.sampler = "flow-euler"
    return config


def _transformers_class(model: torch.nn.Module) -> str:
    """The transformers class a folder of `model` loads as (genfoundry's native Llama saves as LlamaModel)."""
    return getattr(model, "transformers_class", type(model).__name__)


def _save_text_model(model: torch.nn.Module, folder: Path, dtype: torch.dtype | None = None) -> None:
    """transformers layout (config.json + model.safetensors), written through the atomic hub writers."""
    config = model.config
    config.architectures = [_transformers_class(model)]
    hub.write_text_atomic(folder / "config.json", config.to_json_string())
    hub.save_file(hub.cast_floating(model.state_dict(), dtype), folder / "model.safetensors", metadata={"format": "pt"})


def _diffusers_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # noqa: BLE001 - not installed
        return "0.32.0"


def _diffusers_aliases(steps: int | None, num_inference_steps: int | None, seed: Seed,
                       generator: torch.Generator | list[torch.Generator] | None, output_type: str) -> tuple:
    """diffusers' argument names mapped onto ours: (steps, seed)."""
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    if num_inference_steps is not None:
        if steps is not None and steps != num_inference_steps:
            raise InputError(f"steps={steps} and num_inference_steps={num_inference_steps} disagree; give one of them")
        steps = num_inference_steps
    if generator is not None:
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise InputError("generator must be a torch.Generator or a list of them (one per image)")
        if seed not in (0, None):
            raise InputError(f"got both seed={seed!r} and a generator; give one of them")
        seed = generator
    return steps, seed


def _postprocess(images: torch.Tensor, output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor:
    """Decoded images [B, 3, H, W] in [-1, 1] -> what diffusers' image processor gives for `output_type`."""
    if output_type == "pil":
        return to_pil(images)
    images = (images / 2 + 0.5).clamp(0, 1)
    return images if output_type == "pt" else images.permute(0, 2, 3, 1).float().cpu().numpy()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL RGB images (rounded like diffusers' image processor)."""
    arr = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    arr = (arr * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


__all__ = ["OUTPUT_TYPES", "SAMPLERS", "SanaPipeline", "SanaPipelineConfig", "SanaPipelineOutput", "to_pil"]
