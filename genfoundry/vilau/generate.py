"""Decoding: KV-cached LLM streams, depth-wise code sampling with CFG, greedy/sampled text answers."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genfoundry.vilau.model import Segment, VilaU


@dataclass
class Sampling:
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int | None = 900
    top_p: float | None = 0.96

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 (or None), got {self.top_k!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p}")


def check_cfg(cfg: float) -> float:
    if not isinstance(cfg, (int, float)) or isinstance(cfg, bool) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg (classifier-free guidance scale) must be a finite number >= 0, got {cfg!r}")
    return float(cfg)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    if seed is None:
        seed = random.SystemRandom().randrange(2**63)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and outside the smallest set with mass >= top_p."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """logits [N, K] -> token ids [N]."""
    logits = logits.float()
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _cache_argument(model_class: type) -> str:
    """transformers >= 5.2x calls the KV-cache argument `cache`; earlier releases `past_key_values`."""
    import inspect

    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class DecodeStream:
    """A batch of sequences decoded together; prompts are left-padded (masked), so every row's next
    position is the last column. With `use_cache` the keys/values of earlier positions are kept;
    without, every step re-runs the whole sequence. RoPE attention only sees relative positions, so
    left padding does not change a row's result.

    backend "lean" (default where the LLM is Llama-style): genfoundry.vilau.decoder, a preallocated
    cache and no per-step framework overhead; "transformers": the model's own forward with a
    DynamicCache (the reference the lean decoder is tested against).
    """

    BACKENDS = ("lean", "transformers")

    def __init__(self, model: VilaU, use_cache: bool = True, backend: str | None = None) -> None:
        from genfoundry.vilau import decoder

        llm = model.llm.model
        if backend is None:
            backend = "lean" if decoder.supports(llm) else "transformers"
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown decoding backend {backend!r}; expected one of: {', '.join(self.BACKENDS)}")
        self.model = model
        self.use_cache = use_cache
        self.backend = backend
        if backend == "lean":
            self.decoder = decoder.LlamaDecoder(llm, use_cache)
            return
        from transformers import DynamicCache

        self.mask: torch.Tensor | None = None  # every row's padding mask so far (the decoder keeps its own)
        self.cache = DynamicCache() if use_cache else None
        self.cache_arg = _cache_argument(type(llm))
        self.embeds: list[torch.Tensor] = []

    def feed(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """embeds [B, n, H] (mask [B, n], 0 = left padding) appended -> last position's hidden [B, H]."""
        b, n = embeds.shape[:2]
        if mask is None:
            mask = torch.ones((b, n), dtype=torch.long, device=embeds.device)
        if self.backend == "lean":
            return self.decoder.feed(embeds, mask)[:, -1]
        self.mask = mask if self.mask is None else torch.cat([self.mask, mask], dim=1)
        # Without padding the causal mask alone is exact; skipping the padding mask keeps the fast path.
        attention = None if bool(self.mask.all()) else self.mask
        llm = self.model.llm.model
        if self.use_cache:
            out = llm(inputs_embeds=embeds, attention_mask=attention, use_cache=True,
                      **{self.cache_arg: self.cache})  # the cache grows in place
        else:
            self.embeds.append(embeds)
            out = llm(inputs_embeds=torch.cat(self.embeds, dim=1), attention_mask=attention, use_cache=False)
        return out.last_hidden_state[:, -1]

    def feed_tokens(self, ids: list[list[int]]) -> torch.Tensor:
        """Token ids per row (rows may differ in length: left-padded) -> last hidden [B, H]."""
        width = max(len(r) for r in ids)
        pad = self.model.pad_id
        t = torch.tensor([[pad] * (width - len(r)) + list(r) for r in ids], dtype=torch.long, device=self.model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], dtype=torch.long,
                            device=self.model.device)
        return self.feed(self.model.embed_inputs(t), mask)


