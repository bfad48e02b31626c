"""The authors' VILA-U release layout: tiny folders written the way their code writes them (parameter
names and config fields read from mit-han-lab/vila-u; transformers' own sharded save_pretrained for the
LLM; their sentencepiece tokenizer files), loaded with ours and checked against independent references
(transformers SigLIP and Llama, diffusers' VQGAN decoder, the rqtransformer written out here), round
trips both ways, and the errors for bad folders."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genfoundry import hub
from genfoundry.vilau import VilaU, VilaUConfig
from genfoundry.vilau.convert import save_official
from genfoundry.vilau.generate import DecodeStream, generate_codes

spm = pytest.importorskip("sentencepiece", reason="reading the authors' tokenizer.model needs sentencepiece")
pytest.importorskip("google.protobuf", reason="reading the authors' tokenizer.model needs protobuf")

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
SPECIAL = ["<im_start>", "<im_end>", "<vi_start>", "<vi_end>"]
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "vocab_size": 64, "max_position_embeddings": 16}
DDCONFIG = {"double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
N_EMBED, DEPTH, GRID, CODE_DIM = 24, 3, 4, 32
RQ_DIM, RQ_HEADS, RQ_LAYERS = 32, 2, 2
LLM_HIDDEN, SPM_VOCAB = 48, 320


# ----------------------------------------------------------------------------------------------
# A tiny release, written as the authors' code writes one


def write_tokenizer(folder: Path) -> None:
    """A LLaMA-style sentencepiece tokenizer (byte fallback) plus the four image/video tokens, saved as the
    release's llm/ has it: tokenizer.model, added_tokens.json, special_tokens_map.json, tokenizer_config.json."""
    text = [SYSTEM, "USER: what color is the circle? ASSISTANT: red", "a red circle to the left of a blue square",
            "how many squares are there? two three four yes no"] * 40
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=SPM_VOCAB, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    added = {token: SPM_VOCAB + i for i, token in enumerate(SPECIAL)}
    (folder / "added_tokens.json").write_text(json.dumps(added))
    entry = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    decoder = {str(i): {"content": t, **entry} for i, t in enumerate(["<unk>", "<s>", "</s>"])}
    decoder.update({str(i): {"content": t, **entry} for t, i in added.items()})
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder, "bos_token": "<s>",
        "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False, "model_max_length": 8192,
        "pad_token": "<unk>", "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}))


