"""VILA-U relation probe: can the LLM learn "is the A left of / above the B?" from its image tokens?

The embedded vila-u-shapes answers colour, shape, count and existence questions but relation
questions at chance. Its image tokens enter the LLM in raster order with 1D RoPE positions and no
other position signal (the conv tower's codes do not say where a token is), so "left of" asks the
LLM to compare columns = sequence index mod the grid width. This probe fine-tunes the LLM on relation
questions alone, from the embedded weights, in two arms that differ only in the input:

- `raster`: the image tokens as they are (the model without grid-cell embeddings);
- `raster+2d`: plus a learned row embedding and column embedding added to each image token.

Both see the same batches (same seed), the same optimizer and steps, and are scored on the same
held-out relation questions (balanced yes/no) by comparing the "yes" and "no" logits.

    python experiments/vilau_relation_probe.py               # 600 steps per arm, about 16 min on 2 CPU cores
    python experiments/vilau_relation_probe.py --quick       # smoke test (random tiny model, a few steps)
    python experiments/vilau_relation_probe.py --device cuda --steps 10000 --results DIR   # on a GPU

Writes experiments/results/vilau_relation_probe{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from paths import RESULTS

from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)

RELATION_CATEGORIES = ("position", "two_objects", "colors")  # scenes with two objects of different kinds


def relation_items(seed: int, count: int, size: int) -> list[tuple[object, str, str]]:
    """(scene, question, answer) with one relation question per scene, yes and no alternating."""
    from genfoundry.shapes.dataset import scene_at
    from genfoundry.shapes.qa import questions

    rng = random.Random(f"relation-probe:{seed}")
    items, index = [], 0
    while len(items) < count:
        scene = scene_at(seed, index, size, RELATION_CATEGORIES)
        index += 1
        want = "yes" if len(items) % 2 == 0 else "no"
        pool = [(q, a) for q, a in questions(scene) if q.startswith("is the ") and a == want]
        if pool:
            q, a = rng.choice(pool)
            items.append((scene, q, a))
    return items


class GridPosition(nn.Module):
    """A learned row embedding + column embedding per image token (raster order)."""

    def __init__(self, grid: int, hidden: int) -> None:
        super().__init__()
        self.grid = grid
        self.rows = nn.Parameter(torch.randn(grid, hidden) * 0.02)
        self.cols = nn.Parameter(torch.randn(grid, hidden) * 0.02)

    def forward(self) -> torch.Tensor:
        return (self.rows[:, None] + self.cols[None]).reshape(self.grid * self.grid, -1)


def encode(model, items, codes: torch.Tensor, position: GridPosition | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [image, question] sequences -> (last hidden state [B, H], answer ids [B])."""
    from genfoundry.vilau.model import Segment

    seqs = [model.build_sequence([Segment("image", c), Segment("text", model.text_ids(q))])
            for c, (_, q, _) in zip(codes, items)]
    width = max(len(s["ids"]) for s in seqs)
    pad = model.tokenizer.pad_token_id
    batch = model.collate([model.left_pad(s, width, pad) for s in seqs]).to(model.device)
    mask = torch.tensor([[0] * (width - len(s["ids"])) + [1] * len(s["ids"]) for s in seqs], device=model.device)
    emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
    if position is not None:
        table = position().to(emb.dtype).repeat(len(items), 1)  # every sequence holds exactly one image
        emb = emb.masked_scatter(batch.image_mask[..., None], emb[batch.image_mask] + table)
    hidden = model.llm.model(inputs_embeds=emb, attention_mask=mask).last_hidden_state[:, -1]
    answers = torch.tensor([model.text_ids(a)[0] for _, _, a in items], device=model.device)
    return hidden, answers


@torch.no_grad()
def accuracy(model, items, codes, position, batch_size: int = 64) -> float:
    yes, no = model.text_ids("yes")[0], model.text_ids("no")[0]
    model.eval()
    right = 0
    for i in range(0, len(items), batch_size):
        hidden, answers = encode(model, items[i:i + batch_size], codes[i:i + batch_size], position)
        logits = model.llm.lm_head(hidden)
        pred = torch.where(logits[:, yes] > logits[:, no], yes, no)
        right += int((pred == answers).sum())
    return right / len(items)


def tokenize(model, items, batch_size: int = 128) -> torch.Tensor:
    from genfoundry.shapes import image_to_tensor, render_scene

    out = []
    for i in range(0, len(items), batch_size):
        images = torch.stack([image_to_tensor(render_scene(s)) for s, _, _ in items[i:i + batch_size]])
        out.append(model.tower.tokenize(images.to(model.device)).cpu())
    return torch.cat(out)


