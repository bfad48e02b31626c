"""How well does a SANA pipeline's text encoder tell apart the words the DiT must act on?

For pairs of words that the ShapeWorld grammar uses in identical contexts (left/right, above/below,
colours, shapes, numbers) it reports the cosine similarity of the text encoder's output features at
that word, in the same sentence frame. A language model trained only on these captions cannot learn
to separate such words (nothing in the text predicts one rather than the other), so their features
stay nearly parallel; the DiT then has to amplify a tiny difference. It also reports whether the
features of the second object of a relation caption depend on the relation ("a blue square" after
"to the left of" vs after "to the right of") and on word order (the first vs the second object).

    python experiments/sana_text_features.py [--model sana-shapes] [--quick]

Writes experiments/results/sana_text_features{,_quick}.{json,md} (--quick: the same measurement, which takes
seconds, under another name).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from paths import RESULTS

from genfoundry import hub
from genfoundry.sana.text_encoder import TextEncoder
from harness import environment, write_results  # noqa: E402 (benchmarks/ is on the path through paths)
PAIRS = (("left", "right"), ("above", "below"), ("red", "blue"), ("red", "green"), ("circle", "square"),
         ("two", "three"))
# (caption A, caption B, word, occurrence in A, occurrence in B, what is compared)
CONTEXTS = (
    ("a red circle to the left of a blue square", "a red circle to the right of a blue square", "square", 0, 0,
     "second object after 'left of' vs after 'right of'"),
    ("a red circle above a blue square", "a red circle below a blue square", "square", 0, 0,
     "second object after 'above' vs after 'below'"),
    ("a red circle to the left of a blue square", "a red circle to the right of a blue square", "left|right", 0, 0,
     "the relation word itself, same sentence"),
    ("a red circle to the left of a blue square", "a blue square to the left of a red circle", "circle", 0, 0,
     "the same noun as first vs second object"),
)


def word_feature(encoder: TextEncoder, caption: str, word: str, occurrence: int) -> torch.Tensor:
    features, _ = encoder.encode([caption], chi=False)
    tokens = encoder.tokenizer.convert_ids_to_tokens(encoder.tokenizer(caption).input_ids)
    positions = [i for i, t in enumerate(tokens) if t in word.split("|")]
    if len(positions) <= occurrence:
        raise ValueError(f"{word!r} occurs {len(positions)} times in {caption!r}")
    return features[0, positions[occurrence]].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sana-shapes", help="SANA pipeline folder or zoo name")
    parser.add_argument("--quick", action="store_true", help="write sana_text_features_quick (smoke test)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    root = hub.resolve(args.model)
    encoder = TextEncoder.from_pretrained(root / "text_encoder", tokenizer_path=root / "tokenizer",
                                          dtype=torch.float32, max_length=16, complex_human_instruction=None)
    cos = torch.nn.functional.cosine_similarity
    pairs = []
    for a, b in PAIRS:
        fa, fb = word_feature(encoder, f"a {a}", a, 0), word_feature(encoder, f"a {b}", b, 0)
        pairs.append({"words": f"{a} / {b}", "cosine": round(float(cos(fa, fb, dim=0)), 5)})
    contexts = []
    for cap_a, cap_b, word, occ_a, occ_b, what in CONTEXTS:
        fa, fb = word_feature(encoder, cap_a, word, occ_a), word_feature(encoder, cap_b, word, occ_b)
        contexts.append({"what": what, "a": cap_a, "b": cap_b, "cosine": round(float(cos(fa, fb, dim=0)), 6)})
    result = {"model": args.model, "word_pairs": pairs, "contexts": contexts}
    lines = ["| words (frame \"a _\") | cosine |", "| --- | ---: |"]
    lines += [f"| {p['words']} | {p['cosine']:.4f} |" for p in pairs]
    lines += ["", "| compared | cosine |", "| --- | ---: |"]
    lines += [f"| {c['what']} | {c['cosine']:.6f} |" for c in contexts]
    write_results("sana_text_features" + ("_quick" if args.quick else ""), result, "\n".join(lines),
                  out_dir=args.results, default_dir=RESULTS, env=environment("cpu"),
                  title=f"Text-encoder features of `{args.model}` (cosine similarity; 1.0 = indistinguishable)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
