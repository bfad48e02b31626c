"""`genfoundry serve [--host 127.0.0.1] [--port 7860]`: start the web app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def serve_command(
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 exposes the page to the network)"),
    port: int = typer.Option(7860, min=1, max=65535, help="TCP port"),
    sana_model: str = typer.Option("sana-shapes", "--sana-model", help="SANA pipeline: zoo name or folder"),
    vilau_model: str = typer.Option("vila-u-shapes", "--vilau-model", help="VILA-U: zoo name or folder"),
    quantized: Optional[Path] = typer.Option(
        None, "--quantized", help="SANA W4A4 file for the Generate tab (from `genfoundry quantize`); default: "
                                  "made on first use and cached"),
    calib_prompts: int = typer.Option(8, "--calib-prompts", min=1, help="calibration captions of the models the page quantizes"),
    calib_steps: int = typer.Option(10, "--calib-steps", min=1, help="sampling steps of each calibration caption"),
    device: str = typer.Option("auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N"),
) -> None:
    """Start the web app: Generate, Ask & Imagine, Quantize and RTL tabs on the embedded models."""
    from genfoundry import hub
    from genfoundry.serve.studio import Studio, StudioConfig

    if quantized is not None and not quantized.is_file():
        raise hub.CheckpointError(f"--quantized {quantized}: file not found")
    for name in (sana_model, vilau_model):
        hub.resolve(name)  # a missing model is an error now, not at the first click
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page never calls home
    from genfoundry.serve.app import CSS, build_app, theme

    studio = Studio(StudioConfig(sana_model=sana_model, vilau_model=vilau_model, device=device,
                                 quantized=str(quantized) if quantized else None, calib_prompts=calib_prompts,
                                 calib_steps=calib_steps))
    app = build_app(studio)
    typer.echo(f"genfoundry serve: http://{host}:{port} (Ctrl-C stops it)")
    app.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, share=False, ssr_mode=False,
                                                  show_error=False, quiet=True, theme=theme(), css=CSS,
                                                  footer_links=[])


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
