import json

from typer.testing import CliRunner

from genfoundry import __version__
from genfoundry.cli import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "shapes" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_shapes_render_eval_sample(tmp_path):
    out = tmp_path / "x.png"
    caption = "a red circle to the left of a blue square"
    result = runner.invoke(app, ["shapes", "render", caption, "-o", str(out), "--size", "64", "--seed", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["shapes", "eval", str(out), caption])
    assert result.exit_code == 0
    verdict = json.loads(result.output)
    assert verdict["correct"] and {c["type"] for c in verdict["constraints"]} >= {"count", "relation"}
    result = runner.invoke(app, ["shapes", "eval", str(out), "a red circle to the right of a blue square"])
    assert json.loads(result.output)["correct"] is False
    result = runner.invoke(app, ["shapes", "sample", "3", "-o", str(tmp_path / "s")])
    assert result.exit_code == 0 and (tmp_path / "s" / "qa.jsonl").exists()


def test_shapes_bad_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["shapes", "render", "a pink circle", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 2 and "unknown colour 'pink'" in result.output
    result = runner.invoke(app, ["shapes", "render", "a red circle", "--size", "50", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 2 and "multiple of 32" in result.output
    (tmp_path / "not.png").write_text("hello")
    result = runner.invoke(app, ["shapes", "eval", str(tmp_path / "not.png"), "a red circle"])
    assert result.exit_code == 2 and "not a readable image" in result.output


def test_tour_main_job_writes_results(tmp_path):
    result = runner.invoke(app, ["tour", "-o", str(tmp_path / "out"), "--count", "5"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["renders"]["overall"] == 1.0
    assert (tmp_path / "out" / "shapeworld_grid.png").exists()


def test_tour_draws_with_a_sana_pipeline(tmp_path, tiny_sana_pipeline):
    result = runner.invoke(app, ["tour", "-o", str(tmp_path / "out"), "--count", "5",
                                 "--sana-model", str(tiny_sana_pipeline)])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    sana = scores["sana"]
    assert sana["count"] == 5 and 0.0 <= sana["overall"] <= 1.0
    assert set(sana["per_category"]) == {"single_object", "two_objects", "counting", "colors", "position"}
    assert len(list((tmp_path / "out" / "sana").glob("*.png"))) == 5
    assert (tmp_path / "out" / "sana_grid.png").exists()
