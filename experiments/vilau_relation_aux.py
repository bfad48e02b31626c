"""VILA-U relation fine-tune with an auxiliary "where is it?" loss: does supervising the first hop help?

Relation questions ("is the red circle to the left of the blue square?") need two hops inside the LLM:
find each named object among the image tokens and fetch where it is, then compare the two places.
The answer alone (yes/no) gives the first hop no gradient until the second works, and fine-tunes on
the answer alone stayed at chance (`vilau_relation_probe.py`, `vilau_relation_diagnosis.py`). Here a
linear head reads the LLM's hidden state at a chosen layer (`--aux-layer`) at the token of each
object's shape word ("circle", "square") and regresses that object's centre and size (x, y, side,
each scaled to [-1, 1]; `relation_holds` compares centres against half the larger side), a dense signal
for the first hop from the first step. The head is for training only: answers are still
the LLM's own next token, scored on held-out questions by the yes/no logits as in the probe.

Arms (the same batches, optimizer and steps, from the embedded weights): `answer` (the answer loss
alone, the control) and `answer+where` (plus the auxiliary loss, weight `--aux-weight`).

    python experiments/vilau_relation_aux.py --arms answer+where --name vilau_relation_aux_where1500
    python experiments/vilau_relation_aux.py --arms answer --name vilau_relation_aux_answer1500
    python experiments/vilau_relation_aux.py --arms answer --name vilau_relation_aux_answer1500_repeat \
        --save runs/vilau-relonly     # the same run again, keeping the model (runs/vilau-relonly/answer)
    python experiments/vilau_relation_aux.py --quick       # smoke test (random tiny model, a few steps)

(about 11 minutes per arm of 1,500 steps on 2 CPU cores). Measured: the control learns relations
(0.480 -> 0.800, and 0.840 in the second run) and the auxiliary loss slows it (0.672), but a model tuned on
relations alone forgets the rest (benchmarks/vilau_validation.py on it: benchmarks/results/vilau_validation_relation.md).

Writes experiments/results/NAME{,_quick}.{json,md} (--name, default vilau_relation_aux).
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

from experiments.vilau_relation_probe import accuracy, load_base, relation_data  # noqa: E402 (root on the path)
from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)

ARMS = ("answer", "answer+where")


def named_objects(scene, question: str):
    """The two objects a relation question names: 'is the {c} {s} ... the {c} {s}?' -> (a, b)."""
    words = question.rstrip("?").split()
    kinds = [(words[2], words[3]), (words[-2], words[-1])]
    by_kind = {o.kind: o for o in scene.objects}
    return [by_kind[k] for k in kinds]


def forward(model, items, codes: torch.Tensor, layer: int):
    """Left-padded [image, question] sequences -> (last hidden [B, H], answer ids [B], hidden at the two
    shape words at `layer` [B, 2, H], their objects' centre x, y and side [B, 2, 3] scaled to [-1, 1])."""
    from genfoundry.vilau.model import Segment

    questions = [model.text_ids(q) for _, q, _ in items]
    seqs = [model.build_sequence([Segment("image", c), Segment("text", q)]) for c, q in zip(codes, questions)]
    width = max(len(s["ids"]) for s in seqs)
    pad = model.tokenizer.pad_token_id
    batch = model.collate([model.left_pad(s, width, pad) for s in seqs]).to(model.device)
    mask = torch.tensor([[0] * (width - len(s["ids"])) + [1] * len(s["ids"]) for s in seqs], device=model.device)
    emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
    out = model.llm.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
    # every row ends at the last column: the question's shape words sit at fixed offsets from its end
    starts = [width - len(q) for q in questions]
    where = torch.tensor([[s + 3, width - 2] for s in starts], device=model.device)
    tapped = out.hidden_states[layer].gather(1, where[..., None].expand(-1, -1, out.hidden_states[layer].shape[-1]))
    size = model.config.tower.image_size
    centres = torch.tensor([[[v / size * 2 - 1 for v in (o.cx, o.cy, o.size)] for o in named_objects(s, q)]
                            for s, q, _ in items], device=model.device)
    answers = torch.tensor([model.text_ids(a)[0] for _, _, a in items], device=model.device)
    return out.last_hidden_state[:, -1], answers, tapped, centres


def run_arm(base, name: str, train_items, train_codes, test_items, test_codes, args) -> dict:
    torch.manual_seed(args.seed)
    model = copy.deepcopy(base)
    head = nn.Linear(model.llm.config.hidden_size, 3).to(model.device)
    params = list(model.llm.parameters()) + list(model.mm_projector.parameters())
    if model.grid_position is not None:
        params += list(model.grid_position.parameters())
    optimizer = torch.optim.AdamW([{"params": params}, {"params": head.parameters(), "lr": args.lr * 10}],
                                  lr=args.lr, weight_decay=0.0)
    before = accuracy(model, test_items, test_codes, None)
    history, checkpoints, t0 = [], [], time.perf_counter()
    order = random.Random(args.seed).sample(range(len(train_items)), len(train_items))
    for step in tqdm(range(args.steps), desc=name):
        pick = [order[(step * args.batch_size + j) % len(order)] for j in range(args.batch_size)]
        model.train()
        hidden, answers, tapped, centres = forward(model, [train_items[j] for j in pick], train_codes[pick],
                                                   args.aux_layer)
        answer_loss = F.cross_entropy(model.llm.lm_head(hidden).float(), answers)
        where_loss = F.mse_loss(head(tapped).float(), centres)
        loss = answer_loss + (args.aux_weight * where_loss if name == "answer+where" else 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append((float(answer_loss.detach()), float(where_loss.detach())))
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            k = min(50, len(history))
            acc = accuracy(model, test_items, test_codes, None)
            checkpoints.append({"step": step + 1, "held_out": acc})
            tqdm.write(f"{name} step {step + 1}: answer loss {sum(h[0] for h in history[-k:]) / k:.3f}, "
                       f"where loss {sum(h[1] for h in history[-k:]) / k:.4f}, held-out {acc:.3f}")
    after = accuracy(model, test_items, test_codes, None)
    if args.save:
        model.save_pretrained(args.save / name.replace("+", "-"))
    k = min(50, len(history))
    return {"arm": name, "steps": args.steps, "seconds": time.perf_counter() - t0, "accuracy_before": before,
            "accuracy_after": after, "checkpoints": checkpoints,
            "answer_loss_first": sum(h[0] for h in history[:k]) / k, "answer_loss_last": sum(h[0] for h in history[-k:]) / k,
            "where_loss_first": sum(h[1] for h in history[:k]) / k, "where_loss_last": sum(h[1] for h in history[-k:]) / k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vila-u-shapes")
    parser.add_argument("--quick", action="store_true", help="Random tiny model, a few steps (smoke test).")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--aux-layer", type=int, default=2, help="hidden state read by the 'where' head (0 = input)")
    parser.add_argument("--aux-weight", type=float, default=1.0)
    parser.add_argument("--test", type=int, default=400, help="held-out relation questions")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scenes", type=int, default=20_000, help="training scenes at most (then repeated)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", type=Path, default=None, help="write each arm's model to SAVE/ARM")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    parser.add_argument("--name", default="vilau_relation_aux", help="results file name (NAME.{json,md})")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        parser.error(f"--arms takes names from {', '.join(ARMS)}, got {args.arms!r}")

    base = load_base(args)
    if not 0 <= args.aux_layer <= base.llm.config.num_hidden_layers:
        parser.error(f"--aux-layer must be in [0, {base.llm.config.num_hidden_layers}], got {args.aux_layer}")
    pool, train_items, train_codes, test_items, test_codes = relation_data(base, args)
    results = [run_arm(base, name, train_items, train_codes, test_items, test_codes, args) for name in arms]
    result = {"model": "random-tiny" if args.quick else args.model, "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "aux_layer": args.aux_layer, "aux_weight": args.aux_weight,
              "test_questions": args.test, "train_scenes": pool, "arms": results}
    name = f"{args.name}_quick" if args.quick else args.name
    md = [(f"Model {result['model']}: the LLM, projector and grid cells fine-tuned on relation questions alone, "
           f"{args.steps} steps of batch {args.batch_size} over {pool} training scenes, AdamW lr {args.lr}. "
           f"answer+where adds an MSE loss (weight {args.aux_weight}) on each named object's "
           f"centre and side, read linearly from layer {args.aux_layer} at its shape word. Held-out: {args.test} relation "
           "questions (half yes), scored by the yes/no logits."), "",
          "| arm | held-out before | held-out after | answer loss first / last 50 | where loss first / last 50 | seconds |",
          "| --- | ---: | ---: | ---: | ---: | ---: |"]
    md += [f"| {a['arm']} | {a['accuracy_before']:.3f} | {a['accuracy_after']:.3f} | {a['answer_loss_first']:.3f} / "
           f"{a['answer_loss_last']:.3f} | {a['where_loss_first']:.4f} / {a['where_loss_last']:.4f} | {a['seconds']:.0f} |"
           for a in results]
    for a in results:
        if a["checkpoints"]:
            md.append("")
            md.append(f"{a['arm']}, held-out along the way: " + ", ".join(
                f"step {c['step']} {c['held_out']:.3f}" for c in a["checkpoints"]))
    write_results(name, result, "\n".join(md), out_dir=args.results, default_dir=RESULTS,
                  env=environment(str(base.device)), title="VILA-U relation fine-tune with a 'where is it?' auxiliary loss")
    print("\n".join(md))


if __name__ == "__main__":
    main()
