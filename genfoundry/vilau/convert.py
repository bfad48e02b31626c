"""The authors' released VILA-U folder (mit-han-lab/vila-u-7b-256) <-> our VilaU modules.

Their layout (docs/vilau_official.md has the full description):

    config.json            model_type "vila_u_llama", copies of the three part configs, token flags
    llm/                   a transformers LlamaForCausalLM (`model.*`, `lm_head.*`), sharded safetensors with
                           model.safetensors.index.json; generation_config.json; the LLaMA tokenizer
                           (tokenizer.model + <im_start> <im_end> <vi_start> <vi_end>)
    vision_tower/          one safetensors file: `rqvaesiglip.*` (SigLIP, residual quantizer, pixel decoder)
                           and `rqtransformer.*` (the depth transformer); config.json with both configs
    mm_projector/          `layers.0.*`, `layers.2.*` (Linear, GELU, Linear)

Key map (file -> ours): llm `X` -> `llm.X`; mm_projector `layers.N.X` -> `mm_projector.N.X`;
vision_tower `rqtransformer.X` -> `depth_transformer.X`, `rqvaesiglip.X` -> `tower.X`, except the
quantizer: per-depth `codebooks.{d}.weight` [n_embed + 1, C] (the last row is the embedding's padding
row), `.cluster_size_ema`, `.embed_ema` <-> our stacked `codebooks` [D, n_embed, C] + `padding` [D, C],
`cluster_size`, `embed_sum`; and `rqvaesiglip.logit_{scale,bias}` (the same parameter as
`rqvaesiglip.siglip_model.logit_*`, so a file holds one name or both) -> `tower.siglip_model.logit_*`.

Loading builds the model with its parameters on the meta device and streams the tensors file by file
(safetensors through `safe_open`; a `.bin` only through `torch.load(weights_only=True)`), each cast
and moved to the target device as it arrives, so memory holds the model once. Writing (`save_official`)
works for any VilaU: parts without an official counterpart (our conv tower, our depth transformer,
grid positions) are written under the same folders and prefixes with our names, and the top config's
"genfoundry" entry records the whole config, so our loader reads them back exactly; the authors' code
cannot build such parts.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genfoundry import hub
from genfoundry.vilau.depth import DepthConfig
from genfoundry.vilau.model import VilaU, VilaUConfig, load_tokenizer
from genfoundry.vilau.tower import TowerConfig

OFFICIAL_MODEL_TYPE = "vila_u_llama"
OFFICIAL_MODEL_TYPES = (OFFICIAL_MODEL_TYPE, "vila_u")
PARTS = ("llm", "vision_tower", "mm_projector")
CONFIG_FILES = {"config": "config.json", "llm": "llm/config.json", "vision_tower": "vision_tower/config.json",
                "mm_projector": "mm_projector/config.json"}
OPTIONAL_CONFIG_FILES = {"generation_config": "llm/generation_config.json",
                         "preprocessor_config": "vision_tower/preprocessor_config.json"}
DEFAULT_SIGLIP = "google/siglip-large-patch16-256"  # their RQVAESiglipConfig default
MAX_SHARD_BYTES = 5 * 10**9  # transformers' default shard size when the release was saved
_CODEBOOK = re.compile(r"^rqvaesiglip\.quantizer\.codebooks\.(\d+)\.(weight|cluster_size_ema|embed_ema)$")
_QUANTIZER_FIELDS = {"weight": "codebooks", "cluster_size_ema": "cluster_size", "embed_ema": "embed_sum"}
# Tensors older transformers releases saved that are rebuilt, not loaded (non-persistent buffers now).
_IGNORED = re.compile(r"(^|\.)position_ids$")
_WEIGHT_FILE = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")


def is_official_config(raw: dict[str, Any]) -> bool:
    """Is this top-level config.json the authors' (model_type "vila_u_llama")?"""
    return raw.get("model_type") in OFFICIAL_MODEL_TYPES or "VILAULlamaModel" in (raw.get("architectures") or [])


# ----------------------------------------------------------------------------------------------
# Key maps