def load_base(args):
    """The model to fine-tune (`--quick`: a random tiny one, and a few steps), tower and depth transformer
    frozen."""
    from genfoundry.vilau.model import VilaU, VilaUConfig

    if args.quick:
        torch.manual_seed(0)
        base = VilaU(VilaUConfig.tiny()).to(args.device)
        args.steps, args.test, args.eval_every = 4, 16, 2
    else:
        base = VilaU.from_pretrained(args.model, device=args.device)
    base.tower.eval().requires_grad_(False)
    base.depth_transformer.requires_grad_(False)
    return base


def relation_data(base, args):
    """(pool size, train items, their codes, test items, their codes): long runs cycle through a pool of
    scenes (rendering and tokenizing them is CPU work); the test scenes come from another stream."""
    size = base.config.tower.image_size
    pool = min(args.steps * args.batch_size, args.max_scenes)
    train_items = relation_items(1000 + args.seed, pool, size)
    test_items = relation_items(7919, args.test, size)
    return pool, train_items, tokenize(base, train_items), test_items, tokenize(base, test_items)


def run_arm(base, name: str, train_items, train_codes, test_items, test_codes, args) -> dict:
    torch.manual_seed(args.seed)
    model = copy.deepcopy(base)
    position = GridPosition(model.config.tower.grid, model.llm.config.hidden_size).to(model.device) \
        if name == "raster+2d" else None
    params = list(model.llm.parameters()) + (list(position.parameters()) if position is not None else [])
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    before = accuracy(model, test_items, test_codes, position)
    history, t0 = [], time.perf_counter()
    order = random.Random(args.seed).sample(range(len(train_items)), len(train_items))
    for step in tqdm(range(args.steps), desc=name):
        pick = [order[(step * args.batch_size + j) % len(order)] for j in range(args.batch_size)]
        model.train()
        hidden, answers = encode(model, [train_items[j] for j in pick], train_codes[pick], position)
        loss = F.cross_entropy(model.llm.lm_head(hidden).float(), answers)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            tqdm.write(f"{name} step {step + 1}: loss {sum(history[-20:]) / len(history[-20:]):.3f}, "
                       f"held-out {accuracy(model, test_items, test_codes, position):.3f}")
    after = accuracy(model, test_items, test_codes, position)
    k = min(20, len(history))
    return {"arm": name, "steps": args.steps, "seconds": time.perf_counter() - t0, "accuracy_before": before,
            "accuracy_after": after, "loss_first": sum(history[:k]) / k, "loss_last": sum(history[-k:]) / k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vila-u-shapes")
    parser.add_argument("--quick", action="store_true", help="Random tiny model, a few steps (smoke test).")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--test", type=int, default=400, help="held-out relation questions")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scenes", type=int, default=20_000, help="training scenes at most (then repeated)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (a GPU runs thousands of steps in minutes)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    base = load_base(args)
    pool, train_items, train_codes, test_items, test_codes = relation_data(base, args)
    arms = [run_arm(base, name, train_items, train_codes, test_items, test_codes, args)
            for name in ("raster", "raster+2d")]
    result = {"model": "random-tiny" if args.quick else args.model, "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "test_questions": args.test,
              "threads": torch.get_num_threads(), "train_scenes": pool, "arms": arms}
    name = "vilau_relation_probe_quick" if args.quick else "vilau_relation_probe"
    md = [(f"Model {result['model']}, LLM fine-tuned on relation questions alone: {args.steps} steps of batch "
           f"{args.batch_size} over {pool} training scenes, AdamW lr {args.lr}, "
           f"{result['threads']} CPU threads. Held-out: {args.test} relation questions (half yes), scored by "
           "the yes/no logits."), "",
          "| image-token input | held-out before | held-out after | loss first 20 | loss last 20 | seconds |",
          "| --- | ---: | ---: | ---: | ---: | ---: |"]
    md += [f"| {a['arm']} | {a['accuracy_before']:.3f} | {a['accuracy_after']:.3f} | {a['loss_first']:.3f} | "
           f"{a['loss_last']:.3f} | {a['seconds']:.0f} |" for a in arms]
    write_results(name, result, "\n".join(md), out_dir=args.results, default_dir=RESULTS,
                  env=environment(str(base.device)), title="VILA-U relation probe")
    print("\n".join(md))


if __name__ == "__main__":
    main()
