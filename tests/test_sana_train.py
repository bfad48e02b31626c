"""SANA training on ShapeWorld: tiny end-to-end runs, exact resume after a kill, clear resume errors."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from genfoundry import hub
from genfoundry.sana import train as sana_train
from genfoundry.sana.train_cli import register
from genfoundry.training import latest_checkpoint

TINY = {"eval_prompts": 0, "dit.steps": 4, "dcae.steps": 4, "text.steps": 4, "checkpoint_every": 2}


def _state(folder) -> dict[str, torch.Tensor]:
    out = {}
    for part in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        tensors, _ = hub.load_file(folder / part)
        out.update({f"{part}:{k}": v for k, v in tensors.items()})
    return out


def _quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("straight")
    report = sana_train.train_sana(sana_train.preset("tiny", **TINY), root / "pipe", log=_quiet)
    return root / "pipe", report


def test_each_part_trains_and_loss_goes_down(straight_run):
    out, report = straight_run
    for stage in ("text_encoder", "dcae", "transformer"):
        summary = report.stages[stage]
        assert summary["steps"] == 4
        assert summary["loss_last"] < summary["loss_first"], (stage, summary)
    for name in ("model_index.json", "genfoundry_sana.json", "transformer/config.json", "vae/config.json",
                 "text_encoder/config.json", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json",
                 "README.md"):
        assert (out / name).is_file(), name
    # stored in fp16, loadable by the pipeline, and the tokenizer/text encoder are the trained ones
    assert all(v.dtype == torch.float16 for k, v in _state(out).items() if v.is_floating_point())
    config = json.loads((out / "genfoundry_sana.json").read_text())
    assert config["complex_human_instruction"] is None and config["max_length"] == 16
    card = (out / "README.md").read_text()
    assert "## Data" in card and "## Command" in card and "Wall time" in card


def test_killed_run_resumes_on_the_same_trajectory(straight_run, tmp_path):
    straight, _ = straight_run
    cfg = sana_train.preset("tiny", **TINY)
    work = tmp_path / "work"
    with pytest.raises(sana_train.TrainingStopped):  # "killed" mid-DC-AE, after its step-2 checkpoint
        sana_train.train_sana(cfg, tmp_path / "pipe", work, stop_after={"dcae": 3}, log=_quiet)
    assert latest_checkpoint(work / "checkpoints" / "dcae").name == "checkpoint-00000002.pt"
    assert latest_checkpoint(work / "checkpoints" / "transformer") is None
    report = sana_train.train_sana(cfg, tmp_path / "pipe", work, resume=True, log=_quiet)
    assert report.stages["text_encoder"]["resumed_from"] == 4  # finished stage: loaded, not retrained
    assert report.stages["dcae"]["resumed_from"] == 2
    expected, found = _state(straight), _state(tmp_path / "pipe")
    assert expected.keys() == found.keys()
    for key in expected:
        assert torch.equal(expected[key], found[key]), key


def test_resume_errors_are_clear(tmp_path):
    cfg = sana_train.preset("tiny", **TINY)
    with pytest.raises(hub.CheckpointError, match="no checkpoint found"):
        sana_train.train_sana(cfg, tmp_path / "pipe", tmp_path / "empty", resume=True, log=_quiet)
    work = tmp_path / "work"
    with pytest.raises(sana_train.TrainingStopped):
        sana_train.train_sana(cfg, tmp_path / "pipe", work, stop_after={"text_encoder": 3}, log=_quiet)
    with pytest.raises(FileExistsError, match="--resume"):
        sana_train.train_sana(cfg, tmp_path / "pipe", work, log=_quiet)
    latest = latest_checkpoint(work / "checkpoints" / "text_encoder")
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(hub.CheckpointError, match="corrupt"):
        sana_train.train_sana(cfg, tmp_path / "pipe", work, resume=True, log=_quiet)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_train_eval_and_resume_error(tmp_path):
    runner = CliRunner()
    app = _app()
    out = tmp_path / "pipe"
    result = runner.invoke(app, ["train", "sana", "--preset", "tiny", "--device", "cpu", "--out", str(out),
                                 "--set", "dit.steps=2", "--set", "dcae.steps=2", "--set", "text.steps=2",
                                 "--set", "eval_prompts=0"])
    assert result.exit_code == 0, result.output
    assert "genfoundry train sana" in (out / "README.md").read_text() or "--preset" in (out / "README.md").read_text()
    result = runner.invoke(app, ["eval", "sana", "--model", str(out), "--prompts", "5", "--steps", "2",
                                 "--psnr-images", "2", "--device", "cpu", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "PSNR" in result.output
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["prompts"] == 5 and set(saved["per_category"]) == {"single_object", "two_objects", "counting",
                                                                      "colors", "position"}
    assert saved["layout_guidance"] == 0.0  # a trained folder starts without layout guidance
    result = runner.invoke(app, ["eval", "sana", "--model", str(out), "--layout-guidance", "-1"])
    assert result.exit_code != 0 and "--layout-guidance must be >= 0" in result.output
    result = runner.invoke(app, ["train", "sana", "--preset", "tiny", "--out", str(tmp_path / "x"), "--resume"])
    assert result.exit_code == 1 and "no checkpoint found" in result.output
    result = runner.invoke(app, ["train", "sana", "--preset", "tiny", "--out", str(tmp_path / "y"),
                                 "--set", "dit.nonsense=1"])
    assert result.exit_code != 0 and "nonsense" in result.output


def test_cli_groups_are_shared_with_other_systems():
    app = typer.Typer()
    other = typer.Typer()
    app.add_typer(other, name="train")
    register(app)
    names = [g.name for g in app.registered_groups]
    assert names.count("train") == 1 and names.count("eval") == 1
    assert [c.name for c in other.registered_commands] == ["sana"]


def test_time_budget_stops_early_with_a_checkpoint_and_a_decayed_schedule(tmp_path):
    """`max_seconds`: the cosine decay follows the clock, the stage ends when the time is up and leaves
    a checkpoint at the step it reached (a later resume continues towards `steps`)."""
    import time

    from genfoundry.training import DistInfo

    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs: list[float] = []

    def loss_fn(step, gen):
        time.sleep(0.02)
        lrs.append(optimizer.param_groups[0]["lr"])
        return model(torch.randn(8, 4, generator=gen)).pow(2).mean()

    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), is_main=True)
    result = sana_train.run_stage("transformer", model=model, optimizer=optimizer, loss_fn=loss_fn, steps=10_000,
                                  base_lr=1.0, warmup=2, dist=dist, work_dir=tmp_path, seed=0,
                                  checkpoint_every=10_000, resume=False, max_seconds=0.5, log=_quiet)
    assert 5 < result.steps < 10_000 and len(lrs) == result.steps
    assert lrs[-1] < 0.3 * max(lrs)  # the time-driven decay went most of the way down (floor: 10%)
    assert latest_checkpoint(tmp_path / "checkpoints" / "transformer").name.endswith(f"{result.steps:08d}.pt")
    assert sana_train.learning_rate(50, 10_000, 1.0, 2, time_progress=1.0) == pytest.approx(0.1)


def test_continue_from_a_trained_pipeline(straight_run, tmp_path):
    """text/dcae/dit.init_from: the text encoder is reused unchanged, the DiT starts from the folder's."""
    straight, _ = straight_run
    src = str(straight)
    cfg = sana_train.preset("tiny", **{**TINY, "dit.steps": 2, "dcae.steps": 0, "text.init_from": src,
                                       "dcae.init_from": src, "dit.init_from": src, "dit.width": 96,
                                       "dit.category_weights": {"position": 2.0}})
    report = sana_train.train_sana(cfg, tmp_path / "more", log=_quiet)
    before, after = _state(straight), _state(tmp_path / "more")
    for key, value in before.items():
        if key.startswith(("text_encoder", "vae")):
            assert torch.equal(value, after[key]), key
    dit = [k for k in before if k.startswith("transformer")]
    assert all(before[k].shape == after[k].shape for k in dit)  # the folder's architecture, not dit.width
    assert any(not torch.equal(before[k], after[k]) for k in dit)
    assert report.stages["text_encoder"]["steps"] == 0 and report.stages["transformer"]["steps"] == 2
    card = (tmp_path / "more" / "README.md").read_text()
    assert "continued the DiT of" in card and 'category weights {"position": 2.0}' in card
    saved = json.loads((tmp_path / "more.work" / "config.json").read_text())
    assert saved["dit"]["category_weights"] == {"position": 2.0}
    with pytest.raises(ValueError, match="needs text.init_from"):
        sana_train.train_sana(sana_train.preset("tiny", **{**TINY, "dit.init_from": src}), tmp_path / "x",
                              log=_quiet)
    with pytest.raises(hub.CheckpointError, match="text_encoder/ and tokenizer/"):
        sana_train.train_sana(sana_train.preset("tiny", **{**TINY, "text.init_from": str(tmp_path)}),
                              tmp_path / "y", log=_quiet)


