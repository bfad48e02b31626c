"""Text encoder: any transformers decoder-only LM + tokenizer, last hidden state as the DiT's text.

SANA conventions (as diffusers' SanaPipeline): prompts are lower-cased and stripped; the complex human
instruction (CHI) is prepended to positive prompts; sequences are right-padded to a fixed length and
the model keeps BOS + the last `max_length - 1` positions (with CHI that drops the instruction but its
last token). The negative prompt is encoded without CHI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from genfoundry import hub

DEFAULT_CHI: tuple[str, ...] = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions "
    "suitable for image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and "
    "spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, "
    "sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring "
    "glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus "
    "passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any "
    "additional commentary or evaluations:",
    "User Prompt: ",
)


class TextEncoder(nn.Module):
    """Wraps `model` (a transformers decoder-only model, base or *ForCausalLM) and its `tokenizer`.

    `encode(prompts, chi=True) -> (embeddings [B, max_length, hidden], mask [B, max_length])`.
    `complex_human_instruction`: lines joined by newlines; empty or None turns CHI off.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        max_length: int = 300,
        complex_human_instruction: list[str] | tuple[str, ...] | None = DEFAULT_CHI,
        lowercase: bool = True,
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (BOS + one token), got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.complex_human_instruction = list(complex_human_instruction or [])
        self.lowercase = lowercase

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, prompt: str) -> str:
        return prompt.lower().strip() if self.lowercase else prompt

    @torch.inference_mode()
    def encode(self, prompts: str | list[str], chi: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("encode needs at least one prompt, got an empty list")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"prompts must be strings, got {[type(p).__name__ for p in bad]}")
        texts = [self.preprocess(p) for p in prompts]
        length = self.max_length
        if chi and self.complex_human_instruction:
            instruction = "\n".join(self.complex_human_instruction)
            texts = [instruction + t for t in texts]
            # Pad to instruction + max_length - 2 so the kept tail (BOS + last max_length - 1) holds the prompt.
            length = len(self.tokenizer.encode(instruction)) + self.max_length - 2
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(
            texts, padding="max_length", max_length=length, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        )
        ids = batch.input_ids.to(self.device)
        mask = batch.attention_mask.to(self.device)
        hidden = self._last_hidden_state(ids, mask)
        keep = [0, *range(hidden.shape[1] - self.max_length + 1, hidden.shape[1])]
        return hidden[:, keep], mask[:, keep]

    def _last_hidden_state(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:  # a *ForCausalLM: ask for the hidden states (the last one is post-norm)
            hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        return hidden

    def unknown_words(self, prompt: str) -> list[str]:
        """Distinct pieces of `prompt` (in order) that the tokenizer maps to its unknown token; empty for
        tokenizers without one (byte-level BPE such as Gemma's never produces it)."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None:
            return []
        text = self.preprocess(prompt)
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            words = [text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
        except NotImplementedError:  # slow tokenizers have no offsets: check word by word
            words = [w for w in text.split() if unk in self.tokenizer.encode(w, add_special_tokens=False)]
        return list(dict.fromkeys(words))

    # ------------------------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        tokenizer_path: str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        native: bool | None = None,
        **options,
    ) -> TextEncoder:
        """Load a transformers model folder (`config.json` + weights) and its tokenizer (from
        `tokenizer_path`, else the same folder, else a sibling `tokenizer/` as in a pipeline folder).

        `native` None (auto) computes a plain Llama with `llama_lite` (no transformers modelling import,
        seconds faster to start) and everything else with transformers' AutoModel; True requires the
        native path, False forces transformers."""
        folder = hub.resolve(path)
        if not (folder / "config.json").exists() and (folder / "text_encoder" / "config.json").exists():
            folder = folder / "text_encoder"
        if not (folder / "config.json").exists():
            raise hub.CheckpointError(f"{folder} has no config.json: not a transformers model folder")
        tok_folder = Path(tokenizer_path) if tokenizer_path is not None else _find_tokenizer(folder)
        model = _load_native(folder, dtype, required=native is True) if native is not False else None
        if model is not None:
            return cls(model.to(device).eval(), _load_tokenizer(tok_folder), **options)
        from transformers import AutoConfig, AutoModel

        try:
            AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:
            raise hub.CheckpointError(
                f"{folder} is not a transformers text model folder (its config.json names no known "
                f"model_type): {err}"
            ) from None
        try:
            tokenizer = _load_tokenizer(tok_folder)
            model = AutoModel.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError) as err:
            raise hub.CheckpointError(f"could not load the text encoder from {folder}: {err}") from None
        return cls(model.to(device).eval(), tokenizer, **options)

    def save_pretrained(self, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> None:
        """transformers layout: the model in `model_dir`, the tokenizer in `tokenizer_dir` (default: same)."""
        self.model.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(tokenizer_dir if tokenizer_dir is not None else model_dir)


def _load_native(folder: Path, dtype: torch.dtype | None, required: bool):
    """A `LlamaLite` for a plain Llama folder with one model.safetensors, else None (or an error if required)."""
    from genfoundry.sana.llama_lite import LlamaLite, unsupported_reason

    try:
        raw = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise hub.CheckpointError(f"{folder / 'config.json'} is not valid JSON: {err}") from None
    weights = folder / "model.safetensors"
    reason = unsupported_reason(raw) or (None if weights.is_file() else "no single model.safetensors")
    if reason:
        if required:
            raise hub.CheckpointError(f"{folder}: the native Llama text encoder cannot load it: {reason}")
        return None
    tensors, _ = hub.load_file(weights)
    # a *ForCausalLM folder: the decoder sits under "model." and the LM head is not needed
    if any(k.startswith("model.") for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    with torch.device("meta"):
        model = LlamaLite(raw)
    hub.check_state_dict(tensors, model.state_dict(), what=str(weights))
    model.load_state_dict(tensors, assign=True)
    stored = next(iter(tensors.values())).dtype
    return model.to(dtype or stored)


def _load_tokenizer(folder: Path):
    """PreTrainedTokenizerFast directly when the folder is a plain tokenizer.json (the class AutoTokenizer
    would pick, without importing its registry), else AutoTokenizer."""
    config = folder / "tokenizer_config.json"
    if (folder / "tokenizer.json").is_file():
        name = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
        if name in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(folder))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _find_tokenizer(folder: Path) -> Path:
    for candidate in (folder, folder.parent / "tokenizer"):
        if any((candidate / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return candidate
    raise hub.CheckpointError(f"no tokenizer next to {folder} (looked in it and in ../tokenizer)")
