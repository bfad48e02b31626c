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
from genfoundry.vilau.convert import _checkpoint_tensors_on_meta

# Sizes in the vila-u-7b-256 listing (Hugging Face, commit 89ee1eb), in bytes as it prints them (GB = 1e9).
RELEASED_256 = {"llm": (4.94 + 4.95 + 3.59) * 1e9, "vision_tower": 2.71e9, "mm_projector": 42e6}
PROMPT_TOKENS = 64  # a short caption in the vicuna_v1 conversation, or a question (the system prompt is ~40)


def _count(module: nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def part_counts(config: VilaUConfig) -> dict[str, int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    with _checkpoint_tensors_on_meta():
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
    """Seconds and peak process memory (GiB, the address space's high-water mark VmHWM: unlike ru_maxrss it
    does not carry over the parent's peak through fork and exec) to build the whole model with its
    checkpoint tensors on meta."""
    import time
    from pathlib import Path

    from genfoundry.vilau import VilaU

    start = time.perf_counter()
    with _checkpoint_tensors_on_meta():
        VilaU(getattr(VilaUConfig, config_name)())
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return {"build_seconds": seconds, "peak_process_gib": peak_kib / 2**20}


def build_cost_in_fresh_process(config_name: str) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--build", config_name], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results = [summary("vila-u-7b-256", VilaUConfig.official_256()),
               summary("vila-u-7b-384 (paper shape)", VilaUConfig.official_384())]
    for result, config_name in zip(results, ("official_256", "official_384")):
        result["meta_build"] = build_cost_in_fresh_process(config_name)
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
                "before any tensor is read), one fresh process each:\n\n" + markdown_table(build) + "\n")
    write_results("vilau_official_memory", {"results": results}, markdown,
                  title="VILA-U released models: memory from the shapes")
    print(markdown)


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(1)
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        print(json.dumps(build_cost(sys.argv[2])))
    else:
        main()
