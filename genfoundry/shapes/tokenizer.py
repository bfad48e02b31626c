"""A word-level tokenizer over the ShapeWorld vocabulary (built with `tokenizers`, used via transformers).

Every caption and QA word gets one id, plus the punctuation "?" and "." and the special tokens
<pad> <bos> <eos> <unk>. Encoding prepends <bos> (as Gemma's tokenizer does); text is lower-cased.
`tokenizer.save_pretrained(folder)` writes `tokenizer.json`, which `PreTrainedTokenizerFast` and
`AutoTokenizer` load back.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PUNCTUATION = ("?", ".")


def build_tokenizer(extra_special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """The ShapeWorld word-level tokenizer; `extra_special_tokens` (e.g. image markers) get the next ids."""
    from genfoundry.shapes import vocabulary

    extra = list(dict.fromkeys(extra_special_tokens))
    clash = [t for t in extra if t in SPECIAL_TOKENS]
    if clash:
        raise ValueError(f"extra special tokens {clash} clash with the built-in ones {list(SPECIAL_TOKENS)}")
    words = sorted({w.lower() for w in vocabulary()} | set(PUNCTUATION))
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *extra, *words]:
        vocab.setdefault(token, len(vocab))

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs: "square?" -> square, ?
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # join with spaces, no space before "?"
    tok.add_special_tokens(list(SPECIAL_TOKENS) + extra)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=extra or None,
        padding_side="right",
        model_max_length=64,
    )


def out_of_vocabulary(text: str, tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The distinct words of `text` (after lower-casing) that `tokenizer` maps to <unk>, in order."""
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
    pieces = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(normalized, None)]
    vocab = tokenizer.get_vocab()
    unknown = [word for word, _ in pieces if word not in vocab]
    return list(dict.fromkeys(unknown))
