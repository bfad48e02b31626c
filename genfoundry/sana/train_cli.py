"""CLI: `genfoundry train sana` (train all SANA parts on ShapeWorld) and `genfoundry eval sana`.

`register(app)` adds the command `sana` to the `train` and `eval` groups, creating a group when no
other module (e.g. VILA-U's `train vilau`) has created it yet, so both systems share the groups.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

TRAIN_HELP = "Train the models on ShapeWorld (single process, or DDP under torchrun)."
EVAL_HELP = "Evaluate trained models on held-out ShapeWorld data."


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects KEY=VALUE (e.g. dit.steps=100), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def _device_for(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"--device {device}: CUDA is not available here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise typer.BadParameter(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def train_sana_command(
    out: Path = typer.Option(..., "--out", "-o", help="Pipeline folder to write (diffusers layout + model card)."),
    preset: str = typer.Option("cpu", help="Recipe: tiny (seconds), cpu (minutes on CPU), gpu (~10 min on one GPU, estimated)."),
    work_dir: Optional[Path] = typer.Option(None, help="Checkpoints and logs (default: <out>.work)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --work-dir from its latest checkpoints."),
    seed: Optional[int] = typer.Option(None, help="Seed of the run (default: the preset's)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (under torchrun: the backend follows it)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set dit.steps=100 (repeatable)."),
) -> None:
    """Train tokenizer, text encoder, DC-AE and the linear DiT on ShapeWorld; write a SanaPipeline folder."""
    from genfoundry import hub
    from genfoundry.sana import train as sana_train
    from genfoundry.training import DistInfo, cleanup_distributed, setup_distributed

    overrides = _parse_overrides(set_)
    if seed is not None:
        overrides["seed"] = seed
    try:
        cfg = sana_train.preset(preset, **overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    target = _device_for(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist = setup_distributed("nccl" if target.type == "cuda" else "gloo")
    else:
        dist = DistInfo(rank=0, world_size=1, local_rank=0, device=target, is_main=True)
    command = "genfoundry " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log = typer.echo if dist.is_main else (lambda _msg: None)
    try:
        report = sana_train.train_sana(cfg, out, work_dir, resume=resume, dist=dist, command=command, log=log)
    except (hub.CheckpointError, FileExistsError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        cleanup_distributed()
    if report is not None and report.metrics:
        typer.echo(report.metrics.get("table", ""))


def eval_sana_command(
    model: str = typer.Option("sana-shapes", help="Pipeline folder or zoo name."),
    prompts: int = typer.Option(300, help="Number of held-out prompts (balanced over the categories)."),
    seed: int = typer.Option(0, help="Seed of the prompt sample, the noise and the held-out renders."),
    steps: int = typer.Option(20, help="Sampling steps."),
    guidance_scale: Optional[float] = typer.Option(
        None, help="Classifier-free guidance scale (default: the model's own, from genfoundry_sana.json)."),
    sampler: str = typer.Option("flow-dpm-solver", help="flow-dpm-solver or flow-euler."),
    layout_guidance: Optional[float] = typer.Option(
        None, help="Layout guidance for captions that name a relation (default: the model's own; 0 turns it off)."),
    psnr_images: int = typer.Option(200, help="Held-out renders for the DC-AE PSNR (0 skips)."),
    batch_size: int = typer.Option(50, help="Prompts generated together."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
) -> None:
    """Generate images for held-out prompts, score them GenEval-style, and measure DC-AE PSNR."""
    from genfoundry import hub
    from genfoundry.sana import evaluate as sana_eval

    if prompts < 1:
        raise typer.BadParameter(f"--prompts must be >= 1, got {prompts}")
    if sampler not in ("flow-dpm-solver", "flow-euler"):
        raise typer.BadParameter(f"--sampler must be flow-dpm-solver or flow-euler, got {sampler!r}")
    if layout_guidance is not None and layout_guidance < 0:
        raise typer.BadParameter(f"--layout-guidance must be >= 0 (0 turns it off), got {layout_guidance}")
    target = _device_for(device)
    try:
        pipe = _load_pipeline(model, target)
    except hub.CheckpointError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if guidance_scale is None:
        guidance_scale = pipe.config.guidance_scale
    report = sana_eval.evaluate_geneval(pipe, prompts=prompts, seed=seed, steps=steps, guidance_scale=guidance_scale,
                                        sampler=sampler, batch_size=batch_size, progress=sys.stderr.isatty(),
                                        layout_guidance=layout_guidance)
    layout_guidance = pipe.effective_layout_guidance(layout_guidance, guidance_scale)
    psnr = sana_eval.dcae_psnr(pipe.vae, psnr_images, seed, size=sana_eval._pipeline_size(pipe)) if psnr_images else None
    typer.echo(f"model {model}: {prompts} held-out prompts, {sampler}, {steps} steps, guidance {guidance_scale}, "
               f"layout guidance {layout_guidance}")
    typer.echo(sana_eval.format_table(report, psnr))
    if json_out is not None:
        hub.write_json_atomic(json_out, {**report.to_dict(), "psnr_db": psnr, "model": model, "seed": seed,
                                         "steps": steps, "guidance_scale": guidance_scale, "sampler": sampler,
                                         "layout_guidance": layout_guidance})


def _load_pipeline(model: str, device):
    from genfoundry.sana.pipeline import SanaPipeline

    # from_pretrained's defaults: bf16 on CUDA; fp32 on CPU, where half-precision kernels are slow or missing.
    return SanaPipeline.from_pretrained(model, device=device)


def register(app: typer.Typer) -> None:
    """Add `train sana` and `eval sana` (sharing the `train` / `eval` groups with other systems)."""
    from genfoundry.cli import command_group

    command_group(app, "train", TRAIN_HELP).command("sana")(train_sana_command)
    command_group(app, "eval", EVAL_HELP).command("sana")(eval_sana_command)


def _standalone_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """genfoundry train / eval (SANA only)."""

    register(app)
    return app


if __name__ == "__main__":  # `python -m genfoundry.sana.train_cli train sana ...` (e.g. under torchrun)
    _standalone_app()()