def official_to_ours(part: str, key: str) -> str | None:
    """Our parameter name for tensor `key` of the authors' `part` folder; None if it has no place in our
    model (the quantizer's per-depth tensors are assembled separately, see `_QuantizerPieces`)."""
    if part == "llm":
        return f"llm.{key}"
    if part == "mm_projector":
        if key.startswith("layers."):
            return "mm_projector." + key[len("layers."):]
        return key if key.startswith("grid_position.") else None
    if key.startswith("rqtransformer."):
        return "depth_transformer." + key[len("rqtransformer."):]
    if key in ("rqvaesiglip.logit_scale", "rqvaesiglip.logit_bias"):
        return "tower.siglip_model." + key.rsplit(".", 1)[1]
    if key.startswith("rqvaesiglip."):
        return "tower." + key[len("rqvaesiglip."):]
    return None


def ours_to_official(key: str) -> tuple[str, str]:
    """(part folder, tensor name in the authors' layout) of our parameter `key` (quantizer excluded)."""
    if key.startswith("llm."):
        return "llm", key[len("llm."):]
    if key.startswith("mm_projector."):
        return "mm_projector", "layers." + key[len("mm_projector."):]
    if key.startswith("grid_position."):
        return "mm_projector", key
    if key.startswith("depth_transformer."):
        return "vision_tower", "rqtransformer." + key[len("depth_transformer."):]
    if key.startswith("tower."):
        return "vision_tower", "rqvaesiglip." + key[len("tower."):]
    raise ValueError(f"no place in the authors' layout for {key!r}")


# ----------------------------------------------------------------------------------------------
# Reading tensor files


def weight_files(folder: Path) -> list[Path]:
    """The weight files of one part folder, in the order to read them; a missing shard (a partial
    download) is an error naming it."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise hub.CheckpointError(f"{index} is not a shard index ({type(err).__name__}: {err})") from None
            shards = list(dict.fromkeys(weight_map.values()))
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise hub.CheckpointError(f"{folder} is incomplete: {index_name} lists {len(shards)} shards but "
                                          f"{', '.join(missing)} is missing (a partial download?)")
            return [folder / name for name in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise hub.CheckpointError(f"{folder} has no weights: expected model.safetensors, model.safetensors.index.json "
                              "(shards) or pytorch_model.bin")


def _bin_state(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, read without running any code from it (weights_only)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a plain state dict"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise hub.CheckpointError(f"{path} is not a plain tensor state dict (read with weights_only=True, which "
                                  f"runs no code from the file): {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise hub.CheckpointError(f"{path} does not hold a dict of tensors")
    return state


def iter_tensors(files: list[Path]) -> Iterator[tuple[Path, str, torch.Tensor]]:
    """(file, name, tensor) for every tensor of the files, one file open at a time."""
    from safetensors import SafetensorError, safe_open

    for path in files:
        if path.suffix == ".bin":
            for key, tensor in _bin_state(path).items():
                yield path, key, tensor
            continue
        hub.read_metadata(path)  # a clear error for a truncated or corrupt file
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    yield path, key, f.get_tensor(key)
        except (SafetensorError, OSError) as err:
            raise hub.CheckpointError(f"could not read {path}: {err}") from None


# ----------------------------------------------------------------------------------------------
# Configs: the authors' files -> VilaUConfig


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise hub.CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise hub.CheckpointError(f"{path} does not hold a JSON object")
    return data


def read_official_configs(root: Path) -> dict[str, dict[str, Any]]:
    """The config files of a released folder, by name (see CONFIG_FILES and OPTIONAL_CONFIG_FILES)."""
    missing = [name for name in CONFIG_FILES.values() if not (root / name).is_file()]
    if missing:
        raise hub.CheckpointError(f"{root} is not a complete official VILA-U release (the authors' layout): "
                                  f"missing {', '.join(missing)}")
    configs = {key: _read_json(root / name) for key, name in CONFIG_FILES.items()}
    for key, name in OPTIONAL_CONFIG_FILES.items():
        if (root / name).is_file():
            configs[key] = _read_json(root / name)
    return configs


def _field(config: dict[str, Any], path: str, where: str) -> Any:
    value: Any = config
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            raise hub.CheckpointError(f"{where} has no field {path!r}")
        value = value[part]
    return value


def _siglip_shape(rq: dict[str, Any], root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vision, text) SigLIP config kwargs of the tower: written into the config by us, one of the two
    released SigLIPs by name, or a local folder holding a SigLIP config.json (absolute, or relative to
    vision_tower/). The release itself stores only the name."""
    from genfoundry.vilau.rqvae import SIGLIP_CONFIGS, siglip_shapes

    where = root / CONFIG_FILES["vision_tower"]
    if isinstance(rq.get("siglip_config"), dict):
        found = rq["siglip_config"]
    else:
        name = str(rq.get("pretrained_model") or DEFAULT_SIGLIP)
        # a Hub id, or a path on the machine that trained the tower ending in the model's name
        known = next((k for k in SIGLIP_CONFIGS if name == k or Path(name).name == k.split("/")[1]), None)
        if known is not None:
            return siglip_shapes(known)
        folder = next((p for p in (Path(name).expanduser(), root / "vision_tower" / name)
                       if (p / "config.json").is_file()), None)
        if folder is None:
            raise hub.CheckpointError(f"{where} names the SigLIP {name!r}, whose shape the folder does not hold "
                                      f"and this project does not know (known: {', '.join(SIGLIP_CONFIGS)}; or a "
                                      "local folder with its config.json)")
        found = _read_json(folder / "config.json")
    try:
        vision, text = dict(found["vision_config"]), dict(found["text_config"])
    except (KeyError, TypeError):
        raise hub.CheckpointError(f"the SigLIP config of {where} lacks vision_config/text_config") from None
    for cfg in (vision, text):
        for meta in ("model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype"):
            cfg.pop(meta, None)
    return vision, text


