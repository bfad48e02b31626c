"""`genfoundry tour`: every stage on tiny settings, report.json / report.html, the quantized-file cache,
--skip, and a failing stage that is reported while the others run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from conftest import QUICK_TOUR_ARGS
from genfoundry.cli import app
from genfoundry.report import build_html

runner = CliRunner()


def test_tour_runs_every_stage_and_writes_the_report(quick_tour):
    out, result = quick_tour
    assert result.exit_code == 0, result.output
    for i, name in enumerate(("shapeworld", "sana", "svdquant", "vilau", "lego"), 1):
        assert f"[{i}/5] {name}:" in result.output
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    assert {s["status"] for s in stages.values()} == {"ok"}, {n: s.get("error") for n, s in stages.items()}
    assert stages["shapeworld"]["score"] == 1.0  # the detector reads every render right
    assert len(stages["sana"]["images"]) == 5 and set(stages["sana"]["per_category"]) == {
        "single_object", "two_objects", "counting", "colors", "position"}
    methods = {m["method"]: m for m in stages["svdquant"]["methods"]}
    assert set(methods) == {"16-bit", "svdquant", "rtn"} and not stages["svdquant"]["from_cache"]
    assert methods["svdquant"]["bytes"] < methods["16-bit"]["bytes"] and methods["svdquant"]["psnr_db"] > 0
    assert stages["svdquant"]["config"]["method"] == "svdquant"
    vilau = stages["vilau"]
    assert vilau["vqa_renders"] >= 0.8  # the embedded VILA-U answers questions about held-out renders
    assert len(vilau["about_sana"]) == 5 and len(vilau["images"]) == 5
    lego = stages["lego"]
    assert lego["spec"].startswith("svdq:16x64x64x") and lego["bit_exact"] is True and lego["cycles"] > 0
    assert lego["integer_reconstruction_rel_error"] < 1e-3 and lego["speedup"] > 0
    assert "module lego_top" in (out / "lego" / "lego_top.v").read_text()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 * 5 + 3  # every image inline, and three plots
    assert "src=\"sana/" not in html and "report.json" in html


def test_rerun_reuses_the_quantized_file_and_reports_a_failing_stage(quick_tour, tiny_sana_pipeline, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(quick_tour[0], out)  # the shared tour's own report stays as it is for the other tests
    result = runner.invoke(app, ["tour", "-o", str(out), "--sana-model", str(tiny_sana_pipeline), *QUICK_TOUR_ARGS,
                                 "--skip", "shapeworld", "--skip", "vilau", "--baselines", "",
                                 "--lego-layer", "transformer_blocks.0.nope"])
    assert result.exit_code == 1
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    assert stages["shapeworld"]["status"] == stages["vilau"]["status"] == "skipped"
    assert stages["svdquant"]["status"] == "ok" and stages["svdquant"]["from_cache"]
    assert stages["lego"]["status"] == "failed" and "transformer_blocks.0.nope" in stages["lego"]["error"]
    assert "error: stage lego failed" in result.output
    html = (out / "report.html").read_text()
    assert "lego failed:" in html and "status-skipped" in html


def test_unknown_stage_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["tour", "-o", str(tmp_path / "x"), "--skip", "everything"])
    assert result.exit_code == 2 and "unknown stage" in result.output


def test_report_html_escapes_text():
    report = {"device": "cpu", "seconds": 1.0, "cpu_seconds": 1.0, "environment": {},
              "stages": {"sana": {"status": "failed", "error": "<script>alert(1)</script>"}}}
    html = build_html(report, Path("."))
    assert "<script>alert" not in html and "&lt;script&gt;" in html
