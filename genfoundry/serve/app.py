"""The gradio page: four tabs over one `Studio`. Bad input shows as a message in the page (gr.Error);
an unexpected failure shows a one-line message there too and its traceback goes to the server's log,
never to the page."""

from __future__ import annotations

import functools
import sys
import tempfile
import traceback
from pathlib import Path

from genfoundry.errors import GenfoundryError, one_line
from genfoundry.serve.studio import DATAFLOWS, METHODS, WEIGHT_FORMATS, Studio

EXAMPLE_PROMPT = "a red circle to the left of a blue square"
# the models draw 64x64 pictures: show them large, pixels kept sharp
CSS = ".picture img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
IMAGE = {"type": "pil", "format": "png", "height": 300, "elem_classes": ["picture"]}
INTRO = ("SANA draws, SVDQuant shrinks it to 4 bits, VILA-U reads and draws, LEGO builds the hardware: "
         "the embedded ShapeWorld models, on this machine.")


def _in_page(handler):
    """Run a tab's handler; user errors become gr.Error with their message, anything else a one-line
    gr.Error while the traceback goes to stderr."""
    import gradio as gr

    @functools.wraps(handler)
    def run(*args):
        try:
            return handler(*args)
        except (GenfoundryError, ValueError, TypeError) as err:
            raise gr.Error(one_line(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the page gets a message, the log the traceback
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"internal error: {one_line(err)} (details in the server log)", print_exception=False) from None

    return run


def build_app(studio: Studio):
    """The gradio Blocks of the web app."""
    import gradio as gr

    rtl_root = Path(tempfile.mkdtemp(prefix="genfoundry-serve-rtl-"))

    def rtl(workload, array, dataflows, simulate):
        folder = Path(tempfile.mkdtemp(dir=rtl_root))
        return studio.rtl(workload, array, dataflows, bool(simulate), folder)

    with gr.Blocks(title="genfoundry", analytics_enabled=False) as app:
        gr.Markdown(f"# genfoundry\n{INTRO}")
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                prompt = gr.Textbox(EXAMPLE_PROMPT, label="prompt", elem_id="gen-prompt", scale=3)
                with gr.Column(scale=2):
                    steps = gr.Number(20, label="steps", precision=0, elem_id="gen-steps")
                    cfg = gr.Number(6.0, label="guidance scale", elem_id="gen-cfg")
                    seed = gr.Number(0, label="seed", precision=0, elem_id="gen-seed")
                    layout = gr.Number(12.0, label="layout guidance (0: off)", elem_id="gen-layout")
            go = gr.Button("Generate", variant="primary", elem_id="gen-run")
            with gr.Row():
                image_16 = gr.Image(label="SANA 16-bit", **IMAGE, elem_id="gen-16bit")
                image_4 = gr.Image(label="SANA W4A4 (SVDQuant)", **IMAGE, elem_id="gen-w4a4")
            gen_text = gr.Textbox(label="result", interactive=False, elem_id="gen-result")
            go.click(_in_page(studio.generate), [prompt, steps, cfg, seed, layout], [image_16, image_4, gen_text])

        with gr.Tab("Ask & Imagine", id="vilau"):
            with gr.Row():
                with gr.Column():
                    ask_image = gr.Image(label="image", sources=["upload", "clipboard"], elem_id="ask-image", **IMAGE)
                    question = gr.Textbox("what color is the circle?", label="question", elem_id="ask-question")
                    ask_go = gr.Button("Ask", variant="primary", elem_id="ask-run")
                    answer = gr.Textbox(label="VILA-U's answer", interactive=False, elem_id="ask-answer")
                with gr.Column():
                    caption = gr.Textbox(EXAMPLE_PROMPT, label="caption", elem_id="imagine-caption")
                    with gr.Row():
                        imagine_seed = gr.Number(0, label="seed", precision=0, elem_id="imagine-seed")
                        candidates = gr.Number(4, label="candidates (best kept)", precision=0, elem_id="imagine-candidates")
                    imagine_go = gr.Button("Imagine", variant="primary", elem_id="imagine-run")
                    drawn = gr.Image(label="VILA-U's drawing", **IMAGE, elem_id="imagine-image")
                    drawn_text = gr.Textbox(label="result", interactive=False, elem_id="imagine-result")
            ask_go.click(_in_page(studio.ask), [ask_image, question], [answer])
            imagine_go.click(_in_page(studio.imagine), [caption, imagine_seed, candidates], [drawn, drawn_text])

        with gr.Tab("Quantize", id="quantize"):
            with gr.Row():
                method = gr.Dropdown(list(METHODS), value="svdquant", label="method", elem_id="q-method")
                weight = gr.Dropdown(list(WEIGHT_FORMATS), value="auto", label="weight format", elem_id="q-weight")
                rank = gr.Number(32, label="rank (svdquant)", precision=0, elem_id="q-rank")
                q_seed = gr.Number(0, label="seed", precision=0, elem_id="q-seed")
            q_prompt = gr.Textbox(EXAMPLE_PROMPT, label="prompt", elem_id="q-prompt")
            q_go = gr.Button("Quantize and draw", variant="primary", elem_id="q-run")
            with gr.Row():
                q_16 = gr.Image(label="16-bit", **IMAGE, elem_id="q-16bit")
                q_4 = gr.Image(label="quantized", **IMAGE, elem_id="q-quantized")
            q_text = gr.Textbox(label="result", interactive=False, elem_id="q-result")
            q_go.click(_in_page(studio.quantize), [method, weight, rank, q_prompt, q_seed], [q_16, q_4, q_text])

        with gr.Tab("RTL", id="rtl"):
            with gr.Row():
                workload = gr.Textbox("svdq:16x16x64x8", label="workload (gemm:MxNxK, conv2d:CxHxWxKxRxS, svdq:MxNxKxR ...)",
                                      elem_id="rtl-workload", scale=3)
                array = gr.Textbox("4x4", label="array", elem_id="rtl-array")
            dataflows = gr.CheckboxGroup(list(DATAFLOWS), value=["os", "ws"], label="dataflows", elem_id="rtl-dataflows")
            simulate = gr.Checkbox(True, label="simulate on random inputs (Verilator / Icarus)", elem_id="rtl-simulate")
            rtl_go = gr.Button("Generate Verilog", variant="primary", elem_id="rtl-run")
            rtl_report = gr.Markdown(elem_id="rtl-report")
            verilog = gr.File(label="lego_top.v", elem_id="rtl-verilog")
            rtl_go.click(_in_page(rtl), [workload, array, dataflows, simulate], [rtl_report, verilog])
    app.rtl_root = rtl_root
    return app


def theme():
    """gradio's default theme with system fonts: the default one asks a font service for its fonts."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