def sample_codes(model: VilaU, hidden: torch.Tensor, cfg: float | None, sampling: Sampling,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Sample the D codes of one position per row, depth by depth.

    hidden [B, H] (no CFG) or [2B, H] = conditional rows then unconditional rows (CFG on the logits at
    every depth: uncond + cfg * (cond - uncond)) -> codes [B, D].
    """
    depth = model.config.tower.depth
    rows = hidden.shape[0] // 2 if cfg is not None else hidden.shape[0]
    codes = torch.zeros((rows, 0), dtype=torch.long, device=hidden.device)
    for _ in range(depth):
        prefix = None
        if codes.shape[1]:
            prefix = model.tower.quantizer.partial_sums(codes)
            if cfg is not None:
                prefix = torch.cat([prefix, prefix], 0)
        logits = model.depth_transformer(hidden, prefix, last_only=True).float()
        if cfg is not None:
            logits = logits[rows:] + cfg * (logits[:rows] - logits[rows:])
        codes = torch.cat([codes, sample_next(logits, sampling, generator)[:, None]], dim=1)
    return codes


@torch.no_grad()
def generate_codes(model: VilaU, prompt: str | list[str], frames: int | None = None, cfg: float = 3.0,
                   seed: int | None = None, top_k: int | None = 900, top_p: float | None = 0.96,
                   temperature: float = 1.0, use_cache: bool = True, progress: bool = False,
                   backend: str | None = None, candidates: int = 1, rank_by: str = "caption+answers") -> torch.Tensor:
    """Caption(s) -> codes [B, frames or 1, h, w, D] (one image each when `frames` is None).
    `backend`: the LLM decoding path (see DecodeStream; None = the lean decoder where it applies).
    `candidates` > 1 (images only): draw that many images per caption, decoded together as one batch,
    and keep the best by `rank_by` (see RANKERS): "caption+answers" (the default), the model's own
    likelihood of the caption given the image plus that of the answers the caption implies
    (`caption_and_answer_log_likelihoods`); "caption" or "answers", either alone; "alignment", the vision
    tower's text-alignment head (`alignment_scores`). 1 keeps the first draw, exactly what the same seed
    gave before."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("prompt is empty; give a caption such as 'a red circle' (use cfg=0 for unconditional)")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer (images drawn per caption), got {candidates!r}")
    if candidates > 1 and frames is not None:
        raise ValueError("candidates > 1 applies to images only: the rankers score single images, not clips")
    if rank_by not in RANKERS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKERS)}, got {rank_by!r}")
    if candidates > 1 and not model.ranks_candidates:
        raise ValueError("candidates > 1 needs a ShapeWorld model: the rankers ask ShapeWorld questions in its "
                         "prompt format; draw one image (candidates=1)")
    if candidates > 1 and rank_by == "answers":
        _caption_questions(prompts, strict=True)  # before drawing: the ranker needs ShapeWorld captions
    cfg = check_cfg(cfg)
    sampling = Sampling(temperature, top_k, top_p)
    if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool) or frames < 1):
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    model.eval()
    drawn = [p for p in prompts for _ in range(candidates)]
    codes = _decode_codes(model, drawn, frames, cfg, make_generator(seed, model.device), sampling, use_cache,
                          progress, backend)
    if candidates == 1:
        return codes
    scores = RANKERS[rank_by](model, codes[:, 0], drawn).reshape(len(prompts), candidates)
    best = scores.argmax(1).cpu() + torch.arange(len(prompts)) * candidates
    return codes[best]


