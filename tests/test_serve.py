"""The web app's work without a browser: Studio's tabs on a tiny SANA pipeline and the embedded VILA-U,
bad input as the project's errors, and the gradio wrapper turning them into page messages."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from genfoundry.cli import app
from genfoundry.errors import InputError
from genfoundry.serve.studio import Studio, StudioConfig


@pytest.fixture(scope="module")
def studio(tiny_sana_pipeline, tmp_path_factory):
    return Studio(StudioConfig(sana_model=str(tiny_sana_pipeline), device="cpu", calib_prompts=1, calib_steps=2,
                               cache=str(tmp_path_factory.mktemp("serve-cache"))))


def test_quantize_tab_draws_both_models(studio):
    reference, quantized, text = studio.quantize("rtn", "auto", 0, "a red circle", 3)
    assert reference.size == quantized.size and "PSNR" in text and "rtn weight int4" in text
    assert studio._quantize("rtn", "auto", 0) is studio._quantize("rtn", "auto", 0)  # made once


def test_rtl_tab_writes_verilog(studio, tmp_path):
    report, verilog = studio.rtl("gemm:4x4x4", "2x2", ["os"], False, tmp_path)
    assert "RTL cycles" in report and "module lego_top" in open(verilog).read()


@pytest.mark.parametrize("call, message", [
    (lambda s: s.generate("  ", 2, 4.5, 0, 0), "prompt is empty"),
    (lambda s: s.generate("a red circle", 2.5, 4.5, 0, 0), "steps must be a whole number"),
    (lambda s: s.generate("a red circle", 0, 4.5, 0, 0), r"steps must be in \[1, 100\]"),
    (lambda s: s.ask(None, "what color is the circle?"), "no image"),
    (lambda s: s.imagine("a red circle", -1, 1), "seed must be in"),
    (lambda s: s.quantize("gptq", "auto", 8, "a red circle", 0), "method must be one of"),
    (lambda s: s.quantize("rtn", "int4", 8, "a red circle", 0), "no low-rank branch"),
    (lambda s: s.rtl("gemm:4x4x4", "2x2", [], False, None), "at least one dataflow"),
    (lambda s: s.rtl("gemm:4000x4000x4000", "2x2", ["os"], False, None), "the page builds up to"),
])
def test_bad_input_is_a_clear_error(studio, call, message):
    with pytest.raises(ValueError, match=message):
        call(studio)


def test_page_wrapper_turns_errors_into_messages():
    gr = pytest.importorskip("gradio")
    from genfoundry.serve.app import _in_page

    def user_mistake():
        raise InputError("the prompt is empty")

    def bug():
        raise KeyError("oops")

    with pytest.raises(gr.Error, match="the prompt is empty"):
        _in_page(user_mistake)()
    with pytest.raises(gr.Error, match="internal error"):
        _in_page(bug)()


def test_serve_refuses_a_missing_model():
    result = CliRunner().invoke(app, ["serve", "--sana-model", "/nonexistent/sana", "--port", "7999"])
    assert result.exit_code == 2 and "error:" in result.output