def decoder_shapes(dd: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the release's pixel decoder (their modules.py Decoder)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name: str, c: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name: str, c: int) -> None:
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    mult = dd["ch_mult"]
    block_in, res = dd["ch"] * mult[-1], dd["resolution"] // 2 ** (len(mult) - 1)
    conv("conv_in", dd["z_channels"], block_in, 3)
    resnet("mid.block_1", block_in, block_in), attn("mid.attn_1", block_in), resnet("mid.block_2", block_in, block_in)
    for level in reversed(range(len(mult))):
        out = dd["ch"] * mult[level]
        for j in range(dd["num_res_blocks"] + 1):
            resnet(f"up.{level}.block.{j}", block_in, out)
            block_in = out
            if res in dd["attn_resolutions"]:
                attn(f"up.{level}.attn.{j}", block_in)
        if level:
            conv(f"up.{level}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("norm_out", block_in), conv("conv_out", block_in, dd["out_ch"], 3)
    return shapes


def rqtransformer_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the release's depth transformer (their rqtransformer package)."""
    e = RQ_DIM
    shapes = {"in_mlp_1.weight": (e, CODE_DIM), "in_mlp_1.bias": (e,), "in_mlp_2.weight": (e, LLM_HIDDEN),
              "in_mlp_2.bias": (e,), "pos_emb_d": (1, DEPTH, e), "classifier_mlp.layer_norm.weight": (e,),
              "classifier_mlp.layer_norm.bias": (e,), "classifier_mlp.linear.weight": (N_EMBED, e),
              "classifier_mlp.linear.bias": (N_EMBED,)}
    for k in range(RQ_LAYERS):
        b = f"head_transformer.blocks.{k}"
        for ln in ("ln1", "ln2"):
            shapes[f"{b}.{ln}.weight"], shapes[f"{b}.{ln}.bias"] = (e,), (e,)
        for lin in ("key", "query", "value", "proj"):
            shapes[f"{b}.attn.{lin}.weight"], shapes[f"{b}.attn.{lin}.bias"] = (e, e), (e,)
        shapes[f"{b}.mlp.0.weight"], shapes[f"{b}.mlp.0.bias"] = (4 * e, e), (4 * e,)
        shapes[f"{b}.mlp.2.weight"], shapes[f"{b}.mlp.2.bias"] = (e, 4 * e), (e,)
    return shapes


def random_tensors(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in shapes.items():
        if re.search(r"(norm\w*|ln\d|layer_norm)\.weight$", name):
            out[name] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[name] = 0.2 * torch.randn(shape, generator=gen) / math.sqrt(max(1, math.prod(shape[1:])))
    return out


def siglip_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """SigLIP's vision and text transformers (transformers' own modules and names), as `siglip_model.*`."""
    from transformers import SiglipTextConfig, SiglipTextModel, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    out = {}
    for prefix, model in (("vision_model.", SiglipVisionModel(SiglipVisionConfig(**VISION))),
                          ("text_model.", SiglipTextModel(SiglipTextConfig(**TEXT, bos_token_id=None,
                                                                           eos_token_id=None)))):
        for name, tensor in model.state_dict().items():
            name = name[len(prefix):] if name.startswith(prefix) else name  # transformers 4.x nests one level
            out[f"siglip_model.{prefix}{name}"] = tensor.clone()
    return out


def vision_tower_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {f"rqvaesiglip.{k}": v for k, v in siglip_tensors(gen).items()}
    tensors["rqvaesiglip.logit_scale"] = torch.tensor([2.3])  # the name transformers keeps of the shared pair
    tensors["rqvaesiglip.logit_bias"] = torch.tensor([-10.0])
    for d in range(DEPTH):
        book = torch.randn(N_EMBED + 1, CODE_DIM, generator=gen) * (0.5 ** d)
        book[-1] = 0  # nn.Embedding(n_embed + 1, padding_idx=n_embed)
        tensors[f"rqvaesiglip.quantizer.codebooks.{d}.weight"] = book
        tensors[f"rqvaesiglip.quantizer.codebooks.{d}.cluster_size_ema"] = torch.rand(N_EMBED, generator=gen) * 5
        tensors[f"rqvaesiglip.quantizer.codebooks.{d}.embed_ema"] = book[:-1] * 3
    tensors["rqvaesiglip.post_quant_conv.weight"] = 0.2 * torch.randn(32, CODE_DIM, 1, 1, generator=gen)
    tensors["rqvaesiglip.post_quant_conv.bias"] = torch.zeros(32)
    tensors.update({f"rqvaesiglip.decoder.{k}": v for k, v in random_tensors(decoder_shapes(DDCONFIG), gen).items()})
    tensors.update({f"rqtransformer.{k}": v for k, v in random_tensors(rqtransformer_shapes(), gen).items()})
    return tensors


def write_release(root: Path, siglip_folder: Path, dtype: torch.dtype = torch.float32, seed: int = 0,
                  llm_format: str = "safetensors") -> Path:
    """A tiny vila-u release in `root`, written as their VILAUMetaModel.save_pretrained writes one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    gen = torch.Generator().manual_seed(seed)
    write_tokenizer(root / "llm")
    torch.manual_seed(seed)
    llm_cfg = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
               "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": LLM_HIDDEN,
               "initializer_range": 0.02, "intermediate_size": 96, "max_position_embeddings": 512,
               "model_max_length": 1024, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
               "num_key_value_heads": 2, "pad_token_id": 0, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
               "rope_scaling": {"factor": 2.0, "type": "linear"}, "rope_theta": 10000.0,
               "tie_word_embeddings": False, "torch_dtype": str(dtype).removeprefix("torch."),
               "transformers_version": "4.36.2", "use_cache": True, "vocab_size": SPM_VOCAB + 4}
    llm = LlamaForCausalLM(LlamaConfig(**llm_cfg)).to(dtype)
    if llm_format == "bin":
        torch.save(llm.state_dict(), root / "llm" / "pytorch_model.bin")
    else:
        llm.save_pretrained(str(root / "llm"), max_shard_size="40KB")  # transformers' shards + index
    (root / "llm" / "config.json").write_text(json.dumps({"_name_or_path": str(root / "llm"), **llm_cfg}, indent=2))
    (root / "llm" / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0, "temperature": 0.9,
         "top_p": 0.6, "transformers_version": "4.36.2"}))

    tower = {k: v.to(dtype) for k, v in vision_tower_tensors(gen).items()}
    (root / "vision_tower").mkdir()
    save_file(tower, str(root / "vision_tower" / "model.safetensors"), metadata={"format": "pt"})
    rq = {"architectures": ["RQVAESiglipModel"], "model_type": "rqvaesiglip_model", "embed_dim": CODE_DIM,
          "n_embed": N_EMBED, "latent_shape": [GRID, GRID, CODE_DIM], "code_shape": [GRID, GRID, DEPTH],
          "shared_codebook": False, "restart_unused_codes": True, "decay": 0.99, "latent_loss_weight": 0.25,
          "ddconfig": DDCONFIG, "decoder_latent_shape": None, "pretrained_model": str(siglip_folder)}
    rt = {"architectures": ["RQTransformer"], "model_type": "rqtransformer_model", "block_size": [GRID, GRID, DEPTH],
          "input_embed_dim_1": CODE_DIM, "input_embed_dim_2": LLM_HIDDEN, "embed_dim": RQ_DIM, "vocab_size": N_EMBED,
          "head": {"block": {"n_head": RQ_HEADS}, "n_layer": RQ_LAYERS}}
    vt_cfg = {"_name_or_path": str(root / "vision_tower"), "architectures": ["RQVAESIGLIPTransformer"],
              "model_type": "rqvaesigliptransformer_model", "hidden_size": CODE_DIM, "rqvaesiglip": rq,
              "rqtransformer": rt, "torch_dtype": str(dtype).removeprefix("torch."), "transformers_version": "4.36.2"}
    (root / "vision_tower" / "config.json").write_text(json.dumps(vt_cfg, indent=2))
    (root / "vision_tower" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
         "image_processor_type": "CLIPImageProcessor", "size": {"height": 32, "width": 32}}))

    proj = {"layers.0.weight": torch.randn(LLM_HIDDEN, CODE_DIM, generator=gen) * 0.2,
            "layers.0.bias": torch.zeros(LLM_HIDDEN), "layers.2.bias": torch.zeros(LLM_HIDDEN),
            "layers.2.weight": torch.randn(LLM_HIDDEN, LLM_HIDDEN, generator=gen) * 0.2}
    (root / "mm_projector").mkdir()
    save_file({k: v.to(dtype) for k, v in proj.items()}, str(root / "mm_projector" / "model.safetensors"),
              metadata={"format": "pt"})
    mm_cfg = {"_name_or_path": str(root / "mm_projector"), "architectures": ["MultimodalProjector"],
              "mm_projector_type": "mlp2x_gelu", "model_type": "v2l_projector",
              "torch_dtype": str(dtype).removeprefix("torch."), "transformers_version": "4.36.2"}
    (root / "mm_projector" / "config.json").write_text(json.dumps(mm_cfg, indent=2))
    top = {"_name_or_path": str(root), "architectures": ["VILAULlamaModel"], "model_type": "vila_u_llama",
           "llm_cfg": llm_cfg, "vision_tower_cfg": vt_cfg, "mm_projector_cfg": mm_cfg, "hidden_size": LLM_HIDDEN,
           "mm_hidden_size": CODE_DIM, "image_aspect_ratio": "resize", "num_video_frames": 2,
           "mm_use_im_start_end": True, "mm_use_vi_start_end": True, "mm_use_im_patch_token": False,
           "mm_vision_select_layer": -2, "model_dtype": str(dtype), "resume_path": str(root),
           "tune_language_model": True,
           "transformers_version": "4.36.2"}
    (root / "config.json").write_text(json.dumps(top, indent=2))
    return root


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory) -> Path:
    """The SigLIP their config names by `pretrained_model` (a local folder; the release names a Hub id)."""
    folder = tmp_path_factory.mktemp("siglip-tiny")
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"],
                                                    "vision_config": VISION, "text_config": TEXT}))
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory, siglip_folder) -> Path:
    return write_release(tmp_path_factory.mktemp("vila-u-tiny") / "vila-u-7b-256", siglip_folder)


@pytest.fixture(scope="module")
def model(release) -> VilaU:
    return VilaU.from_pretrained(release)


def part_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a part folder, whatever its sharding or format."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            out.update(load_file(str(path)))
        elif path.suffix == ".bin":
            out.update(torch.load(path, weights_only=True))
    return out


def configs_of(root: Path) -> dict[str, dict]:
    return {name: json.loads((root / name).read_text()) for name in
            ("config.json", "llm/config.json", "llm/generation_config.json", "vision_tower/config.json",
             "vision_tower/preprocessor_config.json", "mm_projector/config.json")}


def image(seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------
# Loading: every tensor lands where it belongs, and the parts compute what the release's do


def test_release_loads_every_tensor_in_place(release: Path, model: VilaU) -> None:
    ours = model.state_dict()
    llm = part_tensors(release / "llm")
    assert len(list((release / "llm").glob("model-*-of-*.safetensors"))) > 1  # the fixture is sharded
    for name, tensor in llm.items():
        assert torch.equal(ours[f"llm.{name}"], tensor), name
    tower = part_tensors(release / "vision_tower")
    for name, tensor in tower.items():
        found = re.match(r"rqvaesiglip\.quantizer\.codebooks\.(\d+)\.(\w+)$", name)
        if found:
            d, field = int(found.group(1)), found.group(2)
            q = model.tower.quantizer
            if field == "weight":
                assert torch.equal(q.codebooks[d], tensor[:-1]) and torch.equal(q.padding[d], tensor[-1])
            else:
                assert torch.equal({"cluster_size_ema": q.cluster_size, "embed_ema": q.embed_sum}[field][d], tensor)
        elif name.startswith("rqtransformer."):
            assert torch.equal(ours["depth_transformer." + name[len("rqtransformer."):]], tensor), name
        elif name in ("rqvaesiglip.logit_scale", "rqvaesiglip.logit_bias"):
            assert torch.equal(ours["tower.siglip_model." + name.split(".")[-1]], tensor)
        else:
            assert torch.equal(ours["tower." + name[len("rqvaesiglip."):]], tensor), name
    for name, tensor in part_tensors(release / "mm_projector").items():
        assert torch.equal(ours["mm_projector." + name[len("layers."):]], tensor), name
    assert bool(model.tower.quantizer.initialized)
    cfg = model.config
    assert (cfg.tower.architecture, cfg.depth.architecture) == ("rqvaesiglip", "rqtransformer")
    assert cfg.prompt_format == "vila-u"
    assert model.llm.config.rope_parameters["rope_type"] == "linear"
    assert model.llm.config.rope_parameters["factor"] == 2.0
    assert model.im_start_id == SPM_VOCAB and model.vi_end_id == SPM_VOCAB + 3  # V-4 .. V-1 as their code assumes


def test_codes_match_siglip_layer_l_minus_2_and_nearest_residuals(release: Path, model: VilaU) -> None:
    """Codes = residual nearest-neighbour lookup (L2, padding row excluded) on transformers' SigLIP
    hidden state after layer L-2, computed here in float64."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    tower = part_tensors(release / "vision_tower")
    prefix = "rqvaesiglip.siglip_model.vision_model."
    siglip = SiglipVisionModel(SiglipVisionConfig(**VISION)).eval()
    state = {k[len(prefix):]: v for k, v in tower.items() if k.startswith(prefix)}
    target = siglip.state_dict()
    siglip.load_state_dict({k: state[k[len("vision_model."):] if k.startswith("vision_model.") else k] for k in target})
    images = torch.stack([image(1), image(2)])
    with torch.no_grad():
        hidden = siglip(pixel_values=images, output_hidden_states=True).hidden_states[-2].double()
    residual = hidden.reshape(-1, CODE_DIM)
    expected = []
    for d in range(DEPTH):
        book = tower[f"rqvaesiglip.quantizer.codebooks.{d}.weight"][:-1].double()
        idx = torch.cdist(residual, book).argmin(1)
        expected.append(idx)
        residual = residual - book[idx]
    expected = torch.stack(expected, 1).reshape(2, GRID, GRID, DEPTH)
    assert torch.equal(model.tower.tokenize(images), expected)


def _diffusers_decoder(tower: dict[str, torch.Tensor]):
    """diffusers' VQGAN-style Decoder with the release's decoder weights (names mapped by hand)."""
    from diffusers.models.autoencoders.vae import Decoder

    mult, levels = DDCONFIG["ch_mult"], len(DDCONFIG["ch_mult"])
    kinds = ["AttnUpDecoderBlock2D" if DDCONFIG["resolution"] // 2 ** (levels - 1 - i) in DDCONFIG["attn_resolutions"]
             else "UpDecoderBlock2D" for i in range(levels)]
    decoder = Decoder(in_channels=DDCONFIG["z_channels"], out_channels=3, up_block_types=tuple(kinds),
                      block_out_channels=tuple(DDCONFIG["ch"] * m for m in mult),
                      layers_per_block=DDCONFIG["num_res_blocks"], norm_num_groups=32).eval()
    renames = [(r"^mid\.block_(\d)\.", lambda m: f"mid_block.resnets.{int(m.group(1)) - 1}."),
               (r"^mid\.attn_1\.", lambda m: "mid_block.attentions.0."),
               (r"^up\.(\d+)\.block\.", lambda m: f"up_blocks.{levels - 1 - int(m.group(1))}.resnets."),
               (r"^up\.(\d+)\.attn\.", lambda m: f"up_blocks.{levels - 1 - int(m.group(1))}.attentions."),
               (r"^up\.(\d+)\.upsample\.", lambda m: f"up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0."),
               (r"^norm_out\.", lambda m: "conv_norm_out."), (r"nin_shortcut", lambda m: "conv_shortcut"),
               (r"\.norm\.", lambda m: ".group_norm."), (r"\.q\.", lambda m: ".to_q."), (r"\.k\.", lambda m: ".to_k."),
               (r"\.v\.", lambda m: ".to_v."), (r"\.proj_out\.", lambda m: ".to_out.0.")]
    state = {}
    for name, tensor in tower.items():
        if not name.startswith("rqvaesiglip.decoder."):
            continue
        name = name[len("rqvaesiglip.decoder."):]
        for pattern, repl in renames:
            name = re.sub(pattern, repl, name)
        if re.search(r"\.to_(q|k|v|out\.0)\.weight$", name):
            tensor = tensor[:, :, 0, 0]  # 1x1 convolutions -> linear layers
        state[name] = tensor
    decoder.load_state_dict(state)
    return decoder


def test_pixel_decoder_matches_diffusers_vqgan_decoder(release: Path, model: VilaU) -> None:
    tower = part_tensors(release / "vision_tower")
    codes = torch.randint(0, N_EMBED, (2, GRID, GRID, DEPTH), generator=torch.Generator().manual_seed(3))
    z = sum(F.embedding(codes[..., d], tower[f"rqvaesiglip.quantizer.codebooks.{d}.weight"]) for d in range(DEPTH))
    z = F.conv2d(z.permute(0, 3, 1, 2), tower["rqvaesiglip.post_quant_conv.weight"],
                 tower["rqvaesiglip.post_quant_conv.bias"])
    with torch.no_grad():
        expected = _diffusers_decoder(tower)(z).clamp(-1, 1)
    torch.testing.assert_close(model.tower.detokenize(codes), expected, atol=2e-5, rtol=1e-4)
    assert model.detokenize(codes[0]).size == (32, 32)


def _rqtransformer_reference(t: dict[str, torch.Tensor], hidden: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Their depth transformer written out: inputs, causal multi-head attention by explicit softmax."""
    def linear(x, name):
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], t[f"{name}.weight"], t[f"{name}.bias"])

    x = torch.cat([linear(hidden, "in_mlp_2")[:, None], linear(prefix, "in_mlp_1")], 1)
    m, length, e = x.shape
    x = x + t["pos_emb_d"][:, :length]
    mask = torch.tril(torch.ones(length, length, dtype=torch.bool))
    for k in range(RQ_LAYERS):
        b = f"head_transformer.blocks.{k}"
        h = norm(x, f"{b}.ln1")
        q, kk, v = (linear(h, f"{b}.attn.{n}").reshape(m, length, RQ_HEADS, -1).transpose(1, 2)
                    for n in ("query", "key", "value"))
        att = (q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + linear((att @ v).transpose(1, 2).reshape(m, length, e), f"{b}.attn.proj")
        x = x + linear(F.gelu(linear(norm(x, f"{b}.ln2"), f"{b}.mlp.0")), f"{b}.mlp.2")
    return linear(norm(x, "classifier_mlp.layer_norm"), "classifier_mlp.linear")


def test_depth_transformer_matches_the_release_computation(release: Path, model: VilaU) -> None:
    tower = part_tensors(release / "vision_tower")
    t = {k[len("rqtransformer."):]: v for k, v in tower.items() if k.startswith("rqtransformer.")}
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(5, LLM_HIDDEN, generator=gen)
    codes = torch.randint(0, N_EMBED, (5, DEPTH - 1), generator=gen)
    embeds = torch.stack([F.embedding(codes[:, d], tower[f"rqvaesiglip.quantizer.codebooks.{d}.weight"])
                          for d in range(DEPTH - 1)], 1)
    expected = _rqtransformer_reference(t, hidden, embeds.cumsum(1))
    with torch.no_grad():
        got = model.depth_transformer(hidden, model.tower.quantizer.partial_sums(codes))
        last = model.depth_transformer(hidden, model.tower.quantizer.partial_sums(codes), last_only=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, expected[:, -1], atol=1e-5, rtol=1e-5)


def test_llm_matches_transformers_with_rope_scaling(release: Path, model: VilaU) -> None:
    """The lean decoder on the release's LLM (linear RoPE scaling x2) against transformers' forward."""
    from transformers import LlamaForCausalLM

    reference = LlamaForCausalLM.from_pretrained(str(release / "llm")).eval()
    ids = [model.generation_prompt_ids("a red circle")]
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits[0, -1]
        lean = model.llm.lm_head(DecodeStream(model, backend="lean").feed_tokens(ids))[0]
    torch.testing.assert_close(lean, expected, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# The authors' prompts


def _authors_ids(tokenizer, prompt: str) -> list[int]:
    """Their tokenizer_image_token: <bos>, then each chunk's ids without <bos>; "<image>" becomes -200."""
    ids = [tokenizer.bos_token_id]
    for chunk in re.split("(<image>)", prompt):
        ids += [-200] if chunk == "<image>" else tokenizer(chunk).input_ids[1:]
    return ids


def test_prompts_follow_the_authors_conversation(model: VilaU) -> None:
    from genfoundry.vilau.generate import encode_visual

    question = "what color is the circle?"
    seq = model.build_sequence(model.question_segments(encode_visual(model, image(1)), question))
    (start, codes, _), = seq["images"]
    collapsed = seq["ids"][:start] + [-200] + seq["ids"][start + len(codes):]
    assert collapsed == _authors_ids(model.tokenizer, f"{SYSTEM} USER: <image>\n{question} ASSISTANT:")
    video = model.build_sequence(model.question_segments(encode_visual(model, [image(1), image(2)]), question))
    starts = [s for s, _, _ in video["images"]]
    collapsed = (video["ids"][:starts[0]] + [-200] + video["ids"][starts[0] + 16:starts[1]] + [-200]
                 + video["ids"][starts[1] + 16:])
    assert collapsed == _authors_ids(model.tokenizer, f"{SYSTEM} USER: <image>\n<image>\n{question} ASSISTANT:")
    tok = model.tokenizer
    expected = {("a red circle", False): f"{SYSTEM} USER: a red circle ASSISTANT: <im_start>",
                (None, False): f"{SYSTEM} USER:ASSISTANT: <im_start>",  # their " " strips to an empty turn
                ("a cat", True): f"{SYSTEM} USER: a cat ASSISTANT: <vi_start>"}
    for (prompt, video), text in expected.items():
        assert model.generation_prompt_ids(prompt, video=video) == tok(text).input_ids
    assert model.frame_separator_ids() == []


# ----------------------------------------------------------------------------------------------
# Round trips


def test_official_to_ours_to_official_gives_identical_tensors_and_configs(release: Path, model: VilaU,
                                                                          tmp_path: Path) -> None:
    out = save_official(model, tmp_path / "again", max_shard_bytes=30_000)
    assert (out / "llm" / "model.safetensors.index.json").is_file()
    for part in ("llm", "vision_tower", "mm_projector"):
        before, after = part_tensors(release / part), part_tensors(out / part)
        assert before.keys() == after.keys(), part
        for name in before:
            assert before[name].dtype == after[name].dtype and torch.equal(before[name], after[name]), name
    assert configs_of(out) == configs_of(release)
    assert (out / "llm" / "tokenizer.model").read_bytes() == (release / "llm" / "tokenizer.model").read_bytes()
    index = json.loads((out / "llm" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(part_tensors(release / "llm"))
    assert all((out / "llm" / name).is_file() for name in index["weight_map"].values())


def _same_behaviour(a: VilaU, b: VilaU, size: int, question: str, caption: str, frames: int | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    img = image(5, size)
    assert a.answer(img, question, max_new_tokens=6) == b.answer(img, question, max_new_tokens=6)
    assert a.answer(img, question, max_new_tokens=6, temperature=0.9, seed=2) == \
        b.answer(img, question, max_new_tokens=6, temperature=0.9, seed=2)
    assert torch.equal(generate_codes(a, caption, seed=7), generate_codes(b, caption, seed=7))
    if frames:
        clips = [generate_codes(m, caption, seed=8, frames=frames) for m in (a, b)]
        assert torch.equal(*clips)


def test_release_behaves_the_same_after_conversion_either_way(release: Path, model: VilaU, tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    model.save_pretrained(ours)
    assert json.loads((ours / "config.json").read_text())["model_type"] == "genfoundry-vila-u"
    back = VilaU.from_pretrained(ours)
    _same_behaviour(model, back, 32, "what color is the circle?", "a red circle", frames=2)
    official = save_official(back, tmp_path / "official")
    assert configs_of(official) == configs_of(release)
    _same_behaviour(model, VilaU.from_pretrained(official), 32, "what color is the circle?", "a red circle")


def test_ours_to_official_to_ours_keeps_our_architecture(tmp_path: Path) -> None:
    """A ShapeWorld model (conv tower, our depth transformer, grid positions) in the authors' folders."""
    torch.manual_seed(0)
    native = VilaU(VilaUConfig.tiny()).eval()
    out = save_official(native, tmp_path / "tiny-official")
    top = json.loads((out / "config.json").read_text())
    assert top["model_type"] == "vila_u_llama" and top["genfoundry"]["tower"]["encoder"] == "conv"
    tower = part_tensors(out / "vision_tower")
    assert tower["rqvaesiglip.quantizer.codebooks.0.weight"].shape == (16 + 1, 8)  # the official row count
    assert any(k.startswith("rqtransformer.") for k in tower)
    assert "grid_position.table" in part_tensors(out / "mm_projector")
    back = VilaU.from_pretrained(out)
    assert back.config == native.config
    _same_behaviour(native, back, 32, "what color is the circle?", "a red circle", frames=2)


def test_official_architecture_built_here_round_trips(release: Path, tmp_path: Path) -> None:
    from genfoundry.vilau.model import load_tokenizer

    torch.manual_seed(1)
    native = VilaU(VilaUConfig.tiny_official(), load_tokenizer(release / "llm")).eval()
    out = save_official(native, tmp_path / "built")
    vt = json.loads((out / "vision_tower" / "config.json").read_text())
    assert vt["architectures"] == ["RQVAESIGLIPTransformer"] and vt["rqtransformer"]["head"]["n_layer"] == 2
    _same_behaviour(native, VilaU.from_pretrained(out), 32, "what is it?", "a cat")


@pytest.mark.skipif("vila-u-shapes" not in hub.zoo_names(), reason="vila-u-shapes is not in genfoundry/zoo")
def test_embedded_model_round_trips_through_the_official_layout(tmp_path: Path) -> None:
    from genfoundry.shapes import render

    embedded = VilaU.from_pretrained("vila-u-shapes")
    back = VilaU.from_pretrained(save_official(embedded, tmp_path / "shapes-official"))
    assert back.config == embedded.config
    sa, sb = embedded.state_dict(), back.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    scene = render("a red circle", size=64, seed=3)
    assert back.answer(scene, "what color is the circle?") == embedded.answer(scene, "what color is the circle?")
    assert torch.equal(generate_codes(back, "a blue square", seed=0), generate_codes(embedded, "a blue square", seed=0))


# ----------------------------------------------------------------------------------------------
# dtypes, formats, memory


def test_dtype_is_kept_and_can_be_chosen(tmp_path: Path, siglip_folder: Path) -> None:
    root = write_release(tmp_path / "bf16", siglip_folder, dtype=torch.bfloat16, seed=1)
    kept = VilaU.from_pretrained(root)
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}
    assert kept.tower.quantizer.codebooks.dtype == torch.bfloat16
    assert isinstance(kept.answer(image(1), "what is it?", max_new_tokens=3), str)
    assert kept.generate_image("a red circle", seed=0).size == (32, 32)
    wide = VilaU.from_pretrained(root, dtype=torch.float32)
    assert {p.dtype for p in wide.parameters()} == {torch.float32}
    assert torch.equal(wide.llm.lm_head.weight, kept.llm.lm_head.weight.float())
    out = save_official(kept, tmp_path / "again")
    assert part_tensors(out / "llm")["lm_head.weight"].dtype == torch.bfloat16
    assert configs_of(out) == configs_of(root)
    cast = save_official(kept, tmp_path / "fp32", dtype=torch.float32)
    assert {t.dtype for t in part_tensors(cast / "vision_tower").values()} == {torch.float32}
    assert json.loads((cast / "config.json").read_text())["model_dtype"] == "torch.float32"
    assert {p.dtype for p in VilaU.from_pretrained(cast).parameters()} == {torch.float32}
    widened = json.loads((save_official(wide, tmp_path / "wide") / "llm" / "config.json").read_text())
    assert widened["torch_dtype"] == "float32"  # the configs follow the tensors written


def test_pytorch_bin_weights_load_like_safetensors(tmp_path: Path, siglip_folder: Path, model: VilaU) -> None:
    root = write_release(tmp_path / "bin", siglip_folder, llm_format="bin")
    loaded = VilaU.from_pretrained(root)
    reference = VilaU.from_pretrained(write_release(tmp_path / "st", siglip_folder))
    sa, sb = loaded.state_dict(), reference.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_building_puts_checkpoint_tensors_on_meta(release: Path) -> None:
    """The model is built without memory for its weights (parameters and persistent buffers on the meta
    device) while what no checkpoint holds (RoPE tables, position ids) is computed for real."""
    from torch import nn

    from genfoundry.vilau.convert import checkpoint_tensors_on_meta
    from genfoundry.vilau.model import load_tokenizer

    register = nn.Module.register_parameter
    with checkpoint_tensors_on_meta():
        built = VilaU(VilaUConfig.tiny_official(), load_tokenizer(release / "llm"))
    assert nn.Module.register_parameter is register
    assert all(p.device.type == "meta" for p in built.parameters())
    persistent = set(built.state_dict())
    for name, buffer in built.named_buffers():
        assert buffer.device.type == ("meta" if name in persistent else "cpu"), name
    assert built.llm.model.rotary_emb.inv_freq.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Bad folders: one-line errors naming the file and the tensor


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(hub.CheckpointError) as caught:
        VilaU.from_pretrained(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_folder_of_another_model_is_refused(tmp_path: Path, release: Path) -> None:
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    assert "model_type 'llama'" in _error(other) and "config.json" in _error(other)
    clip = _copy(release, tmp_path / "clip-tower")
    vt = json.loads((clip / "vision_tower" / "config.json").read_text())
    del vt["rqvaesiglip"]
    (clip / "vision_tower" / "config.json").write_text(json.dumps(vt))
    message = _error(clip)
    assert "vision_tower/config.json" in message and "rqvaesiglip" in message


def test_siglip_named_by_hub_id_or_training_path(tmp_path: Path, release: Path) -> None:
    """The release stores only the SigLIP's name: a known Hub id (or a path ending in it) gives its shape,
    an unknown one a clear error."""
    from genfoundry.vilau.convert import _siglip_shape

    for name in ("google/siglip-so400m-patch14-384", "/data/checkpoints/siglip-so400m-patch14-384"):
        vision, text = _siglip_shape({"pretrained_model": name}, release)
        assert (vision["hidden_size"], vision["patch_size"], text["num_hidden_layers"]) == (1152, 14, 27)
    unknown = _copy(release, tmp_path / "unknown")
    vt = json.loads((unknown / "vision_tower" / "config.json").read_text())
    vt["rqvaesiglip"]["pretrained_model"] = "/nowhere/siglip-custom"
    (unknown / "vision_tower" / "config.json").write_text(json.dumps(vt))
    message = _error(unknown)
    assert "vision_tower/config.json" in message and "siglip-custom" in message


def test_partial_download_names_the_missing_shard_and_tensor(tmp_path: Path, release: Path) -> None:
    partial = _copy(release, tmp_path / "partial")
    shard = sorted((partial / "llm").glob("model-*-of-*.safetensors"))[-1]
    shard.unlink()
    message = _error(partial)
    assert shard.name in message and "partial download" in message
    lacking = _copy(release, tmp_path / "lacking")
    proj = load_file(str(lacking / "mm_projector" / "model.safetensors"))
    del proj["layers.2.bias"]
    save_file(proj, str(lacking / "mm_projector" / "model.safetensors"))
    assert "mm_projector/layers.2.bias" in _error(lacking)
    truncated = _copy(release, tmp_path / "truncated")
    data = (truncated / "vision_tower" / "model.safetensors").read_bytes()
    (truncated / "vision_tower" / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "vision_tower/model.safetensors" in _error(truncated) and "truncated" in _error(truncated)


def test_shapes_that_do_not_match_the_config_name_file_and_tensor(tmp_path: Path, release: Path) -> None:
    wrong = _copy(release, tmp_path / "wrong")
    vt = json.loads((wrong / "vision_tower" / "config.json").read_text())
    vt["rqtransformer"]["embed_dim"] = 64
    vt["rqtransformer"]["head"]["block"]["n_head"] = 4
    (wrong / "vision_tower" / "config.json").write_text(json.dumps(vt))
    message = _error(wrong)
    assert "vision_tower/model.safetensors" in message and "rqtransformer." in message and "(32" in message
    books = _copy(release, tmp_path / "books")
    tower = load_file(str(books / "vision_tower" / "model.safetensors"))
    tower["rqvaesiglip.quantizer.codebooks.1.weight"] = tower["rqvaesiglip.quantizer.codebooks.1.weight"][:-1]
    save_file(tower, str(books / "vision_tower" / "model.safetensors"))
    message = _error(books)
    assert "vision_tower/model.safetensors" in message and "codebooks.1.weight" in message and "(24, 32)" in message


def test_pickles_never_run_code(tmp_path: Path, release: Path) -> None:
    evil = _copy(release, tmp_path / "evil")
    for path in (evil / "llm").glob("model*"):
        path.unlink()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    torch.save({"model.embed_tokens.weight": Payload()}, evil / "llm" / "pytorch_model.bin")
    message = _error(evil)
    assert "pytorch_model.bin" in message and "weights_only" in message
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# The CLI


def test_ask_and_imagine_take_a_release_folder(tmp_path: Path, release: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from genfoundry.cli import app

    picture = tmp_path / "in.png"
    Image.new("RGB", (40, 40), (230, 40, 40)).save(picture)
    asked = CliRunner().invoke(app, ["ask", str(picture), "what color is it?", "--model", str(release),
                                     "--max-new-tokens", "4", "--device", "cpu"])
    assert asked.exit_code == 0, asked.output
    out = tmp_path / "out.png"
    drawn = CliRunner().invoke(app, ["imagine", "a red circle", "-o", str(out), "--seed", "0", "--model", str(release),
                                     "--device", "cpu"])
    assert drawn.exit_code == 0, drawn.output
    assert Image.open(out).size == (32, 32)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "vila_u_llama"}))
    failed = CliRunner().invoke(app, ["ask", str(picture), "what?", "--model", str(broken)])
    assert failed.exit_code == 2 and "llm/config.json" in failed.output


def test_model_registry_recognises_a_release_for_quantization(release: Path) -> None:
    from genfoundry.models import family_of

    assert family_of(release).name == "vila-u"