def _llm_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """LlamaConfig keyword arguments of a saved llm/config.json (file bookkeeping fields dropped)."""
    drop = {"architectures", "transformers_version", "torch_dtype", "dtype", "model_type"}
    return {k: v for k, v in raw.items() if k not in drop and not k.startswith("_")}


def config_from_official(configs: dict[str, dict[str, Any]], root: Path) -> VilaUConfig:
    """VilaUConfig of a folder in the authors' layout: from the "genfoundry" entry we write for models of
    our own architecture, otherwise read from their config files (which are kept, to be written back)."""
    top = configs["config"]
    if isinstance(top.get("genfoundry"), dict):
        return VilaUConfig.from_dict(top["genfoundry"])
    vt_file = root / CONFIG_FILES["vision_tower"]
    vt = configs["vision_tower"]
    rq = _field(vt, "rqvaesiglip", str(vt_file))
    rt = _field(vt, "rqtransformer", str(vt_file))
    vision, text = _siglip_shape(rq, root)
    n_embed = int(_field(rq, "n_embed", f"{vt_file} rqvaesiglip"))
    code_shape = [int(v) for v in _field(rq, "code_shape", f"{vt_file} rqvaesiglip")]
    latent_shape = [int(v) for v in _field(rq, "latent_shape", f"{vt_file} rqvaesiglip")]
    if len(code_shape) != 3 or code_shape[:2] != latent_shape[:2]:
        raise hub.CheckpointError(f"{vt_file}: code_shape {code_shape} groups latents {latent_shape} spatially; "
                                  "only one code stack per latent position is supported")
    hidden = int(vision["hidden_size"])
    if latent_shape[2] != hidden:
        raise hub.CheckpointError(f"{vt_file}: latent channels {latent_shape[2]} != the SigLIP hidden size {hidden}")
    tower = TowerConfig(
        image_size=int(vision["image_size"]), architecture="rqvaesiglip", siglip=vision, text=text,
        code_dim=hidden, codebook_size=n_embed, depth=code_shape[2], ema_decay=float(rq.get("decay", 0.99)),
        commitment_weight=float(rq.get("latent_loss_weight", 0.25)),
        pixel_decoder=dict(_field(rq, "ddconfig", f"{vt_file} rqvaesiglip")),
        decoder_latent_shape=rq.get("decoder_latent_shape"), shared_codebook=bool(rq.get("shared_codebook")))
    if tower.grid != code_shape[0]:
        raise hub.CheckpointError(f"{vt_file}: code_shape {code_shape} does not match the SigLIP grid {tower.grid} "
                                  f"({tower.image_size} px, patch {tower.downsample})")
    llm = _llm_kwargs(configs["llm"])
    head = _field(rt, "head", f"{vt_file} rqtransformer")
    depth = DepthConfig(hidden_size=int(_field(rt, "embed_dim", f"{vt_file} rqtransformer")),
                        num_layers=int(_field(head, "n_layer", f"{vt_file} rqtransformer.head")),
                        num_heads=int(_field(head, "block.n_head", f"{vt_file} rqtransformer.head")),
                        architecture="rqtransformer")
    for field, expected in (("input_embed_dim_1", hidden), ("input_embed_dim_2", int(llm.get("hidden_size", 0))),
                            ("vocab_size", n_embed)):
        if field in rt and int(rt[field]) != expected:
            raise hub.CheckpointError(f"{vt_file}: rqtransformer {field} {rt[field]} != {expected} (from the "
                                      "tower and LLM configs)")
    block = rt.get("block_size")
    if block and int(block[2]) != code_shape[2]:
        raise hub.CheckpointError(f"{vt_file}: rqtransformer block_size {block} != the code depth {code_shape[2]}")
    projector = str(configs["mm_projector"].get("mm_projector_type"))
    if projector != "mlp2x_gelu":
        raise hub.CheckpointError(f"{root / CONFIG_FILES['mm_projector']}: mm_projector_type {projector!r} is not "
                                  "supported (expected 'mlp2x_gelu')")
    try:
        return VilaUConfig(tower=tower, llm=llm, depth=depth, video_frames=int(top.get("num_video_frames") or 8),
                           image_position="none", prompt_format="vila-u", official_configs=copy.deepcopy(configs))
    except ValueError as err:
        raise hub.CheckpointError(f"{root}: the configs do not describe a model this project can build: "
                                  f"{err}") from None


