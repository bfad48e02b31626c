"""Memory of the authors' VILA-U models, computed from their shapes (no weights needed).

    python benchmarks/vilau_official_memory.py

Builds VilaUConfig.official_256() and .official_384() part by part with every tensor on the meta device,
counts what a checkpoint holds (parameters and persistent buffers) and turns it into bytes per dtype,
plus the KV cache of a drawing (CFG: two rows) and of an answer. It also times building the whole VilaU
the way genfoundry.vilau.convert.load_official does (checkpoint tensors on the meta device) and reports
the process's peak memory while doing so (one fresh process per model). For the 256 px model the counts are set
against the file sizes of the released mit-han-lab/vila-u-7b-256 (its Hugging Face file listing), which
checks the shapes assumed for the parts no released file describes (pixel decoder, depth transformer).
Writes benchmarks/results/vilau_official_memory.{json,md}.
"""

from __future__ import annotations

import torch
from harness import markdown_table, write_results
from torch import nn

from genfoundry.vilau import VilaUConfig, build_depth_transformer, build_tower
from genfoundry.vilau.convert import checkpoint_tensors_on_meta

# Sizes in the vila-u-7b-256 listing (Hugging Face, commit 89ee1eb), in bytes as it prints them (GB = 1e9).
RELEASED_256 = {"llm": (4.94 + 4.95 + 3.59) * 1e9, "vision_tower": 2.71e9, "mm_projector": 42e6}
PROMPT_TOKENS = 64  # a short caption in the vicuna_v1 conversation, or a question (the system prompt is ~40)


