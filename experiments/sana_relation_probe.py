"""Does a SANA DiT act on the relation word of a caption?

Two measurements per model:

1. Sensitivity: the relative change of the DiT's velocity prediction when one caption word is swapped
   (same latent noise, same time t): the relation (left <-> right, above <-> below) against the second
   object's colour and shape. A DiT that uses a word moves its prediction when the word changes. Beside
   it, how much the swap changes the text features the DiT reads (the largest relative change over
   the caption's tokens): a word the DiT ignores although its features change is not a text problem.
2. Attention: the share of the cross-attention each caption token receives (mean over layers, heads
   and image tokens). A DiT that routes words to places concentrates it; a uniform share means the
   image tokens all read about the same average of the caption.
3. Placement: for relation captions, generate images (same seeds for every relation), detect the two
   objects and report how often the first lies left of / above the second. A DiT that ignores the
   relation places the objects the same way whatever the caption says.

    python experiments/sana_relation_probe.py [--model sana-shapes ...] [--seeds 8]
    python experiments/sana_relation_probe.py --quick     # 1 seed, 1 noise draw (smoke test)

Writes experiments/results/sana_relation_probe{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from paths import RESULTS

from genfoundry.nn.attention import CrossAttention
from genfoundry.sana import SanaPipeline
from genfoundry.shapes.detect import detect
from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)
BASE = "a red circle to the left of a blue square"
SWAPS = {  # what changes -> the caption it is compared with (BASE, or the pair given)
    "relation left/right": ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
    "relation above/below": ("a red circle above a blue square", "a red circle below a blue square"),
    "second colour blue/green": (BASE, "a red circle to the left of a green square"),
    "second shape square/triangle": (BASE, "a red circle to the left of a blue triangle"),
}
TIMES = (0.98, 0.9, 0.7, 0.5)
RELATIONS = ("to the left of", "to the right of", "above", "below")
PAIRS = (("red", "circle", "blue", "square"), ("green", "triangle", "yellow", "circle"),
         ("blue", "square", "red", "triangle"))


@torch.no_grad()
def sensitivity(pipe: SanaPipeline, noises: int, seed: int) -> dict[str, dict[str, float]]:
    """Mean |v(a) - v(b)| / |v(a)| over `noises` latent draws, per swap and time."""
    tr = pipe.transformer
    captions = [c for pair in SWAPS.values() for c in pair]
    text, mask = pipe.encode_prompt(captions, guidance=False)
    size = pipe.default_size // pipe.vae.spatial_compression_ratio
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, float]] = {name: {} for name in SWAPS}
    for i, name in enumerate(SWAPS):
        a, b, valid = text[2 * i].float(), text[2 * i + 1].float(), mask[2 * i].bool()
        change = (a - b).norm(dim=-1) / a.norm(dim=-1)
        out[name]["text"] = round(change[valid].max().item(), 5)
    for t in TIMES:
        sums = dict.fromkeys(SWAPS, 0.0)
        for _ in range(noises):
            noise = torch.randn(1, tr.config.in_channels, size, size, generator=gen)
            x = noise.repeat(len(captions), 1, 1, 1).to(pipe.device, tr.dtype)
            v = tr(x, torch.full((len(captions),), t * 1000.0, device=pipe.device), text, mask).float()
            for i, name in enumerate(SWAPS):
                a, b = v[2 * i], v[2 * i + 1]
                sums[name] += ((a - b).norm() / a.norm()).item()
        for name in SWAPS:
            out[name][str(t)] = round(sums[name] / noises, 5)
    return out


@contextlib.contextmanager
def recorded_cross_attention(probs: list[torch.Tensor]):
    """While active, every CrossAttention call appends its softmax weights [B, heads, N, L] to `probs`."""
    forward = CrossAttention.forward

    def recording(self, x, context, bias=None, *, kv=None):
        batch = x.shape[0]
        q = self.to_q(x)
        if self.norm_q is not None:
            q = self.norm_q(q)
        k, _ = kv if kv is not None else self.project_context(context)
        q = q.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim)
        if bias is not None:
            scores = scores + bias.float()
        probs.append(scores.softmax(-1))
        return forward(self, x, context, bias, kv=kv)

    CrossAttention.forward = recording
    try:
        yield
    finally:
        CrossAttention.forward = forward


@torch.no_grad()
def attention_share(pipe: SanaPipeline, caption: str, noises: int, seed: int) -> tuple[dict, dict]:
    """Per time t: the mean cross-attention weight on each token of `caption` (keyed 'index:token'), and
    how spread one image token's attention is (its largest weight; its entropy / log(tokens), 1 = uniform),
    averaged over layers, heads and image tokens."""
    tr = pipe.transformer
    text, mask = pipe.encode_prompt([caption], guidance=False)
    tokenizer = pipe.text_encoder.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption).input_ids)[: int(mask[0].sum())]
    size = pipe.default_size // pipe.vae.spatial_compression_ratio
    gen = torch.Generator().manual_seed(seed)
    out, spread = {}, {}
    for t in TIMES:
        probs: list[torch.Tensor] = []
        with recorded_cross_attention(probs):
            for _ in range(noises):
                x = torch.randn(1, tr.config.in_channels, size, size, generator=gen).to(pipe.device, tr.dtype)
                tr(x, torch.full((1,), t * 1000.0, device=pipe.device), text, mask)
        weights = torch.stack(probs)[:, 0, :, :, : len(tokens)]  # [layers x noises, heads, image tokens, L]
        share = weights.mean(dim=(0, 1, 2))
        entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1) / math.log(len(tokens))
        out[str(t)] = {f"{i}:{tok}": round(share[i].item(), 4) for i, tok in enumerate(tokens)}
        spread[str(t)] = {"max_weight": round(weights.max(-1).values.mean().item(), 4),
                          "entropy": round(entropy.mean().item(), 4)}
    return out, spread


def placement(pipe: SanaPipeline, seeds: int, guidance: float | None) -> dict[str, dict[str, float]]:
    """Per relation: images where both objects were found, and the share with the first object left of
    / above the second (centre offsets), over PAIRS x `seeds` images (the same seeds for each relation)."""
    out = {}
    for rel in RELATIONS:
        dx, dy = [], []
        for c1, s1, c2, s2 in PAIRS:
            # the DiT's own placement: no layout guidance (which would place the objects itself)
            images = pipe([f"a {c1} {s1} {rel} a {c2} {s2}"] * seeds, seed=list(range(seeds)),
                          guidance_scale=guidance, layout_guidance=0.0)
            for image in images:
                found = detect(image)
                a = [d for d in found if (d.color, d.shape) == (c1, s1)]
                b = [d for d in found if (d.color, d.shape) == (c2, s2)]
                if len(a) == 1 and len(b) == 1:
                    dx.append(a[0].cx - b[0].cx)
                    dy.append(a[0].cy - b[0].cy)
        out[rel] = {"images": len(PAIRS) * seeds, "both_found": len(dx),
                    "first_left_of_second": round(float(np.mean(np.array(dx) < 0)), 3) if dx else None,
                    "first_above_second": round(float(np.mean(np.array(dy) < 0)), 3) if dy else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["sana-shapes"], help="SANA pipeline folders or zoo names")
    parser.add_argument("--seeds", type=int, default=8, help="images per caption for the placement study")
    parser.add_argument("--noises", type=int, default=8, help="latent draws per time for the sensitivity")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: each model's own")
    parser.add_argument("--quick", action="store_true", help="1 seed and 1 noise draw (smoke test)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.noises = 1, 1
    torch.manual_seed(0)
    models = {}
    for name in args.model:
        pipe = SanaPipeline.from_pretrained(name)
        models[name] = {"sensitivity": sensitivity(pipe, args.noises, seed=0),
                        **dict(zip(("attention", "attention_spread"), attention_share(pipe, BASE, args.noises, 0))),
                        "placement": placement(pipe, args.seeds, args.guidance_scale),
                        "guidance_scale": args.guidance_scale or pipe.config.guidance_scale}
        print(f"{name}: {models[name]}", flush=True)
    result = {"seeds": args.seeds, "noises": args.noises, "models": models}
    lines = []
    for name, m in models.items():
        lines += [f"## `{name}` (guidance {m['guidance_scale']})", "",
                  "Relative change of the velocity prediction when one word is swapped (same noise):", "",
                  "| swapped | text features | " + " | ".join(f"velocity t={t}" for t in TIMES) + " |",
                  "| --- | ---: |" + " ---: |" * len(TIMES)]
        lines += [f"| {k} | {v['text']:.4f} | " + " | ".join(f"{v[str(t)]:.4f}" for t in TIMES) + " |"
                  for k, v in m["sensitivity"].items()]
        tokens = list(m["attention"][str(TIMES[0])])
        lines += ["", f"Share of the cross-attention per token of \"{BASE}\" (uniform: {1 / len(tokens):.3f}):", "",
                  "| t | " + " | ".join(tok.split(":", 1)[1] for tok in tokens) + " | one image token: largest weight | "
                  "entropy (1 = uniform) |",
                  "| --- |" + " ---: |" * (len(tokens) + 2)]
        lines += [f"| {t} | " + " | ".join(f"{m['attention'][str(t)][tok]:.3f}" for tok in tokens)
                  + f" | {m['attention_spread'][str(t)]['max_weight']:.3f} | {m['attention_spread'][str(t)]['entropy']:.3f} |"
                  for t in TIMES]
        lines += ["", (f"Placement ({args.seeds} seeds x {len(PAIRS)} object pairs per relation, the same "
                       "seeds for every relation):"), "",
                  "| caption relation | both objects found | first left of second | first above second |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {rel} | {p['both_found']}/{p['images']} | {p['first_left_of_second']} | "
                  f"{p['first_above_second']} |" for rel, p in m["placement"].items()]
        lines.append("")
    write_results("sana_relation_probe" + ("_quick" if args.quick else ""), result, "\n".join(lines),
                  out_dir=args.results, default_dir=RESULTS, env=environment("cpu"),
                  title="Does the DiT act on the relation word?")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