# ----------------------------------------------------------------------------------------------
# Loading


@contextmanager
def checkpoint_tensors_on_meta() -> Iterator[None]:
    """Build modules with their parameters and persistent buffers on the meta device (no memory, no
    initialisation work), while non-persistent buffers (RoPE tables, position ids), which no checkpoint
    holds, are computed for real."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        if persistent and tensor is not None:
            tensor = tensor.to("meta")
        register_buffer(module, name, tensor, persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def _set_tensor(model: nn.Module, key: str, value: torch.Tensor) -> None:
    owner_name, _, name = key.rpartition(".")
    owner = model.get_submodule(owner_name)
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(value, requires_grad=owner._parameters[name].requires_grad)
    else:
        owner._buffers[name] = value


class _QuantizerPieces:
    """Collects the authors' per-depth codebook tensors and sets our stacked quantizer buffers from them."""

    def __init__(self, model: VilaU) -> None:
        self.model = model
        self.pieces: dict[tuple[int, str], tuple[Path, torch.Tensor]] = {}

    @staticmethod
    def owns(key: str) -> bool:
        return _CODEBOOK.match(key) is not None

    def keep(self, path: Path, key: str, tensor: torch.Tensor) -> None:
        found = _CODEBOOK.match(key)
        self.pieces[(int(found.group(1)), found.group(2))] = (path, tensor)

    def stacked(self, files: list[Path]) -> dict[str, torch.Tensor]:
        """Our quantizer buffers (without the "tower.quantizer." prefix)."""
        config = self.model.config.tower
        depth, size, dim = config.depth, config.codebook_size, config.code_dim
        where = ", ".join(str(f) for f in files)
        shapes = {"weight": (size + 1, dim), "cluster_size_ema": (size,), "embed_ema": (size, dim)}
        out: dict[str, list[torch.Tensor]] = {"codebooks": [], "padding": [], "cluster_size": [], "embed_sum": []}
        for d in range(depth):
            for field, shape in shapes.items():
                # a shared codebook is one module repeated: the file may hold depth 0 only
                got = self.pieces.get((d, field)) or (self.pieces.get((0, field)) if config.shared_codebook else None)
                name = f"rqvaesiglip.quantizer.codebooks.{d}.{field}"
                if got is None:
                    raise hub.CheckpointError(f"{where}: missing tensor {name} (the config gives {depth} depths)")
                path, tensor = got
                if tuple(tensor.shape) != shape:
                    raise hub.CheckpointError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the config "
                                              f"gives {shape} ({size} codes + a padding row, dim {dim})")
                if field == "weight":
                    out["codebooks"].append(tensor[:size])
                    out["padding"].append(tensor[size])
                else:
                    out[_QUANTIZER_FIELDS[field]].append(tensor)
        stacked = {name: torch.stack(parts) for name, parts in out.items()}
        if not hasattr(self.model.tower.quantizer, "padding"):
            del stacked["padding"]  # our architecture: the rows we wrote are zeros
        return stacked