def _count(module: nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def part_counts(config: VilaUConfig) -> dict[str, int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    with checkpoint_tensors_on_meta():
        tower = build_tower(config.tower, 32004, 0)
        depth = build_depth_transformer(config.depth)
        llm = LlamaForCausalLM(LlamaConfig(**config.llm))
    hidden, code = config.llm["hidden_size"], config.tower.code_dim
    return {
        "llm": _count(llm),
        "vision_tower/siglip vision": _count(tower.siglip_model.vision_model),
        "vision_tower/siglip text": _count(tower.siglip_model.text_model) + 2,  # + logit scale and bias
        "vision_tower/quantizer (codebooks + EMA)": _count(tower.quantizer) - 1,  # without our `initialized`
        "vision_tower/pixel decoder": _count(tower.decoder) + _count(tower.post_quant_conv),
        "vision_tower/depth transformer": _count(depth),
        "mm_projector": code * hidden + hidden + hidden * hidden + hidden,
    }


def kv_bytes_per_token(config: VilaUConfig, dtype_bytes: int = 2) -> int:
    llm = config.llm
    head_dim = llm["hidden_size"] // llm["num_attention_heads"]
    return 2 * llm["num_hidden_layers"] * llm.get("num_key_value_heads", llm["num_attention_heads"]) * head_dim * dtype_bytes


def summary(name: str, config: VilaUConfig) -> dict:
    counts = part_counts(config)
    total = sum(counts.values())
    files = {"llm": counts["llm"], "mm_projector": counts["mm_projector"],
             "vision_tower": sum(v for k, v in counts.items() if k.startswith("vision_tower/"))}
    image_tokens = config.tower.grid ** 2
    per_token = kv_bytes_per_token(config)
    out = {
        "model": name, "image_tokens": image_tokens, "depth": config.tower.depth, "parameters": counts,
        "total_parameters": total, "file_parameters": files,
        "weights_gib": {"bfloat16": total * 2 / 2**30, "float32": total * 4 / 2**30},
        "kv_cache_gib_bf16": {
            "image (2 rows, CFG)": 2 * (PROMPT_TOKENS + image_tokens) * per_token / 2**30,
            f"video, {config.video_frames} frames (2 rows)": 2 * (PROMPT_TOKENS + config.video_frames * image_tokens)
            * per_token / 2**30,
            "answer about one image (1 row, 64 new tokens)": (PROMPT_TOKENS + image_tokens + 64) * per_token / 2**30},
    }
    if name == "vila-u-7b-256":
        out["released_bytes"] = RELEASED_256
        out["computed_bf16_bytes"] = {k: v * 2 for k, v in files.items()}
    return out


def build_cost(config_name: str) -> dict:
    """Seconds and peak process memory (GiB) to build the whole model with its checkpoint tensors on meta."""
    import time

    from genfoundry.vilau import VilaU

    start = time.perf_counter()
    with checkpoint_tensors_on_meta():
        VilaU(getattr(VilaUConfig, config_name)())
    return {"build_seconds": time.perf_counter() - start, "peak_process_gib": _peak_gib()}


def _peak_gib() -> float:
    """The process's peak resident memory (VmHWM, which unlike ru_maxrss does not carry the parent's peak
    over fork and exec)."""
    from pathlib import Path

    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 2**20


def streaming_config(quick: bool = False) -> VilaUConfig:
    """The authors' architecture with a 1.1 GB (bfloat16) LLM, to load for real: LLaMA-2's vocabulary,
    width 2048, 8 layers, on the tiny tower (`quick`: width 256, 2 layers, a smoke test)."""
    config = VilaUConfig.tiny_official()
    if quick:
        config.llm.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=32004)
    else:
        config.llm.update(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=16,
                          num_key_value_heads=16, vocab_size=32004)
    return VilaUConfig.from_dict(config.to_dict())


def load_cost(folder: str) -> dict:
    """Seconds, peak process memory and the loaded tensors' bytes of VilaU.from_pretrained(folder)."""
    import time

    from genfoundry.vilau import VilaU

    base = _peak_gib()
    start = time.perf_counter()
    model = VilaU.from_pretrained(folder)
    seconds = time.perf_counter() - start
    loaded = _peak_gib()
    state = model.state_dict()
    weights = sum(t.numel() * t.element_size() for t in state.values())
    for tensor in state.values():  # read every weight once: mapped file pages count from here on
        tensor.sum()
    return {"load_seconds": seconds, "peak_process_gib": loaded, "after_reading_every_weight_gib": _peak_gib(),
            "before_load_gib": base, "weights_gib": weights / 2**30}


def streaming_cost(quick: bool = False) -> dict:
    """Write the streaming_config model in the authors' layout (bfloat16, in 0.3 GB shards so that several
    are streamed; the release's are 5 GB), then load it in a fresh process."""
    import tempfile

    from genfoundry.vilau import VilaU, save_official

    with tempfile.TemporaryDirectory() as folder:
        with checkpoint_tensors_on_meta():
            model = VilaU(streaming_config(quick))
        model.to_empty(device="cpu")  # values do not matter here, only sizes
        shard = (4 if quick else 300) * 2**20
        save_official(model, folder, dtype=torch.bfloat16, max_shard_bytes=shard)
        del model
        return in_fresh_process("--load", folder)


def in_fresh_process(*args: str) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> None:
    results = [summary("vila-u-7b-256", VilaUConfig.official_256()),
               summary("vila-u-7b-384 (paper shape)", VilaUConfig.official_384())]
    for result, config_name in zip(results, ("official_256", "official_384")):
        result["meta_build"] = in_fresh_process("--build", "tiny_official" if quick else config_name)
    stream = streaming_cost(quick)
    rows = []
    for r in results:
        for part, n in r["parameters"].items():
            rows.append({"model": r["model"], "part": part, "parameters (M)": f"{n / 1e6:.1f}",
                         "bf16 (GiB)": f"{n * 2 / 2**30:.2f}"})
        rows.append({"model": r["model"], "part": "**total**", "parameters (M)": f"{r['total_parameters'] / 1e6:.1f}",
                     "bf16 (GiB)": f"{r['weights_gib']['bfloat16']:.2f}"})
    check = [{"file": part, "released (GB)": f"{results[0]['released_bytes'][part] / 1e9:.3f}",
              "computed bf16 (GB)": f"{results[0]['computed_bf16_bytes'][part] / 1e9:.3f}"} for part in RELEASED_256]
    kv = [{"model": r["model"], "use": use, "KV cache bf16 (GiB)": f"{gib:.2f}"}
          for r in results for use, gib in r["kv_cache_gib_bf16"].items()]
    build = [{"model": r["model"], "build (s)": f"{r['meta_build']['build_seconds']:.1f}",
              "peak process memory (GiB)": f"{r['meta_build']['peak_process_gib']:.2f}"} for r in results]
    markdown = ("Parameters and persistent buffers per part (what the checkpoint files hold), from the shapes of "
                "`VilaUConfig.official_256()` / `official_384()`; the pixel decoder and depth transformer shapes "
                "are assumptions (see docs/vilau_official.md).\n\n" + markdown_table(rows)
                + "\n\nAgainst the vila-u-7b-256 file listing:\n\n" + markdown_table(check)
                + f"\n\nKV cache (prompt of {PROMPT_TOKENS} tokens):\n\n" + markdown_table(kv)
                + "\n\nBuilding the whole VilaU with its checkpoint tensors on the meta device (as loading does, "
                "before any tensor is read), one fresh process each:\n\n" + markdown_table(build)
                + "\n\nLoading for real (`VilaU.from_pretrained`, fresh process) a model of the authors' architecture "
                f"with a {stream['weights_gib']:.2f} GiB bfloat16 LLM written in 0.3 GB shards: "
                f"{stream['load_seconds']:.1f} s; peak process memory {stream['before_load_gib']:.2f} GiB before "
                f"loading (Python, torch, transformers), {stream['peak_process_gib']:.2f} GiB when loaded (the "
                "safetensors tensors map the files and are paged in when used), "
                f"{stream['after_reading_every_weight_gib']:.2f} GiB after reading every weight once.\n")
    write_results("vilau_official_memory" + ("_quick" if quick else ""), {"results": results, "streaming_load": stream}, markdown,
                  title="VILA-U released models: memory from the shapes")
    print(markdown)


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(1)
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        print(json.dumps(build_cost(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--load":
        print(json.dumps(load_cost(sys.argv[2])))
    elif sys.argv[1:] in ([], ["--quick"]):
        main(quick=sys.argv[1:] == ["--quick"])
    else:
        sys.exit("usage: python benchmarks/vilau_official_memory.py [--quick]  (--quick: tiny models, a smoke test)")