def test_category_weights_shift_the_scenes_a_batch_draws(tmp_path):
    """dit.category_weights: scenes are drawn in proportion to their category's weight; no table keeps the
    uniform draw; bad tables are clear errors before any work."""
    categories = ["position"] * 100 + ["colors"] * 300
    gen = torch.Generator().manual_seed(0)
    plain = sana_train.draw_scenes(400, 8, gen)
    assert torch.equal(plain, torch.randint(400, (8,), generator=torch.Generator().manual_seed(0)))
    assert sana_train.scene_weights(categories, None) is None

    weights = sana_train.scene_weights(categories, {"position": 3.0})
    drawn = sana_train.draw_scenes(400, 20_000, torch.Generator().manual_seed(1), weights)
    share = (drawn < 100).float().mean().item()  # position: 100 x 3 of 100 x 3 + 300 x 1 -> one half
    assert share == pytest.approx(0.5, abs=0.02)
    only = sana_train.scene_weights(categories, {"colors": 0})
    assert (sana_train.draw_scenes(400, 500, torch.Generator().manual_seed(2), only) < 100).all()

    for bad, match in (({"positions": 2.0}, "unknown categories"), ({"position": -1}, ">= 0"),
                       (["position"], "must map"),
                       ({c: 0 for c in ("single_object", "two_objects", "counting", "colors", "position")},
                        "every category weight 0")):
        with pytest.raises(ValueError, match=match):
            sana_train.scene_weights(categories, bad)
    with pytest.raises(ValueError, match="unknown categories"):
        sana_train.train_sana(sana_train.preset("tiny", **{**TINY, "dit.category_weights": {"left": 1}}),
                              tmp_path / "bad", log=_quiet)
    assert not (tmp_path / "bad").exists()
