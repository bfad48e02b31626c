"""Model card (README.md) of a trained VILA-U folder: data, config, the exact command, wall time per
stage and the held-out metrics of `genfoundry eval vilau`, all read from files the runs wrote."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from genfoundry import hub
from genfoundry.vilau.data import MixConfig


def _stage_rows(log_path: Path) -> list[str]:
    stages: dict[str, list[dict]] = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        stages.setdefault(record["stage"], []).append(record)
    rows = []
    for stage, records in stages.items():
        k = max(1, len(records) // 10)
        first = sum(r["loss"] for r in records[:k]) / k
        last = sum(r["loss"] for r in records[-k:]) / k
        # "seconds" counts from the start of each (re)started run: sum the runs' last values
        seconds = sum(a["seconds"] for a, b in zip(records, records[1:]) if b["seconds"] < a["seconds"])
        seconds += records[-1]["seconds"]
        rows.append(f"| {stage} | {records[-1]['step']} | {seconds:.0f} | {first:.4g} | {last:.4g} |")
    return rows


def _command(config: dict) -> str:
    """The `genfoundry train vilau` call that reproduces `config` (train_config.json)."""
    args = ["genfoundry", "train", "vilau", "--out", config["out"], "--tower-steps", str(config["tower_steps"]),
            "--llm-steps", str(config["llm_steps"]), "--batch-size", str(config["batch_size"]),
            "--tower-lr", f"{config['tower_lr']:g}", "--lr", f"{config['llm_lr']:g}", "--seed", str(config["seed"]),
            "--device", config["device"]]
    if config["contrastive"]:
        args += ["--contrastive-weight", f"{config['contrastive_weight']:g}"]
    else:
        args.append("--no-contrastive")
    if config.get("align_steps"):
        args += ["--align-steps", str(config["align_steps"]), "--align-lr", f"{config['align_lr']:g}",
                 "--align-batch-size", str(config["align_batch_size"]), "--align-images", str(config["align_images"])]
        if config.get("align_hard_negatives"):
            args += ["--align-hard-negatives", str(config["align_hard_negatives"])]
        if config.get("align_train_text"):
            args.append("--align-train-text")
    if config.get("align_image_head"):
        args += ["--align-image-head", config["align_image_head"]]
    if config.get("ema_decay"):
        args += ["--ema-decay", f"{config['ema_decay']:g}"]
    if config.get("init_from"):
        args += ["--init-from", config["init_from"]]
    defaults, mix = MixConfig(), config.get("mix") or {}
    for key in ("video_fraction", "relation_fraction", "generation_fraction", "qa_fraction"):  # the CLI's shares
        if mix.get(key) is not None and mix[key] != getattr(defaults, key):
            args += [f"--{key.replace('_', '-')}", f"{mix[key]:g}"]
    return " ".join(shlex.quote(a) for a in args)


def model_card(results: dict, run_dir: Path, name: str = "vila-u-shapes") -> str:
    config = json.loads((run_dir / "train_config.json").read_text())
    vqa, rec, ret = results["vqa"], results["reconstruction"], results["retrieval"]
    gens = results["generation"]
    main_cfg = "3.0" if "3.0" in gens else next(iter(gens))
    gen = gens[main_cfg]
    lines = [
        f"# {name}", "",
        "A small VILA-U trained from scratch on ShapeWorld (64x64 procedural scenes of coloured circles, "
        "squares and triangles): one autoregressive Llama that answers questions about images and draws "
        "them, through a residual-quantized vision tower aligned to text. Trained by `genfoundry train vilau` "
        "in two stages: (1) the vision tower (conv encoder, residual quantizer with per-depth EMA codebooks "
        "and dead-code restart, conv decoder, SigLIP-style sigmoid contrastive head against a frozen text "
        "encoder); (2) with the tower frozen, the Llama, the projector and the depth transformer on a mix of "
        "[image, text] (captions and QA) and [text, image] sequences (captions dropped to \" \" 10% of the "
        "time for CFG), plus batches of moving-shape clips. Official-style layout: config.json, llm/, "
        "vision_tower/, mm_projector/; weights stored in fp16.", "",
        "## Data",
        "The ShapeWorld stream (`genfoundry.shapes.ShapesDataset`, categories single_object, two_objects, "
        "counting, colors, position in equal shares), a fresh deterministic batch per step; evaluation uses a "
        "seed no training stream uses (`genfoundry/vilau/evaluate.py`).", "",
        "## Command", "```", _command(config), "```",
        f"(then `model/` was saved in fp16 to `genfoundry/zoo/{name}`).", "",
        "| stage | steps | seconds | loss (first 10%) | loss (last 10%) |", "| --- | ---: | ---: | ---: | ---: |",
        *_stage_rows(run_dir / "log.jsonl"), "",
        "## Metrics (held-out ShapeWorld, `genfoundry eval vilau`)", "",
        "| metric | value |", "| --- | --- |",
        f"| VQA accuracy | **{vqa['accuracy']:.3f}** |",
        *[f"| VQA {k} | {v:.3f} |" for k, v in vqa["per_type"].items()],
        f"| generation score | **{gen['score']:.3f}** |",
        *[f"| generation {k} | {v:.3f} |" for k, v in gen["per_category"].items()],
        f"| reconstruction PSNR (dB) | {rec['psnr_db']:.2f} |",
        f"| caption retrieval top-1 (1 of {ret['candidates']}) | {ret['top1']:.3f} |",
        *([f"| caption retrieval top-1 against its one-edit variants (1 of {1 + ret['edits_per_caption']:.1f}) | "
           f"{ret['edits_top1']:.3f} |"] if "edits_top1" in ret else []), "",
        f"VQA: {vqa['questions']} questions, greedy answers. Generation: {gen['prompts']} prompts at cfg {main_cfg} "
        "(top-k 900, top-p 0.96, temperature 1), scored by `genfoundry.shapes.evaluate`. PSNR: "
        f"{rec['images']} renders through codes and back. Retrieval: {ret['images']} images, 1 true caption "
        "among 10.", "",
    ]
    if len(gens) > 1:
        lines += ["CFG study (generation score):", "", "| cfg | " + " | ".join(gens) + " |",
                  "| --- | " + " | ".join("---:" for _ in gens) + " |",
                  "| score | " + " | ".join(f"{g['score']:.3f}" for g in gens.values()) + " |", ""]
    lines += ["## Use", "```", 'genfoundry ask image.png "what color is the circle?"',
              'genfoundry imagine "a red circle to the left of a blue square" -o out.png --seed 0', "```",
              "```python", "from genfoundry.vilau import VilaU", f'model = VilaU.from_pretrained("{name}")',
              'image = model.generate_image("two green triangles", seed=0)',
              'print(model.answer(image, "how many triangles are there?"))', "```", "",
              "## Config", "```json", json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, results: dict, run_dir: Path, name: str = "vila-u-shapes") -> Path:
    path = Path(folder) / "README.md"
    hub.write_text_atomic(path, model_card(results, Path(run_dir), name))
    return path