def _target_dtype(stored: torch.dtype, dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is not None:
        return dtype
    if device.type == "cuda" and stored == torch.float32:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return stored


def load_official(root: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None) -> VilaU:
    """Build a VilaU from a folder in the authors' layout. Floating tensors keep their stored dtype
    unless `dtype` is given (on a GPU float32 becomes bfloat16); memory holds the model once."""
    root = Path(root)
    device = torch.device(device)
    configs = read_official_configs(root)
    config = config_from_official(configs, root)
    files = {part: weight_files(root / part) for part in PARTS}  # every shard present before building
    tokenizer = load_tokenizer(root / "llm")
    try:
        with checkpoint_tensors_on_meta():
            model = VilaU(config, tokenizer)
    except ValueError as err:
        raise hub.CheckpointError(f"{root}: cannot build the model from its configs and tokenizer: {err}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[str] = []

    def place(path: Path, name: str, key: str, tensor: torch.Tensor) -> None:
        if tuple(tensor.shape) != expected[key]:
            raise hub.CheckpointError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the configs give "
                                      f"{expected[key]}")
        if tensor.is_floating_point():
            tensor = tensor.to(_target_dtype(tensor.dtype, dtype, device))
        _set_tensor(model, key, tensor.to(device))
        loaded.add(key)

    for part in PARTS:
        quantizer = _QuantizerPieces(model)
        for path, name, tensor in iter_tensors(files[part]):
            if part == "vision_tower" and quantizer.owns(name):
                quantizer.keep(path, name, tensor)
                continue
            key = official_to_ours(part, name)
            if key is None or key not in expected:
                if not _IGNORED.search(name):
                    unexpected.append(f"{path.name}:{name}")
                continue
            place(path, name, key, tensor)
        if part == "vision_tower":
            for field, tensor in quantizer.stacked(files[part]).items():
                place(files[part][0], f"rqvaesiglip.quantizer.codebooks.*.{field}", f"tower.quantizer.{field}", tensor)
    if unexpected:
        raise hub.CheckpointError(f"{root} holds tensors this model has no place for ({len(unexpected)}): "
                                  f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''} "
                                  "(another model's folder, or configs that do not match the weights?)")
    if "tower.quantizer.initialized" not in loaded:  # a released tower is trained: its codebooks are set
        _set_tensor(model, "tower.quantizer.initialized", torch.ones((), dtype=torch.bool, device=device))
        loaded.add("tower.quantizer.initialized")
    if getattr(model.llm.config, "tie_word_embeddings", False) and "llm.lm_head.weight" not in loaded:
        model.llm.lm_head.weight = model.llm.get_input_embeddings().weight
        loaded.add("llm.lm_head.weight")
    missing = [k for k in expected if k not in loaded]
    if missing:
        where = {k: ours_to_official(k) for k in missing if not k.startswith("tower.quantizer.")}
        names = [f"{part}/{name}" for part, name in where.values()] + [k for k in missing if k not in where]
        raise hub.CheckpointError(f"{root} lacks {len(missing)} tensors the configs call for: {', '.join(names[:8])}"
                                  f"{' ...' if len(names) > 8 else ''} (a partial download?)")
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------
# Writing


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _official_vision_config(model: VilaU, torch_dtype: str) -> dict[str, Any]:
    from genfoundry.vilau.rqvae import SIGLIP_CONFIGS, siglip_shapes

    cfg = model.config
    t, g = cfg.tower, cfg.tower.grid
    rq: dict[str, Any] = {"architectures": ["RQVAESiglipModel"], "model_type": "rqvaesiglip_model",
                          "embed_dim": t.code_dim, "n_embed": t.codebook_size, "latent_shape": [g, g, t.code_dim],
                          "code_shape": [g, g, t.depth],
                          "shared_codebook": t.shared_codebook, "restart_unused_codes": True, "decay": t.ema_decay,
                          "latent_loss_weight": t.commitment_weight}
    out: dict[str, Any] = {"model_type": "rqvaesigliptransformer_model", "hidden_size": t.code_dim,
                           "torch_dtype": torch_dtype}
    if t.architecture == "rqvaesiglip":
        name = next((n for n in SIGLIP_CONFIGS if siglip_shapes(n) == (t.siglip, t.text)), None)
        rq.update(ddconfig=t.pixel_decoder, decoder_latent_shape=t.decoder_latent_shape,
                  pretrained_model=name or "genfoundry/embedded-siglip-config")
        if name is None:
            rq["siglip_config"] = {"vision_config": t.siglip, "text_config": t.text}
        out["architectures"] = ["RQVAESIGLIPTransformer"]
    else:
        out["architectures"] = ["GenfoundryVisionTower"]  # our modules: the authors' code cannot build them
    if cfg.depth.architecture == "rqtransformer":
        out["rqtransformer"] = {
            "architectures": ["RQTransformer"], "model_type": "rqtransformer_model", "block_size": [g, g, t.depth],
            "input_embed_dim_1": t.code_dim, "input_embed_dim_2": cfg.depth.llm_hidden_size,
            "embed_dim": cfg.depth.hidden_size, "vocab_size": t.codebook_size,
            "head": {"block": {"n_head": cfg.depth.num_heads}, "n_layer": cfg.depth.num_layers}}
    out["rqvaesiglip"] = rq
    return out