@torch.no_grad()
def alignment_scores(model: VilaU, codes: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """How well each image's codes [B, h, w, D] match its caption, [B]: the cosine similarity of the
    tower's text-alignment embeddings (the zero-shot retrieval score). The codes are decoded to pixels
    and encoded again first, so the head scores the image as drawn, on the kind of features it was
    trained on (sampled codes off the encoder's manifold mislead it more)."""
    tower = model.tower.eval()
    image = tower.image_embedding(tower.detokenize(codes.to(model.device)))
    text = tower.text_embedding(model.caption_ids(prompts))
    return (image * text).sum(-1).float()


def _reencoded(model: VilaU, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    """codes [B, h, w, D] -> the codes of their decoded images, tokenized again (what the LLM reads when
    a user asks about the image as drawn)."""
    tower = model.tower.eval()
    return torch.cat([tower.tokenize(tower.detokenize(codes[i:i + batch_size].to(model.device))).cpu()
                      for i in range(0, len(codes), batch_size)])


def _text_log_likelihoods(model: VilaU, codes: torch.Tensor, contexts: list[list[int]],
                          targets: list[list[int]], batch_size: int) -> torch.Tensor:
    """Per row: the summed log-probability of the `targets` token ids after [image codes, `contexts` ids]."""
    out = []
    for i in range(0, len(targets), batch_size):
        seqs = []
        for c, context, target in zip(codes[i:i + batch_size], contexts[i:i + batch_size], targets[i:i + batch_size]):
            segments = [Segment("image", c)] + ([Segment("text", context)] if context else [])
            seqs.append(model.build_sequence(segments + [Segment("text", target, train=True)]))
        batch = model.collate(seqs).to(model.device)
        emb = model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask)
        hidden = model.llm.model(inputs_embeds=emb, attention_mask=batch.attention_mask).last_hidden_state
        logits = model.llm.lm_head(hidden[:, :-1]).float()
        nll = F.cross_entropy(logits.transpose(1, 2), batch.text_labels[:, 1:], reduction="none")  # 0 at -100
        out.append(-nll.sum(1).cpu())
    return torch.cat(out)


def _check_codes(codes: torch.Tensor, prompts: list[str]) -> None:
    if codes.ndim != 4 or len(codes) != len(prompts):
        raise ValueError(f"need codes [B, h, w, D] and one caption per image, got {tuple(codes.shape)} and "
                         f"{len(prompts)} captions")


@torch.no_grad()
def caption_log_likelihoods(model: VilaU, codes: torch.Tensor, prompts: list[str], reencode: bool = True,
                            batch_size: int = 64) -> torch.Tensor:
    """How likely the model itself finds each caption given its image, [B]: the summed log-probability of
    the caption's tokens and <eos> after the image, exactly the [image, caption] sequence the captioning
    loss trains on. `reencode`: decode the codes [B, h, w, D] to pixels and tokenize them again first, so
    the LLM reads the image as drawn (the codes a user asking about it would give)."""
    _check_codes(codes, prompts)
    model.eval()
    if reencode:
        codes = _reencoded(model, codes, batch_size)
    eos = model.tokenizer.eos_token_id
    return _text_log_likelihoods(model, codes.cpu(), [[] for _ in prompts],
                                 [model.text_ids(p) + [eos] for p in prompts], batch_size)


def _caption_questions(prompts: list[str], strict: bool) -> list[list[tuple[str, str]]]:
    """`genfoundry.shapes.caption_questions` of every caption; outside the ShapeWorld grammar a clear
    error (`strict`) or no questions."""
    from genfoundry.shapes.grammar import CaptionError
    from genfoundry.shapes.qa import caption_questions

    asked = []
    for p in prompts:
        try:
            asked.append(caption_questions(p))
        except CaptionError as err:
            if strict:
                raise ValueError(f"rank_by='answers' needs ShapeWorld captions (it asks the questions they "
                                 f"fix): {err}") from None
            asked.append([])
    return asked


@torch.no_grad()
def answer_log_likelihoods(model: VilaU, codes: torch.Tensor, prompts: list[str], reencode: bool = True,
                           batch_size: int = 64, strict: bool = True) -> torch.Tensor:
    """How sure the model itself is that each image shows its caption, asked the caption's questions
    [B]: the summed log-probability, over `genfoundry.shapes.caption_questions(caption)` (colours,
    shapes, counts, existence and the relation: what any image of the caption must answer), of the
    expected answer and <eos> after [image, question], the sequences its VQA loss trains on. ShapeWorld
    captions only: a clear error for any other, or with `strict=False` a score of 0 (no question to
    ask); `reencode` as in `caption_log_likelihoods`."""
    _check_codes(codes, prompts)
    asked = _caption_questions(prompts, strict)
    if not any(asked):
        return torch.zeros(len(prompts))
    model.eval()
    if reencode:
        codes = _reencoded(model, codes, batch_size)
    eos = model.tokenizer.eos_token_id
    image = [i for i, qa in enumerate(asked) for _ in qa]
    pairs = [pair for qa in asked for pair in qa]
    scores = _text_log_likelihoods(model, codes.cpu()[image], [model.text_ids(q) for q, _ in pairs],
                                   [model.text_ids(a) + [eos] for _, a in pairs], batch_size)
    return torch.zeros(len(prompts)).index_add_(0, torch.tensor(image), scores)


@torch.no_grad()
def caption_and_answer_log_likelihoods(model: VilaU, codes: torch.Tensor, prompts: list[str],
                                       batch_size: int = 64) -> torch.Tensor:
    """The model's log-likelihood of the caption plus that of the caption's answers, [B]: how sure it
    is, read as one sum of log-probabilities, that the image shows the caption. A caption outside the
    ShapeWorld grammar has no questions, so it is scored by its likelihood alone."""
    _check_codes(codes, prompts)
    codes = _reencoded(model.eval(), codes, batch_size)  # once for both
    return (caption_log_likelihoods(model, codes, prompts, reencode=False, batch_size=batch_size)
            + answer_log_likelihoods(model, codes, prompts, reencode=False, batch_size=batch_size, strict=False))


# How generate_codes ranks candidates: name -> scorer(model, codes [B, h, w, D], captions) -> [B], higher
# is better. Best of 8 on 200 validation prompts (benchmarks/results/vilau_best_of_answers.md): caption +
# answers 0.770, answers 0.765, caption 0.725, alignment 0.720, the first draw 0.505.
RANKERS = {"caption+answers": caption_and_answer_log_likelihoods, "caption": caption_log_likelihoods,
           "answers": answer_log_likelihoods, "alignment": alignment_scores}
DEFAULT_RANKER = "caption+answers"


def _decode_codes(model: VilaU, prompts: list[str], frames: int | None, cfg: float, generator: torch.Generator,
                  sampling: Sampling, use_cache: bool, progress: bool, backend: str | None) -> torch.Tensor:
    rows = [model.generation_prompt_ids(p, video=bool(frames)) for p in prompts]
    guided = cfg != 1.0  # cfg = 1 is the plain conditional distribution: skip the unconditional rows
    if guided:
        rows += [model.generation_prompt_ids(None, video=bool(frames))] * len(prompts)
    stream = DecodeStream(model, use_cache, backend)
    hidden = stream.feed_tokens(rows)
    g, depth = model.config.tower.grid, model.config.tower.depth
    n_frames, b = frames or 1, len(prompts)
    out = torch.zeros((b, n_frames, g * g, depth), dtype=torch.long)
    bar = tqdm(total=n_frames * g * g, desc="image tokens", disable=not progress, leave=False)
    separator = model.frame_separator_ids()
    for f in range(n_frames):
        if f and separator:
            hidden = stream.feed_tokens([separator] * len(rows))
        for p in range(g * g):
            codes = sample_codes(model, hidden, cfg if guided else None, sampling, generator)
            out[:, f, p] = codes.cpu()
            bar.update(1)
            if p == g * g - 1 and f == n_frames - 1:
                break  # the last position's embedding is never needed
            emb = model.image_embeddings(codes, p)
            if guided:
                emb = torch.cat([emb, emb], 0)
            hidden = stream.feed(emb[:, None])
    bar.close()
    return out.reshape(b, n_frames, g, g, depth)


def generate_images(model: VilaU, prompt: str | list[str], frames: int | None = None, **kwargs) -> list:
    """Caption(s) -> one PIL image per caption, or one list of frames per caption when `frames` is set."""
    codes = generate_codes(model, prompt, frames=frames, **kwargs)
    results = [[model.detokenize(c) for c in clip] for clip in codes]
    return results if frames else [r[0] for r in results]


def encode_visual(model: VilaU, image) -> Segment:
    """An image (or a list/tuple of frames = a video) -> its segment of codes."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("a video needs at least one frame")
        return Segment("video", [model.tokenize_image(f) for f in image])
    return Segment("image", model.tokenize_image(image))


@torch.no_grad()
def generate_text(model: VilaU, stream: DecodeStream, hidden: torch.Tensor, max_new_tokens: int,
                  sampling: Sampling, generator: torch.Generator | None) -> list[list[int]]:
    """Continue every row of a primed stream with text tokens until <eos> or max_new_tokens."""
    eos = model.tokenizer.eos_token_id
    b = hidden.shape[0]
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    for _ in range(max_new_tokens):
        tokens = sample_next(model.llm.lm_head(hidden), sampling, generator).tolist()
        for i, t in enumerate(tokens):
            if not done[i]:
                if t == eos:
                    done[i] = True
                else:
                    out[i].append(t)
        if all(done):
            break
        hidden = stream.feed_tokens([[t] for t in tokens])
    return out


@torch.no_grad()
def answer_batch(model: VilaU, images: list, questions: list[str], max_new_tokens: int = 32,
                 temperature: float = 0.0, top_p: float | None = 0.6, seed: int | None = None,
                 use_cache: bool = True) -> list[str]:
    """Answer one question per image (an image may be a list of frames = a video). Greedy by default."""
    if len(images) != len(questions) or not images:
        raise ValueError(f"need one question per image, got {len(images)} images and {len(questions)} questions")
    for q in questions:
        if not isinstance(q, str) or not q.strip():
            raise ValueError("question is empty; ask e.g. 'what color is the circle?'")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    sampling = Sampling(temperature, None, top_p)
    model.eval()
    seqs = [model.build_sequence(model.question_segments(encode_visual(model, img), q.strip()))
            for img, q in zip(images, questions)]
    width = max(len(s["ids"]) for s in seqs)
    padded = [model.left_pad(s, width, model.pad_id) for s in seqs]  # every row ends at the last column
    batch = model.collate(padded).to(model.device)
    mask = torch.tensor([[0] * (width - len(s["ids"])) + [1] * len(s["ids"]) for s in seqs], device=model.device)
    stream = DecodeStream(model, use_cache)
    hidden = stream.feed(model.embed_inputs(batch.input_ids, batch.image_codes, batch.image_mask), mask)
    tokens = generate_text(model, stream, hidden, max_new_tokens, sampling, make_generator(seed, model.device))
    return [model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]


def answer(model: VilaU, image, question: str, **kwargs) -> str:
    return answer_batch(model, [image], [question], **kwargs)[0]
