"""Where do relation questions fail in vila-u-shapes? Three probes on frozen parts of the model.

The embedded model answers "is the red circle to the left of the blue square?" at chance, and its
alignment head cannot tell a caption from the one with the opposite relation. Each probe trains a
small classifier on features one part of the model computes, on two-object scenes (held-out scenes
for the score), with balanced-as-drawn yes/no labels (`relation_holds` with the 2-pixel clearance the
QA uses):

1. `tower grid + one-hot query`: an MLP on the frozen tower's quantized grid (what the LLM and the
   alignment head read) plus one-hot colour/shape of both objects and the relation. Can the image
   tokens tell where two named objects are relative to each other?
2. `tower grid + frozen text features`: the same, with the query given as the frozen text encoder's
   features of "a A {relation} a B" (what the alignment head reads) instead of one-hots.
3. `LLM hidden state, layer L`: logistic regression on the LLM's hidden state at the last token of
   the relation question (image then question, as `ask` runs it), per layer. Does the LLM compute
   the answer anywhere, even where its head does not read it?

    python experiments/vilau_relation_diagnosis.py            # about 15 min on 2 CPU cores
    python experiments/vilau_relation_diagnosis.py --quick    # smoke test

Writes experiments/results/vilau_relation_diagnosis{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from paths import RESULTS

from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)

CATEGORIES = ("position", "two_objects")  # scenes of two objects of different kinds


def scenes_and_queries(model, n: int, seed: int) -> dict:
    """Frozen tower grids [n, C, g, g] and per scene one query (A, B, relation, answer) + caption."""
    from genfoundry.shapes import ShapesDataset
    from genfoundry.shapes.world import COLORS, RELATIONS, SHAPES, relation_holds

    colors, shapes = list(COLORS), list(SHAPES)
    data = ShapesDataset(n, seed=seed, size=model.config.tower.image_size, categories=CATEGORIES)
    rng = random.Random(f"relation-diagnosis:{seed}")
    grids, rows, captions = [], [], []
    for start in tqdm(range(0, n, 256), desc=f"tower features (seed {seed})", leave=False):
        idx = range(start, min(n, start + 256))
        batch = torch.stack([data[i]["image"] for i in idx])
        with torch.no_grad():
            grid, _ = model.tower.encode(batch.to(model.device))
        grids.append(grid.float().cpu())
        for i in idx:
            a, b = rng.sample(list(data.scene(i).objects), 2)
            while True:  # a relation whose answer is clear (2 px away from the threshold, as in the QA)
                rel = rng.choice(RELATIONS)
                if relation_holds(rel, a, b, 2.0) or not relation_holds(rel, a, b, -2.0):
                    break
            rows.append((colors.index(a.color), shapes.index(a.shape), colors.index(b.color),
                         shapes.index(b.shape), RELATIONS.index(rel), int(relation_holds(rel, a, b, 2.0))))
            captions.append(f"a {a.color} {a.shape} {rel} a {b.color} {b.shape}")
    return {"grid": torch.cat(grids), "rows": torch.tensor(rows), "captions": captions, "data": data}


class GridProbe(nn.Module):
    """MLP on (1x1-conv'd, flattened) tower grid + a query vector -> yes/no logit."""

    def __init__(self, channels: int, grid: int, query_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 1)
        self.query = nn.Sequential(nn.Linear(query_dim, 160), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(16 * grid * grid + 160, 512), nn.SiLU(), nn.Linear(512, 256), nn.SiLU(),
                                 nn.Linear(256, 1))

    def forward(self, grid: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([F.silu(self.conv(grid)).flatten(1), self.query(query)], 1))[:, 0]


def one_hot_queries(rows: torch.Tensor) -> torch.Tensor:
    from genfoundry.shapes.world import COLORS, RELATIONS, SHAPES

    sizes = (len(COLORS), len(SHAPES), len(COLORS), len(SHAPES), len(RELATIONS))
    return torch.cat([F.one_hot(rows[:, i], s).float() for i, s in enumerate(sizes)], 1)


def text_queries(model, captions: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(captions), 512):
            out.append(model.tower.text_encoder(model.caption_ids(captions[i:i + 512])).float().cpu())
    return torch.cat(out)


def train_grid_probe(train: dict, test: dict, q_train: torch.Tensor, q_test: torch.Tensor, steps: int,
                     seed: int) -> dict:
    torch.manual_seed(seed)
    _, channels, grid, _ = train["grid"].shape
    probe = GridProbe(channels, grid, q_train.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=0.01)
    y_train, y_test = train["rows"][:, 5].float(), test["rows"][:, 5].float()
    for _ in tqdm(range(steps), desc="probe", leave=False):
        i = torch.randint(0, len(y_train), (256,))
        loss = F.binary_cross_entropy_with_logits(probe(train["grid"][i], q_train[i]), y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held = ((probe(test["grid"], q_test) > 0).float() == y_test).float().mean().item()
        seen = ((probe(train["grid"][:2000], q_train[:2000]) > 0).float() == y_train[:2000]).float().mean().item()
    return {"held_out": held, "train": seen}


def llm_states(model, part: dict, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [n, layers + 1, H] at the last token of "is the A {rel} the B?" after the image."""
    from genfoundry.vilau.model import Segment

    seqs = []
    n = len(part["captions"])
    for start in range(0, n, 256):
        images = torch.stack([part["data"][i]["image"] for i in range(start, min(n, start + 256))])
        with torch.no_grad():
            codes = model.tower.tokenize(images.to(model.device)).cpu()
        for code, cap in zip(codes, part["captions"][start:start + 256]):
            words = cap.split(" ")  # "a C S RELATION... a C S"
            question = f"is the {words[1]} {words[2]} {' '.join(words[3:-3])} the {words[-2]} {words[-1]}?"
            seqs.append(model.build_sequence([Segment("image", code), Segment("text", model.text_ids(question))]))
    states = []
    for start in tqdm(range(0, len(seqs), batch_size), desc="LLM states", leave=False):
        chunk = seqs[start:start + batch_size]
        width = max(len(s["ids"]) for s in chunk)
        batch = model.collate([model.left_pad(s, width, model.tokenizer.pad_token_id) for s in chunk]).to(model.device)
        mask = torch.tensor([[0] * (width - len(s["ids"])) + [1] * len(s["ids"]) for s in chunk], device=model.device)
        with torch.no_grad():
            emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
            out = model.llm.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
        states.append(torch.stack([h[:, -1] for h in out.hidden_states], 1).float().cpu())
    return torch.cat(states), part["rows"][:, 5].float()


def logistic_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-5
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(a.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a @ w + bias, y_train) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {"held_out": ((b @ w + bias > 0).float() == y_test).float().mean().item(),
                "train": ((a @ w + bias > 0).float() == y_train).float().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vila-u-shapes")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-scenes", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--llm-scenes", type=int, default=6000)
    parser.add_argument("--test-scenes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    if args.quick:
        args.train_scenes, args.steps, args.llm_scenes, args.test_scenes = 600, 50, 300, 200

    from genfoundry.vilau.model import VilaU

    t0 = time.perf_counter()
    model = VilaU.from_pretrained(args.model).eval()
    train = scenes_and_queries(model, args.train_scenes, 7_000 + args.seed)
    test = scenes_and_queries(model, args.test_scenes, 7_001 + args.seed)
    rows = []
    one_hot = train_grid_probe(train, test, one_hot_queries(train["rows"]), one_hot_queries(test["rows"]),
                               args.steps, args.seed)
    rows.append({"probe": "tower grid + one-hot query", **one_hot})
    text = train_grid_probe(train, test, text_queries(model, train["captions"]), text_queries(model, test["captions"]),
                            args.steps, args.seed)
    rows.append({"probe": "tower grid + frozen text features", **text})
    llm_train = {k: (v[:args.llm_scenes] if k in ("rows", "captions") else v) for k, v in train.items()}
    x_train, y_train = llm_states(model, llm_train)
    x_test, y_test = llm_states(model, test)
    for layer in range(x_train.shape[1]):
        rows.append({"probe": f"LLM hidden state, layer {layer}" + (" (input)" if layer == 0 else ""),
                     **logistic_probe(x_train[:, layer], y_train, x_test[:, layer], y_test)})
    majority = max(float(test["rows"][:, 5].float().mean()), 1 - float(test["rows"][:, 5].float().mean()))
    meta = {"model": args.model, "train_scenes": args.train_scenes, "llm_train_scenes": min(args.llm_scenes, args.train_scenes),
            "test_scenes": args.test_scenes, "steps": args.steps, "majority_answer_share": majority,
            "seconds": time.perf_counter() - t0}
    lines = [f"Held-out relation questions on {args.test_scenes} two-object scenes; always answering the majority "
             f"answer scores {majority:.3f}. Grid probes: {args.train_scenes} training scenes, {args.steps} steps of "
             f"256; LLM probes: logistic regression on {meta['llm_train_scenes']} scenes' hidden states.", "",
             "| features probed | held-out accuracy | train accuracy |", "| --- | ---: | ---: |"]
    lines += [f"| {r['probe']} | {r['held_out']:.3f} | {r['train']:.3f} |" for r in rows]
    name = "vilau_relation_diagnosis_quick" if args.quick else "vilau_relation_diagnosis"
    write_results(name, {"meta": meta, "rows": rows}, "\n".join(lines), out_dir=args.results, default_dir=RESULTS,
                  env=environment(str(model.device)), title=f"VILA-U relation diagnosis ({args.model})")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
