"""VILA-U commands: `ask`, `imagine`, `eval vilau`, `train vilau`.

`register(app)` adds `ask` and `imagine` to the root app, plus the groups `eval` and `train`, each
with a `vilau` command. The command functions are also exported (`ask_command`, `imagine_command`,
`eval_vilau_command`, `train_vilau_command`) so a root CLI that owns shared `eval`/`train` groups
can attach them itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("device 'cuda' requested but no CUDA GPU is available")
    return device


def _load(model: str, device: str, quantized: Optional[Path] = None):
    from genfoundry.hub import CheckpointError
    from genfoundry.vilau.model import VilaU

    try:
        vila = VilaU.from_pretrained(model, device=_device(device))
    except CheckpointError as err:
        raise typer.BadParameter(str(err), param_hint="--model") from None
    if quantized is not None:
        from genfoundry.svdquant import load_quantized

        try:
            load_quantized(vila, quantized)
        except (CheckpointError, ValueError) as err:
            raise typer.BadParameter(f"cannot apply quantized file {quantized}: {err}", param_hint="--quantized") from None
    return vila


QUANTIZED_HELP = "A file from `genfoundry quantize --model vila-u-shapes`: run the LLM and depth transformer in W4A4."


def _show_notes(caught: list) -> None:
    for w in caught:
        typer.echo(str(w.message), err=True)


def ask_command(
    image: Path = typer.Argument(..., help="Image file (PNG/JPEG); other sizes are resized with a note."),
    question: str = typer.Argument(..., help="A question, e.g. 'what color is the circle?'"),
    model: str = typer.Option("vila-u-shapes", help="Zoo name or VILA-U folder."),
    max_new_tokens: int = typer.Option(32, min=1, help="Longest answer in tokens."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    quantized: Optional[Path] = typer.Option(None, "--quantized", help=QUANTIZED_HELP),
) -> None:
    """Answer a question about an image."""
    if not question.strip():
        raise typer.BadParameter("the question is empty; ask e.g. 'what color is the circle?'", param_hint="QUESTION")
    if not image.exists():
        raise typer.BadParameter(f"image file not found: {image}", param_hint="IMAGE")
    vila = _load(model, device, quantized)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            text = vila.answer(str(image), question, max_new_tokens=max_new_tokens)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    _show_notes([w for w in caught if str(w.message).startswith("note:")])
    typer.echo(text)


# Best of 8 by the model's own caption and answer likelihoods: 0.770 on validation prompts against 0.505 for
# one draw (benchmarks/results/vilau_best_of_answers.md); 16 added 0.01 by caption likelihood at twice the
# drawing (benchmarks/results/vilau_best_of.md).
IMAGINE_CANDIDATES = 8
DEFAULT_RANKER = "caption+answers"  # generate.DEFAULT_RANKER, named here so the CLI starts without torch
RANK_HELP = ("How to pick among candidates: 'caption+answers' (this model's own likelihood of the caption "
             "given the image, plus that of the answers the caption implies to questions about the image), "
             "'caption' or 'answers' alone, or 'alignment' (the vision tower's text-alignment head).")


def imagine_command(
    caption: str = typer.Argument(..., help="What to draw, e.g. 'a red circle to the left of a blue square'."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the PNG."),
    cfg: float = typer.Option(3.0, help="Classifier-free guidance scale (>= 0; 1 = none)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (same seed, same image)."),
    top_k: int = typer.Option(900, help="Sample among the k most likely codes."),
    top_p: float = typer.Option(0.96, help="Nucleus sampling mass."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    frames: Optional[int] = typer.Option(None, help="Draw a clip of this many frames (written side by side)."),
    candidates: Optional[int] = typer.Option(
        None, min=1, help="Draw this many images (decoded together) and keep the best by --rank-by; "
                          "default 8 for an image of a ShapeWorld model, 1 for others (1 = the plain sample). "
                          "Images only."),
    rank_by: str = typer.Option(DEFAULT_RANKER, help=RANK_HELP),
    model: str = typer.Option("vila-u-shapes", help="Zoo name or VILA-U folder."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    quantized: Optional[Path] = typer.Option(None, "--quantized", help=QUANTIZED_HELP),
) -> None:
    """Draw an image for a caption."""
    from PIL import Image

    from genfoundry import hub

    if cfg < 0:
        raise typer.BadParameter(f"cfg must be >= 0, got {cfg}", param_hint="--cfg")
    vila = _load(model, device, quantized)
    try:
        if frames:
            if candidates is not None and candidates > 1:
                raise ValueError("--candidates applies to images only, not to clips (--frames)")
            clip = vila.generate_video(caption, frames=frames, cfg=cfg, seed=seed, top_k=top_k, top_p=top_p,
                                       temperature=temperature)
            image = Image.new("RGB", (clip[0].width * len(clip), clip[0].height))
            for i, frame in enumerate(clip):
                image.paste(frame, (i * frame.width, 0))
        else:
            image = vila.generate_image(caption, cfg=cfg, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature,
                                        candidates=candidates or (IMAGINE_CANDIDATES if vila.ranks_candidates else 1),
                                        rank_by=rank_by)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    with hub.atomic_path(output) as tmp:
        image.save(tmp, format="PNG")
    typer.echo(f"wrote {output}")


def eval_vilau_command(
    model: str = typer.Option("vila-u-shapes", help="Zoo name or VILA-U folder."),
    out: Path = typer.Option(Path("benchmarks/results/vilau_eval.json"), help="JSON results (a .md table beside it)."),
    quick: bool = typer.Option(False, help="A few samples only (smoke test)."),
    cfgs: str = typer.Option("1,2,3,5", help="CFG scales for the generation study."),
    gen_prompts: int = typer.Option(300, help="Generation prompts per CFG scale (a multiple of 5: one share per category)."),
    parts: str = typer.Option("vqa,reconstruction,retrieval,generation", help="Which measurements to run."),
    candidates: int = typer.Option(1, min=1, help="Generation: images drawn per prompt, the best by "
                                                  "--rank-by kept (1 = the plain sample)."),
    rank_by: str = typer.Option(DEFAULT_RANKER, help=RANK_HELP),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    card: Optional[Path] = typer.Option(None, help="Training run folder: write the model card (README.md) "
                                                   "into the model folder from its config, log and these results."),
    quantized: Optional[Path] = typer.Option(
        None, "--quantized", help="A file from `genfoundry quantize`: measure that W4A4 model too, beside the "
                                  "16-bit one, on the same held-out data."),
) -> None:
    """Held-out ShapeWorld: VQA, generation score per CFG, reconstruction PSNR, caption retrieval."""
    from genfoundry.vilau.evaluate import PARTS, evaluate_all, results_markdown, write_results

    try:
        scales = tuple(float(c) for c in cfgs.split(",") if c.strip())
    except ValueError:
        raise typer.BadParameter(f"--cfgs must be comma-separated numbers, got {cfgs!r}") from None
    if not scales or min(scales) < 0:
        raise typer.BadParameter(f"--cfgs needs numbers >= 0, got {cfgs!r}")
    if card is not None:
        if not Path(model).is_dir():
            raise typer.BadParameter("--card writes into the model folder: give --model a local folder",
                                     param_hint="--card")
        if not (card / "train_config.json").is_file() or not (card / "log.jsonl").is_file():
            raise typer.BadParameter(f"{card} is not a training run folder (train_config.json, log.jsonl)",
                                     param_hint="--card")
    part_names = tuple(p.strip() for p in parts.split(",") if p.strip())
    if card is not None and set(part_names) != set(PARTS):
        raise typer.BadParameter("--card needs every measurement: leave --parts at its default", param_hint="--card")
    if card is not None and quantized is not None:
        raise typer.BadParameter("--card describes the 16-bit model: leave out --quantized", param_hint="--card")
    vila = _load(model, device)
    quantized_vila = _load(model, device, quantized) if quantized is not None else None
    try:
        results = evaluate_all(vila, quick=quick, cfgs=scales, generation_prompts=gen_prompts, parts=part_names,
                               candidates=candidates, rank_by=rank_by)
        if quantized_vila is not None:
            from genfoundry.svdquant import read_quantization_config

            meta = read_quantization_config(quantized)
            results["quantized"] = {
                "file": str(quantized), **{k: meta.get(k) for k in ("method", "weight", "act", "group_size", "rank")},
                **evaluate_all(quantized_vila, quick=quick, cfgs=scales, generation_prompts=gen_prompts,
                               parts=part_names, candidates=candidates, rank_by=rank_by)}
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    results["model"] = model
    write_results(results, out, out.with_suffix(".md"))
    typer.echo(results_markdown(results))
    if card is not None:
        from genfoundry.vilau.card import write_model_card

        typer.echo(f"wrote {write_model_card(Path(model), results, card)}")


def train_vilau_command(
    out: Path = typer.Option(..., help="Output folder (checkpoints, logs, model/)."),
    steps: Optional[int] = typer.Option(None, help="Steps of each stage (overridden by --tower-steps/--llm-steps)."),
    tower_steps: Optional[int] = typer.Option(None, help="Stage-1 (vision tower) steps; default 2000."),
    llm_steps: Optional[int] = typer.Option(None, help="Stage-2 (LLM + depth transformer) steps; default 2000."),
    batch_size: int = typer.Option(32, min=1),
    tower_lr: float = typer.Option(5e-4),
    lr: float = typer.Option(5e-4, help="Stage-2 learning rate."),
    warmup_steps: int = typer.Option(100, min=0),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    preset: str = typer.Option("shapes", help="Model size: shapes (the embedded default) or tiny."),
    contrastive: bool = typer.Option(True, help="--no-contrastive trains the tower without text alignment (ablation)."),
    contrastive_weight: float = typer.Option(0.1, help="Weight of the text-alignment loss (reconstruction: 1)."),
    tower_from: Optional[Path] = typer.Option(None, help="Reuse a finished tower.safetensors (skip stage 1)."),
    init_from: Optional[str] = typer.Option(
        None, help="Start from a finished VILA-U folder or zoo name (all weights; stage 2 from step 0)."),
    add_grid_position: bool = typer.Option(
        False, help="With --init-from: add grid-cell embeddings to a model saved without them."),
    align_steps: int = typer.Option(
        0, min=0, help="Stage 1b: steps of the alignment head alone on the frozen tower (codes unchanged)."),
    align_lr: float = typer.Option(1e-3, help="Stage-1b learning rate."),
    align_batch_size: int = typer.Option(256, min=2, help="Stage-1b contrastive batch."),
    align_images: int = typer.Option(20000, min=2, help="Stage-1b images whose frozen features are re-sampled."),
    align_hard_negatives: int = typer.Option(
        0, min=0, help="Stage-1b hard-negative captions per image (one edit away: colour, shape, count, relation)."),
    align_image_head: Optional[str] = typer.Option(
        None, help="Give the alignment head a fresh image side: mlp or attention (cells attend to each other)."),
    align_train_text: bool = typer.Option(
        False, help="Stage 1b trains the tower's text encoder with the head (the image side and codes stay)."),
    ema_decay: float = typer.Option(0.0, help="EMA of the weights (0 = off); the exported model uses it."),
    save_every: int = typer.Option(500, min=1),
    log_every: int = typer.Option(20, min=1),
    num_workers: int = typer.Option(0, min=0, help="Data loader worker processes."),
    max_minutes_tower: Optional[float] = typer.Option(None, help="Stop stage 1 after this many minutes."),
    max_minutes_llm: Optional[float] = typer.Option(None, help="Stop stage 2 after this many minutes."),
    video_fraction: float = typer.Option(0.05, help="Fraction of stage-2 batches made of moving-shape clips."),
    relation_fraction: Optional[float] = typer.Option(
        None, help="Share of relation questions among those asked about scenes that have them (default: uniform)."),
    generation_fraction: float = typer.Option(0.4, help="Share of stage-2 samples that are [text, image] (loss on codes)."),
    qa_fraction: float = typer.Option(0.75, help="Share of [image, text] samples that are a question (else the caption)."),
) -> None:
    """Train VILA-U on ShapeWorld (resumes from the latest checkpoint in --out; torchrun for DDP)."""
    from genfoundry import hub
    from genfoundry.vilau.data import MixConfig
    from genfoundry.vilau.train import TrainConfig, train

    try:
        cfg = TrainConfig(
            out=str(out), preset=preset,
            tower_steps=tower_steps if tower_steps is not None else (steps if steps is not None else 2000),
            llm_steps=llm_steps if llm_steps is not None else (steps if steps is not None else 2000),
            batch_size=batch_size, tower_lr=tower_lr, llm_lr=lr, warmup_steps=warmup_steps, seed=seed,
            device=device, contrastive=contrastive, contrastive_weight=contrastive_weight, ema_decay=ema_decay,
            save_every=save_every,
            log_every=log_every, num_workers=num_workers, tower_from=str(tower_from) if tower_from else None,
            init_from=init_from, add_grid_position=add_grid_position, align_steps=align_steps, align_lr=align_lr,
            align_batch_size=align_batch_size, align_images=align_images,
            align_hard_negatives=align_hard_negatives, align_image_head=align_image_head,
            align_train_text=align_train_text,
            max_seconds_tower=max_minutes_tower * 60 if max_minutes_tower else None,
            max_seconds_llm=max_minutes_llm * 60 if max_minutes_llm else None,
            mix=MixConfig(video_fraction=video_fraction, relation_fraction=relation_fraction,
                          generation_fraction=generation_fraction, qa_fraction=qa_fraction),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        folder = train(cfg)
    except hub.CheckpointError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"model written to {folder}")


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_command)
    app.command("imagine")(imagine_command)
    from genfoundry.cli import command_group

    command_group(app, "eval", "Evaluate trained models on held-out ShapeWorld data.").command("vilau")(
        eval_vilau_command)
    command_group(app, "train", "Train models on ShapeWorld.").command("vilau")(train_vilau_command)
