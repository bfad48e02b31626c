"""Grid-cell embeddings on VILA-U image tokens: the table, the cell each token gets (padding, video, decoding),
folders with and without them, and continuing an old folder with them."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from genfoundry.shapes import render
from genfoundry.vilau import VilaU, VilaUConfig
from genfoundry.vilau.generate import generate_codes
from genfoundry.vilau.model import GridPosition, Segment
from genfoundry.vilau.train import TrainConfig


@pytest.fixture(scope="module")
def model() -> VilaU:
    torch.manual_seed(0)
    m = VilaU(VilaUConfig.tiny()).eval()
    with torch.no_grad():  # a distinct, clearly visible entry per cell
        m.grid_position.table.normal_()
    return m


def test_sincos_table_tells_every_cell_apart_and_shares_rows_and_columns() -> None:
    grid, hidden = 8, 64
    table = GridPosition.sincos(grid, hidden).reshape(grid, grid, hidden)
    flat = table.reshape(grid * grid, hidden)
    distance = torch.cdist(flat, flat) + torch.eye(grid * grid) * 1e9
    assert float(distance.min()) > 0.5
    half = hidden // 2
    # the first half of the channels depends on the row only, the second on the column only
    assert torch.equal(table[:, 0, :half], table[:, 5, :half])
    assert torch.equal(table[0, :, half:], table[6, :, half:])
    assert abs(float(GridPosition(grid, hidden).table.detach().pow(2).mean().sqrt()) - GridPosition.INIT_RMS) < 1e-4


def test_each_image_token_gets_its_own_cell_with_padding_and_video(model: VilaU) -> None:
    g, d = model.config.tower.grid, model.config.tower.depth
    torch.manual_seed(3)
    a, b, c = (torch.randint(0, model.config.tower.codebook_size, (g, g, d)) for _ in range(3))
    seqs = [model.build_sequence([Segment("text", model.text_ids("a red circle")), Segment("image", a)]),
            model.build_sequence([Segment("video", [b, c]), Segment("text", model.text_ids("what color is the circle?"))])]
    width = max(len(s["ids"]) for s in seqs)
    batch = model.collate([model.left_pad(s, width, model.tokenizer.pad_token_id) for s in seqs])
    with torch.no_grad():
        emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
        for row, s in enumerate(seqs):
            shift = width - len(s["ids"])
            assert s["images"]
            for start, codes, _ in s["images"]:
                # independent of the model's cell arithmetic: block start + raster index
                want = model.mm_projector(model.tower.quantizer.embed(codes)) + model.grid_position.table
                torch.testing.assert_close(emb[row, shift + start:shift + start + g * g], want)


def test_greedy_decoding_feeds_the_cells_that_teacher_forcing_uses(model: VilaU) -> None:
    """Codes drawn greedily, token by token with the KV cache, are the argmax of a full teacher-forced pass."""
    prompt = "a red circle to the left of a blue square"
    codes = generate_codes(model, prompt, cfg=1.0, temperature=0.0)[0, 0]  # [g, g, D]
    seq = model.build_sequence([Segment("text", model.text_ids(prompt)), Segment("image", codes, train=True)])
    batch = model.collate([seq])
    with torch.no_grad():
        emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
        hidden = model.llm.model(inputs_embeds=emb, attention_mask=batch.attention_mask).last_hidden_state
        targets = batch.image_targets[:, 1:]
        h = hidden[:, :-1][targets]
        flat = batch.image_codes[:, 1:][targets]
        logits = model.depth_transformer(h, model.tower.quantizer.partial_sums(flat[:, :-1]))
    assert torch.equal(logits.argmax(-1), flat)


def test_folders_with_and_without_grid_positions(model: VilaU, tmp_path) -> None:
    image = render("a red circle", size=32, seed=1)
    model.save_pretrained(tmp_path / "grid")
    back = VilaU.from_pretrained(tmp_path / "grid")
    assert back.config.image_position == "grid"
    assert torch.equal(back.grid_position.table, model.grid_position.table)
    (tmp_path / "grid" / "mm_projector" / "grid_position.safetensors").unlink()
    with pytest.raises(Exception, match="grid_position.safetensors"):
        VilaU.from_pretrained(tmp_path / "grid")

    torch.manual_seed(0)
    old = VilaU(VilaUConfig(**{**VilaUConfig.tiny().__dict__, "image_position": "none"})).eval()
    assert old.grid_position is None
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["image_position"]  # folders written before the option existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = VilaU.from_pretrained(tmp_path / "old")
    assert loaded.config.image_position == "none" and loaded.grid_position is None
    codes = loaded.tokenize_image(image).reshape(-1, loaded.config.tower.depth)
    before = loaded.image_embeddings(codes)
    loaded.add_grid_position()
    assert loaded.config.image_position == "grid"
    cells = torch.arange(len(codes))
    torch.testing.assert_close(loaded.image_embeddings(codes, cells), before + loaded.grid_position.table)
    with pytest.raises(ValueError, match="cell"):
        loaded.image_embeddings(codes)
    with pytest.raises(ValueError, match="image_position"):
        VilaUConfig(image_position="2d")


def test_continuing_an_old_folder_with_grid_positions(tmp_path) -> None:
    from genfoundry.cli import app

    torch.manual_seed(0)
    VilaU(VilaUConfig(**{**VilaUConfig.tiny().__dict__, "image_position": "none"})).save_pretrained(tmp_path / "old")
    out = tmp_path / "more"
    result = CliRunner().invoke(app, ["train", "vilau", "--out", str(out), "--init-from", str(tmp_path / "old"),
                                      "--add-grid-position", "--llm-steps", "2", "--batch-size", "4",
                                      "--warmup-steps", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    tuned = VilaU.from_pretrained(out / "model")
    assert tuned.config.image_position == "grid"
    initial = GridPosition(tuned.config.tower.grid, tuned.llm.config.hidden_size).table
    assert not torch.equal(tuned.grid_position.table, initial)  # trained with the rest
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(out="x", add_grid_position=True)
