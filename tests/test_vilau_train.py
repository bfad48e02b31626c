"""VILA-U training end to end (tiny, CPU): CLI train -> folder -> from_pretrained -> ask/imagine; resume; clips."""

from __future__ import annotations

import json
import random

import pytest
import torch
import typer
from typer.testing import CliRunner

from genfoundry import hub
from genfoundry.shapes import render
from genfoundry.vilau import VilaU, VilaUConfig
from genfoundry.vilau.cli import register
from genfoundry.vilau.data import MixConfig, batch_plan, sample_clip
from genfoundry.vilau.train import TrainConfig, lr_factor


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, app):
    out = tmp_path_factory.mktemp("vilau_run")
    result = CliRunner().invoke(app, ["train", "vilau", "--out", str(out), "--preset", "tiny", "--steps", "2",
                                      "--batch-size", "4", "--warmup-steps", "1", "--log-every", "1",
                                      "--save-every", "1", "--device", "cpu", "--video-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    return out


def test_training_writes_an_official_style_folder_that_loads(trained) -> None:
    folder = trained / "model"
    for part in ("config.json", "llm/config.json", "llm/model.safetensors", "llm/depth_transformer.safetensors",
                 "llm/tokenizer.json", "vision_tower/model.safetensors", "mm_projector/model.safetensors"):
        assert (folder / part).is_file(), part
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"tower", "llm"}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    model = VilaU.from_pretrained(folder)
    assert model.config.tower.image_size == 32
    image = render("a red circle", size=32, seed=0)
    assert isinstance(model.answer(image, "what color is the circle?", max_new_tokens=3), str)


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = VilaU(VilaUConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = VilaU.from_pretrained(tmp_path / "m")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    codes_a = model.tokenize_image(render("a blue square", size=32, seed=2))
    assert torch.equal(codes_a, loaded.tokenize_image(render("a blue square", size=32, seed=2)))


def test_half_precision_folder_loads_into_float32(tmp_path) -> None:
    torch.manual_seed(0)
    model = VilaU(VilaUConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    tensors, _ = hub.load_file(tmp_path / "m" / "llm" / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    loaded = VilaU.from_pretrained(tmp_path / "m")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, k
        if a.is_floating_point():
            assert torch.equal(b, a.half().float()), k  # exactly the fp16 rounding, nothing else
        else:
            assert torch.equal(a, b), k


def test_resume_continues_from_the_latest_checkpoint(trained, app) -> None:
    result = CliRunner().invoke(app, ["train", "vilau", "--out", str(trained), "--preset", "tiny", "--tower-steps", "2",
                                      "--llm-steps", "3", "--batch-size", "4", "--warmup-steps", "1",
                                      "--log-every", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "using the finished tower" in result.output
    assert "resumed from" in result.output and "at step 2" in result.output
    llm_steps = [json.loads(line)["step"] for line in (trained / "log.jsonl").read_text().splitlines()
                 if json.loads(line)["stage"] == "llm"]
    assert llm_steps == [1, 2, 3]


def test_init_from_a_finished_folder_continues_its_weights(trained, app, tmp_path) -> None:
    """--init-from: every weight of the folder, stage 1 skipped, stage 2 from step 0 (fresh optimizer)."""
    from genfoundry.vilau.card import _command

    source = VilaU.from_pretrained(trained / "model")
    out = tmp_path / "more"
    result = CliRunner().invoke(app, ["train", "vilau", "--out", str(out), "--init-from", str(trained / "model"),
                                      "--llm-steps", "1", "--batch-size", "4", "--warmup-steps", "1",
                                      "--log-every", "1", "--device", "cpu", "--relation-fraction", "1",
                                      "--generation-fraction", "0.3", "--qa-fraction", "0.8"])
    assert result.exit_code == 0, result.output
    assert "using the tower of" in result.output and "resumed" not in result.output
    config = json.loads((out / "train_config.json").read_text())
    assert (config["mix"]["relation_fraction"], config["mix"]["generation_fraction"], config["mix"]["qa_fraction"]) \
        == (1.0, 0.3, 0.8)
    assert f"--init-from {trained / 'model'}" in _command(config)
    assert "--relation-fraction 1 --generation-fraction 0.3 --qa-fraction 0.8" in _command(config)
    assert "video-fraction" not in _command(config)  # the default share is left out
    tuned = VilaU.from_pretrained(out / "model")
    for name, value in source.tower.state_dict().items():  # frozen in stage 2
        assert torch.equal(value, tuned.tower.state_dict()[name]), name
    before, after = source.llm.state_dict(), tuned.llm.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # one step from the folder's weights
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 0.05
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(out="x", init_from="a", tower_from="b")
    bad = CliRunner().invoke(app, ["train", "vilau", "--out", str(tmp_path / "bad"), "--init-from",
                                   str(tmp_path / "missing"), "--device", "cpu"])
    assert bad.exit_code == 1 and "missing" in bad.output and "Traceback" not in bad.output


def test_cli_ask_and_imagine(trained, app, tmp_path) -> None:
    runner = CliRunner()
    model = str(trained / "model")
    picture = tmp_path / "big.png"
    render("a red circle", size=64, seed=0).save(picture)
    result = runner.invoke(app, ["ask", str(picture), "what color is the circle?", "--model", model, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "resized to 32x32" in result.output
    out = tmp_path / "drawn.png"
    result = runner.invoke(app, ["imagine", "a red circle", "-o", str(out), "--seed", "1", "--model", model,
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out).size == (32, 32)
    # the command draws 8 and keeps the best by the model's own caption likelihood; the Python API's
    # default is the plain sample
    vila = VilaU.from_pretrained(trained / "model")
    assert Image.open(out).convert("RGB").tobytes() == vila.generate_image("a red circle", seed=1, candidates=8).tobytes()
    best = tmp_path / "best.png"
    result = runner.invoke(app, ["imagine", "a red circle", "-o", str(best), "--seed", "1", "--candidates", "3",
                                 "--rank-by", "alignment", "--model", model, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Image.open(best).convert("RGB").tobytes() == vila.generate_image(
        "a red circle", seed=1, candidates=3, rank_by="alignment").tobytes()
    result = runner.invoke(app, ["imagine", "a red circle", "-o", str(best), "--rank-by", "clip",
                                 "--model", model, "--device", "cpu"])
    assert result.exit_code != 0 and "rank_by must be one of caption+answers, caption, answers, alignment" in " ".join(
        result.output.replace("│", " ").split())
    result = runner.invoke(app, ["imagine", "a red circle", "-o", str(best), "--frames", "2", "--candidates", "2",
                                 "--model", model, "--device", "cpu"])
    assert result.exit_code != 0 and "images only" in " ".join(result.output.replace("│", " ").split())


def test_eval_writes_results_and_a_model_card(trained, app, tmp_path) -> None:
    import re
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "vilau", "--model", str(model), "--quick", "--cfgs", "1,3",
                                      "--out", str(out), "--device", "cpu", "--card", str(trained)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert set(results["generation"]) == {"1.0", "3.0"}
    retrieval = results["retrieval"]
    assert 0.0 <= retrieval["edits_top1"] <= 1.0 and retrieval["edits_per_caption"] > 3
    assert {"color", "shape"} <= set(retrieval["edits_top1_per_kind"])
    assert "against its one-edit variants" in out.with_suffix(".md").read_text()
    counts = results["vqa"]["per_type_questions"]
    assert set(counts) == set(results["vqa"]["per_type"]) and sum(counts.values()) == results["vqa"]["questions"]
    wrong = round((1 - results["vqa"]["accuracy"]) * results["vqa"]["questions"])
    assert len(results["vqa"]["mistakes"]) == wrong
    assert all(m["answer"] != m["expected"] and m["question"].endswith("?") for m in results["vqa"]["mistakes"])
    assert all(f"| VQA {k} ({n}) |" in out.with_suffix(".md").read_text() for k, n in counts.items())
    card = (model / "README.md").read_text()
    vqa = float(re.search(r"\| VQA accuracy \| \*\*([0-9.]+)\*\* \|", card).group(1))
    assert vqa == pytest.approx(results["vqa"]["accuracy"], abs=1e-3)
    assert f"--out {trained}" in card and "--tower-steps 2" in card and "| tower | 2 |" in card
    assert "| caption retrieval top-1 against its one-edit variants" in card
    bad = CliRunner().invoke(app, ["eval", "vilau", "--model", str(model), "--quick", "--out", str(out),
                                   "--card", str(tmp_path)])
    assert bad.exit_code != 0 and "not a training run folder" in " ".join(bad.output.replace("│", " ").split())


def test_eval_parts_and_generation_prompts(trained, app, tmp_path) -> None:
    out = tmp_path / "gen.json"
    result = CliRunner().invoke(app, ["eval", "vilau", "--model", str(trained / "model"), "--parts", "generation",
                                      "--gen-prompts", "10", "--cfgs", "3", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert set(results) == {"generation", "model"} and results["generation"]["3.0"]["prompts"] == 10
    assert set(results["generation"]["3.0"]["per_category"]) == {"single_object", "two_objects", "counting",
                                                                  "colors", "position"}
    assert "generation score cfg 3.0 (10 prompts)" in out.with_suffix(".md").read_text()
    assert "candidates" not in results["generation"]["3.0"]
    result = CliRunner().invoke(app, ["eval", "vilau", "--model", str(trained / "model"), "--parts", "generation",
                                      "--gen-prompts", "5", "--cfgs", "3", "--candidates", "2", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    generation = json.loads(out.read_text())["generation"]["3.0"]
    assert generation["candidates"] == 2 and generation["rank_by"] == "caption+answers"
    assert "generation score cfg 3.0 (5 prompts, best of 2 by caption+answers)" in out.with_suffix(".md").read_text()
    for args, message in ((["--gen-prompts", "12"], "multiple of 5"), (["--parts", "vqa,speed"], "unknown evaluation part"),
                          (["--card", str(trained)], "needs every measurement")):
        bad = CliRunner().invoke(app, ["eval", "vilau", "--model", str(trained / "model"), "--parts", "generation",
                                       "--out", str(out), "--device", "cpu", *args])
        assert bad.exit_code != 0 and message in " ".join(bad.output.replace("│", " ").split()), bad.output


@pytest.mark.parametrize("args, message", [
    (["imagine", "a red circle", "-o", "x.png", "--cfg", "-1"], "cfg must be >= 0"),
    (["ask", "IMAGE", "  "], "question is empty"),
    (["ask", "TEXTFILE", "what color is the circle?"], "not an image file"),
    (["ask", "IMAGE", "what color is the circle?", "--model", "/nonexistent/folder"], "cannot find checkpoint"),
    (["train", "vilau", "--out", "OUT", "--generation-fraction", "1.5", "--device", "cpu"],
     "generation_fraction must be in [0, 1]"),
])
def test_cli_bad_input(trained, app, tmp_path, args: list[str], message: str) -> None:
    image = tmp_path / "img.png"
    render("a red circle", size=32, seed=0).save(image)
    text = tmp_path / "text.png"
    text.write_text("not pixels")
    args = [str(image) if a == "IMAGE" else str(text) if a == "TEXTFILE" else str(tmp_path / "run") if a == "OUT"
            else a for a in args]
    if "--model" not in args and args[0] != "train":
        args += ["--model", str(trained / "model"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    # the error box wraps long lines (the temporary path's length varies): read it without its borders
    assert message in " ".join(result.output.replace("│", " ").split()), result.output


def test_from_pretrained_errors(tmp_path) -> None:
    with pytest.raises(hub.CheckpointError, match="config.json is missing"):
        VilaU.from_pretrained(tmp_path)
    hub.write_json_atomic(tmp_path / "config.json", {"model_type": "vila_u"})
    with pytest.raises(hub.CheckpointError, match="official VILA-U"):
        VilaU.from_pretrained(tmp_path)


def test_moving_clip_moves_in_its_direction() -> None:
    import numpy as np

    for seed in range(4):
        clip = sample_clip(random.Random(seed), frames=4, size=64)
        direction = clip.caption.split()[-1]
        centres = []
        for frame in clip.frames:
            ys, xs = np.nonzero(np.asarray(frame).sum(-1))
            centres.append((xs.mean(), ys.mean()))
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[direction]
        steps = [sign * (b[axis] - a[axis]) for a, b in zip(centres, centres[1:])]
        assert all(s > 0 for s in steps), (clip.caption, centres)
        assert (f"is the {clip.caption[2:].rsplit(' moving', 1)[0]} moving {direction}?", "yes") in clip.qa


def test_batch_plan_and_schedule() -> None:
    plan = batch_plan(10, MixConfig(generation_fraction=0.4))
    assert sum(plan) == 4
    assert 0 < sum(batch_plan(2, MixConfig(generation_fraction=0.1))) < 2  # both kinds in every batch
    assert lr_factor(0, 0.0, 10) == pytest.approx(0.1)
    assert lr_factor(20, 0.0, 10) == pytest.approx(1.0)
    assert lr_factor(20, 1.0, 10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="video_fraction"):
        MixConfig(video_fraction=1.5)
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(out="x", preset="huge")
    with pytest.raises(ValueError, match="contrastive_weight"):
        TrainConfig(out="x", contrastive_weight=0.0)


def test_relation_fraction_picks_relation_questions() -> None:
    from genfoundry.vilau.data import is_relation_question, pick_question

    qa = [("what color is the circle?", "red"), ("is there a red circle?", "yes"),
          ("is the red circle to the left of the blue square?", "yes"), ("is the red circle above the blue square?", "no")]
    rng = random.Random(0)
    share = lambda f: sum(is_relation_question(pick_question(qa, rng, f)[0]) for _ in range(2000)) / 2000
    assert share(1.0) == 1.0 and share(0.0) == 0.0
    assert abs(share(0.8) - 0.8) < 0.04 and abs(share(None) - 0.5) < 0.04
    assert not is_relation_question("is there a red circle?") and not is_relation_question("is the red circle moving up?")
    only = [("is the red circle below the blue square?", "no")]
    assert pick_question(only, rng, 0.0) == only[0]  # nothing else to ask
    with pytest.raises(ValueError, match="relation_fraction"):
        MixConfig(relation_fraction=1.5)


def _train_head_alone(app, trained, out, steps: int, *options: str) -> tuple[list[str], list[dict]]:
    """Stage 1b alone on the trained tiny folder via the CLI -> (its arguments, the logged align rows)."""
    args = ["train", "vilau", "--out", str(out), "--init-from", str(trained / "model"), "--llm-steps", "0",
            "--align-steps", str(steps), "--align-images", "64", "--align-batch-size", "16", "--align-lr", "3e-3",
            *options, "--warmup-steps", "1", "--log-every", "5", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return args, [r for r in log if r["stage"] == "align"]


def test_alignment_stage_trains_the_head_alone(trained, app, tmp_path) -> None:
    """--align-steps on a finished folder: the head's loss falls, every other weight and every code stays."""
    source = VilaU.from_pretrained(trained / "model")
    out = tmp_path / "aligned"
    args, align = _train_head_alone(app, trained, out, 40)
    assert [r["step"] for r in align] == list(range(5, 45, 5))
    assert align[-1]["loss"] < 0.7 * align[0]["loss"], align
    tuned = VilaU.from_pretrained(out / "model")
    before, after = source.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("tower.align.") for k in changed), sorted(changed)
    image = render("a green square above a red circle", size=32, seed=4)
    assert torch.equal(source.tokenize_image(image), tuned.tokenize_image(image))

    again = CliRunner().invoke(app, args)  # finished: resumes at the last step, trains nothing more
    assert again.exit_code == 0, again.output
    assert "[align] resumed from" in again.output and "at step 40" in again.output
    assert len([line for line in (out / "log.jsonl").read_text().splitlines() if '"align"' in line]) == len(align)
    resumed = VilaU.from_pretrained(out / "model").state_dict()
    assert all(torch.equal(resumed[k], after[k]) for k in changed)
    from genfoundry.vilau.card import _command

    command = _command(json.loads((out / "train_config.json").read_text()))
    assert "--align-steps 40" in command and "--align-images 64" in command and "--align-batch-size 16" in command
    with pytest.raises(ValueError, match="align_batch_size"):
        TrainConfig(out="x", align_batch_size=1)


def test_alignment_stage_with_hard_negative_captions(trained, app, tmp_path) -> None:
    """--align-hard-negatives: each image's caption edits join the batch's texts as negatives only."""
    from genfoundry.vilau.train import hard_negatives

    out = tmp_path / "hard"
    _, align = _train_head_alone(app, trained, out, 30, "--align-hard-negatives", "3")
    assert len(align) == 6 and align[-1]["loss"] < align[0]["loss"], align
    before = VilaU.from_pretrained(trained / "model").state_dict()
    after = VilaU.from_pretrained(out / "model").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("tower.align.") for k in changed), sorted(changed)
    from genfoundry.vilau.card import _command

    assert "--align-hard-negatives 3" in _command(json.loads((out / "train_config.json").read_text()))
    edits = {0: [[5, 6], [7]], 1: [[8]]}
    picked = hard_negatives(edits, [0, 1, 0], 4, random.Random(0))
    assert len(picked) == 12 and set(picked[:4]) <= {5, 6, 7} and picked[4:8] == [8] * 4
    with pytest.raises(ValueError, match="align_hard_negatives"):
        TrainConfig(out="x", align_hard_negatives=-1)


def test_alignment_stage_can_switch_to_an_attention_image_head(trained, app, tmp_path) -> None:
    """--align-image-head attention: a fresh image side (cells attend to each other) trained alone; the
    folder's config records it, so it loads back, and nothing outside tower.align changes."""
    out = tmp_path / "attention"
    _, align = _train_head_alone(app, trained, out, 20, "--align-image-head", "attention")
    assert align[-1]["loss"] < align[0]["loss"], align
    tuned = VilaU.from_pretrained(out / "model")
    assert tuned.config.tower.align_image_head == "attention"
    before, after = VilaU.from_pretrained(trained / "model").state_dict(), tuned.state_dict()
    outside = {k for k in set(before) | set(after) if not k.startswith("tower.align.")}
    assert all(torch.equal(before[k], after[k]) for k in outside)
    assert any(k.startswith("tower.align.image_proj.blocks.") for k in after)
    image = render("a green square above a red circle", size=32, seed=4)
    assert tuned.tower.image_embedding(tuned.load_image(image)[None].to(tuned.device)).shape == (1, tuned.config.tower.align_dim)
    from genfoundry.vilau.card import _command

    assert "--align-image-head attention" in _command(json.loads((out / "train_config.json").read_text()))
    with pytest.raises(ValueError, match="align_image_head"):
        TrainConfig(out="x", align_image_head="conv")
    from genfoundry.vilau.tower import TowerConfig

    with pytest.raises(ValueError, match="align_image_head must be one of mlp, attention"):
        TowerConfig(align_image_head="conv")


def test_saved_tokenizer_does_not_keep_the_last_calls_truncation(tmp_path) -> None:
    torch.manual_seed(0)
    model = VilaU(VilaUConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "a")
    model.tokenizer(["a red circle"], add_special_tokens=False, padding="max_length", truncation=True, max_length=5)
    model.save_pretrained(tmp_path / "b")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / "llm" / name).read_bytes() == (tmp_path / "b" / "llm" / name).read_bytes(), name
    long = "a red circle to the left of a blue square " * 3
    assert len(VilaU.from_pretrained(tmp_path / "b").text_ids(long)) == len(model.text_ids(long)) > 5


def test_alignment_stage_can_train_the_text_encoder_too(trained, app, tmp_path) -> None:
    """--align-train-text: the head and the tower's text encoder train (LiT-style), every other weight
    and every code stays, the folder loads with the new text weights, and resuming trains nothing more."""
    out = tmp_path / "text"
    args, align = _train_head_alone(app, trained, out, 20, "--align-train-text", "--align-hard-negatives", "2")
    assert align[-1]["loss"] < align[0]["loss"], align
    source, tuned = VilaU.from_pretrained(trained / "model"), VilaU.from_pretrained(out / "model")
    before, after = source.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("tower.text_encoder.") for k in changed)
    assert all(k.startswith(("tower.align.", "tower.text_encoder.")) for k in changed), sorted(changed)
    assert not any(p.requires_grad for p in tuned.tower.text_encoder.parameters())
    image = render("a green square above a red circle", size=32, seed=4)
    assert torch.equal(source.tokenize_image(image), tuned.tokenize_image(image))
    ids = tuned.caption_ids(["a red circle"])
    torch.testing.assert_close(tuned.tower.text_encoder(ids), tuned.tower.text_encoder.encode(ids))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "at step 20" in again.output, again.output
    resumed = VilaU.from_pretrained(out / "model").state_dict()
    assert all(torch.equal(resumed[k], after[k]) for k in changed)
    from genfoundry.vilau.card import _command

    assert "--align-train-text" in _command(json.loads((out / "train_config.json").read_text()))
