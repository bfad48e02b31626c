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