def official_configs(model: VilaU, dtype: torch.dtype | None = None) -> dict[str, dict[str, Any]]:
    """The config files of `model` in the authors' layout (see CONFIG_FILES, OPTIONAL_CONFIG_FILES): the
    ones read from a released folder, unchanged but for the dtype when the tensors are written in another
    one; written afresh otherwise."""
    stored = dtype or model.llm.get_input_embeddings().weight.dtype
    if model.config.official_configs is not None:
        configs = copy.deepcopy(model.config.official_configs)
        if configs["llm"].get("torch_dtype") != _dtype_name(stored):
            configs["config"]["model_dtype"] = str(stored)
            for part in ("llm", "vision_tower", "mm_projector"):
                configs[part]["torch_dtype"] = _dtype_name(stored)
        return configs
    cfg = model.config
    tok = model.tokenizer
    llm = json.loads(model.llm.config.to_json_string())
    llm.update(architectures=["LlamaForCausalLM"], torch_dtype=_dtype_name(stored))
    vision = _official_vision_config(model, _dtype_name(stored))
    projector = {"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp2x_gelu",
                 "model_type": "v2l_projector", "torch_dtype": _dtype_name(stored)}
    own = cfg.to_dict()
    own.pop("official_configs", None)
    top = {"architectures": ["VILAULlamaModel"], "model_type": OFFICIAL_MODEL_TYPE, "llm_cfg": llm,
           "vision_tower_cfg": vision, "mm_projector_cfg": projector, "hidden_size": model.llm.config.hidden_size,
           "mm_hidden_size": cfg.tower.code_dim, "image_aspect_ratio": "resize", "num_video_frames": cfg.video_frames,
           "mm_use_im_start_end": True, "mm_use_vi_start_end": True, "mm_use_im_patch_token": False,
           "mm_vision_select_layer": -2, "model_dtype": str(stored), "resume_path": None,
           # exactly what the files hold, for our loader (the fields above are what the authors' code reads)
           "genfoundry": own}
    size = cfg.tower.image_size
    return {"config": top, "llm": llm, "vision_tower": vision, "mm_projector": projector,
            "generation_config": {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                  "pad_token_id": model.pad_id},
            "preprocessor_config": {"image_processor_type": "CLIPImageProcessor", "do_resize": True,
                                    "size": {"height": size, "width": size}, "do_center_crop": True,
                                    "crop_size": {"height": size, "width": size}, "do_normalize": True,
                                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}


def official_state_dicts(model: VilaU, dtype: torch.dtype | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of each part folder, named as in the authors' layout (views of the model's tensors,
    cast when `dtype` is given)."""
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PARTS}

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    state = model.state_dict()
    for key, tensor in state.items():
        if key.startswith("tower.quantizer."):
            continue
        part, name = ours_to_official(key)
        if part == "vision_tower" and name in ("rqvaesiglip.siglip_model.logit_scale",
                                               "rqvaesiglip.siglip_model.logit_bias"):
            # the release registers this parameter twice; transformers keeps the first name when saving
            name = "rqvaesiglip." + name.rsplit(".", 1)[1]
        parts[part][name] = cast(tensor)
    quantizer = model.tower.quantizer
    books = quantizer.codebooks
    padding = getattr(quantizer, "padding", None)
    if padding is None:
        padding = torch.zeros(books.shape[0], books.shape[2], dtype=books.dtype, device=books.device)
    depths = 1 if model.config.tower.shared_codebook else books.shape[0]
    for d in range(depths):
        prefix = f"rqvaesiglip.quantizer.codebooks.{d}."
        parts["vision_tower"][prefix + "weight"] = cast(torch.cat([books[d], padding[d][None]]))
        parts["vision_tower"][prefix + "cluster_size_ema"] = cast(quantizer.cluster_size[d])
        parts["vision_tower"][prefix + "embed_ema"] = cast(quantizer.embed_sum[d])
    if not bool(quantizer.initialized):  # a released tower is always initialised; only ours may not be
        parts["vision_tower"]["rqvaesiglip.quantizer.initialized"] = quantizer.initialized
    return parts


def write_sharded(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """Write `tensors` as transformers does: model.safetensors, or model-0000i-of-0000n.safetensors shards of
    at most `max_shard_bytes` (a tensor larger than that gets a shard of its own) plus
    model.safetensors.index.json. Weight files of an earlier write that are not part of this one are
    removed afterwards."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    folder.mkdir(parents=True, exist_ok=True)
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    written = [hub.save_file(shard, folder / name, {"format": "pt"}) for shard, name in zip(shards, names)]
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        hub.write_json_atomic(folder / "model.safetensors.index.json", {
            "metadata": {"total_size": total},
            "weight_map": {key: name for shard, name in zip(shards, names) for key in shard}})
        written.append(folder / "model.safetensors.index.json")
    keep = {p.name for p in written}
    for stale in folder.iterdir():
        if stale.name not in keep and _WEIGHT_FILE.fullmatch(stale.name):
            stale.unlink()
    return written


def _save_tokenizer(tokenizer, folder: Path) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a call with truncation or padding leaves it switched on, and it would be saved
        backend.no_truncation()
        backend.no_padding()
    tokenizer.save_pretrained(str(folder))
    # the authors' code reads the slow sentencepiece tokenizer: keep tokenizer.model beside tokenizer.json
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if isinstance(vocab_file, str) and vocab_file.endswith(".model") and os.path.isfile(vocab_file):
        target = folder / "tokenizer.model"
        if Path(vocab_file).resolve() != target.resolve():
            hub.write_bytes_atomic(target, Path(vocab_file).read_bytes())


def save_official(model: VilaU, path: str | os.PathLike, dtype: torch.dtype | None = None,
                  max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write `model` in the authors' folder layout (any VilaU; see the module docstring for parts of our
    own architecture). `dtype` casts the floating-point tensors; None keeps them. Reading it back with
    `VilaU.from_pretrained` gives the same model."""
    path = Path(path)
    configs = official_configs(model, dtype)
    for part, tensors in official_state_dicts(model, dtype).items():
        write_sharded(tensors, path / part, max_shard_bytes)
    for key, name in {**CONFIG_FILES, **OPTIONAL_CONFIG_FILES}.items():
        if key in configs:
            hub.write_json_atomic(path / name, configs[key])
    _save_tokenizer(model.tokenizer, path / "llm")
    return path


def convert_folder(source: str | os.PathLike, target: str | os.PathLike, to: str = "genfoundry",
                   dtype: torch.dtype | None = None) -> Path:
    """Convert a VILA-U folder of either layout into `to`: "genfoundry" (our layout) or "official" (the
    authors'); `dtype` casts the floating-point tensors written."""
    if to not in ("genfoundry", "official"):
        raise ValueError(f"to must be 'genfoundry' or 'official', got {to!r}")
    model = VilaU.from_pretrained(source)
    if to == "official":
        return save_official(model, target, dtype=dtype)
    return model.save_pretrained(target, dtype=dtype)
