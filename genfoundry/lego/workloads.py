"""Workloads: spec strings (`gemm:MxNxK`, `conv2d:CxHxWxKxRxS`, ...), their numpy references, and
the GEMM / conv / attention shapes of the models genfoundry implements.

Spec strings and tensor names (inputs -> outputs):

  gemm:MxNxK[:wB]            A [M,K], B [K,N] (B-bit, default 8) -> C [M,N]
  bgemm:BxMxNxK              A [B,M,K], B [B,K,N]            -> C [B,M,N]
  conv2d:CxHxWxKxRxS[:sT]    X [C,H,W], W [K,C,R,S] (stride T, no padding) -> Y [K,OH,OW]
  dwconv:CxHxWxRxS[:sT]      X [C,H,W], W [C,R,S]            -> Y [C,OH,OW]   (depthwise)
  attn:NxMxD                 Q [N,D], K [M,D]                -> S [N,M]       (score GEMM Q K^T)
  linattn:NxDxE              K [N,D], V [N,E], Q [N,D]       -> KV [D,E], O [N,E]  (ReLU linear attention core)
  mttkrp:IxJxKxL             A [I,K,L], B [K,J], C [L,J]     -> D [I,J]
  svdq:MxNxKxR[:rB]          X [M,K] int4, W [K,N] int4, L [M,R], U [R,N] (B-bit, default 16) -> Y = X W + L U

Inputs are int8 unless noted; outputs int32 (two's complement wrap-around, as the hardware).
Model shapes (`model:sana-0.6b`, `model:vila-u`, `model:dc-ae`) are returned by `model_layers` as
(name, spec, count) rows; they come from the named configs of genfoundry.sana when that package
exposes them and otherwise from the published numbers (REFERENCE.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .ir import LegoError, Stage, Workload, parse_stage, tensor_extent


def _dims(text: str, n: int, kind: str, fmt: str) -> list[int]:
    parts = text.split("x")
    if len(parts) != n or not all(re.fullmatch(r"\d+", p) for p in parts) or any(int(p) < 1 for p in parts):
        raise LegoError(f"workload {kind}:{text!r}: expected {fmt} with {n} positive integers")
    return [int(p) for p in parts]


def _workload(name: str, stages: list[Stage], widths: dict[str, int], inputs: tuple, outputs: tuple,
              shapes: dict[str, tuple] | None = None) -> Workload:
    sh: dict[str, tuple[int, ...]] = dict(shapes or {})
    for st in stages:
        for acc in (*st.inputs, st.output):
            sh.setdefault(acc.tensor, tensor_extent(st, acc))
    return Workload(name, tuple(stages), sh, widths, inputs, outputs)


def _width_suffix(spec: str, rest: str, letter: str, what: str, default: int) -> tuple[str, int]:
    """'SHAPE:{letter}B' -> (SHAPE, B) with B in 2..16 bits; 'SHAPE' -> (SHAPE, default)."""
    if ":" not in rest:
        return rest, default
    rest, suffix = rest.split(":", 1)
    if not re.fullmatch(letter + r"\d+", suffix) or not 2 <= int(suffix[1:]) <= 16:
        raise LegoError(f"workload {spec!r}: {what} suffix must look like ':{letter}{4 if letter == 'w' else 8}' "
                        "(2 to 16 bits)")
    return rest, int(suffix[1:])


def parse_workload(spec: str) -> Workload:
    if ":" not in spec:
        raise LegoError(f"workload {spec!r}: expected KIND:SHAPE, e.g. gemm:64x64x64 or conv2d:3x8x8x4x3x3")
    kind, rest = spec.split(":", 1)
    stride = 1
    if kind in ("conv2d", "dwconv") and ":" in rest:
        rest, st = rest.split(":", 1)
        if not re.fullmatch(r"s\d+", st) or int(st[1:]) < 1:
            raise LegoError(f"workload {spec!r}: stride suffix must look like ':s2'")
        stride = int(st[1:])
    if kind == "gemm":
        rest, bits = _width_suffix(spec, rest, "w", "operand-width", 8)
        M, N, K = _dims(rest, 3, kind, "MxNxK")
        st = parse_stage("C[m,n] += A[m,k] * B[k,n]", {"m": M, "n": N, "k": K}, "gemm", ("m", "n", "k"))
        return _workload(spec, [st], {"A": bits, "B": bits, "C": 32}, ("A", "B"), ("C",))
    if kind == "bgemm":
        Bt, M, N, K = _dims(rest, 4, kind, "BxMxNxK")
        st = parse_stage("C[b,m,n] += A[b,m,k] * B[b,k,n]", {"b": Bt, "m": M, "n": N, "k": K}, "bgemm", ("m", "n", "k"))
        return _workload(spec, [st], {"A": 8, "B": 8, "C": 32}, ("A", "B"), ("C",))
    if kind == "conv2d":
        C, H, W, K, R, S = _dims(rest, 6, kind, "CxHxWxKxRxS")
        if R > H or S > W:
            raise LegoError(f"workload {spec!r}: filter {R}x{S} larger than the input {H}x{W}")
        OH, OW = (H - R) // stride + 1, (W - S) // stride + 1
        st = parse_stage(f"Y[k,oy,ox] += X[c,{stride}*oy+r,{stride}*ox+s] * W[k,c,r,s]",
                         {"k": K, "oy": OH, "ox": OW, "c": C, "r": R, "s": S}, "conv2d", ("k", "ox", "c"))
        return _workload(spec, [st], {"X": 8, "W": 8, "Y": 32}, ("X", "W"), ("Y",),
                         {"X": (C, H, W), "W": (K, C, R, S), "Y": (K, OH, OW)})
    if kind == "dwconv":
        C, H, W, R, S = _dims(rest, 5, kind, "CxHxWxRxS")
        if R > H or S > W:
            raise LegoError(f"workload {spec!r}: filter {R}x{S} larger than the input {H}x{W}")
        OH, OW = (H - R) // stride + 1, (W - S) // stride + 1
        st = parse_stage(f"Y[c,oy,ox] += X[c,{stride}*oy+r,{stride}*ox+s] * W[c,r,s]",
                         {"c": C, "oy": OH, "ox": OW, "r": R, "s": S}, "dwconv", ("c", "ox", "r"))
        return _workload(spec, [st], {"X": 8, "W": 8, "Y": 32}, ("X", "W"), ("Y",),
                         {"X": (C, H, W), "W": (C, R, S), "Y": (C, OH, OW)})
    if kind == "attn":
        N, M, D = _dims(rest, 3, kind, "NxMxD")
        st = parse_stage("S[i,j] += Q[i,d] * K[j,d]", {"i": N, "j": M, "d": D}, "scores", ("i", "j", "d"))
        return _workload(spec, [st], {"Q": 8, "K": 8, "S": 32}, ("Q", "K"), ("S",))
    if kind == "linattn":
        N, D, E = _dims(rest, 3, kind, "NxDxE")
        s1 = parse_stage("KV[d,e] += K[n,d] * V[n,e]", {"d": D, "e": E, "n": N}, "kv", ("d", "e", "n"))
        s2 = parse_stage("O[n,e] += Q[n,d] * KV[d,e]", {"n": N, "e": E, "d": D}, "qkv", ("n", "e", "d"))
        return _workload(spec, [s1, s2], {"K": 8, "V": 8, "Q": 8, "KV": 32, "O": 32}, ("K", "V", "Q"), ("KV", "O"))
    if kind == "mttkrp":
        I, J, K, L = _dims(rest, 4, kind, "IxJxKxL")
        st = parse_stage("D[i,j] += A[i,k,l] * B[k,j] * C[l,j]", {"i": I, "j": J, "k": K, "l": L}, "mttkrp", ("i", "j", "k"))
        return _workload(spec, [st], {"A": 8, "B": 8, "C": 8, "D": 32}, ("A", "B", "C"), ("D",))
    if kind == "svdq":
        rest, lowrank_bits = _width_suffix(spec, rest, "r", "low-rank width", 16)
        M, N, K, R = _dims(rest, 4, kind, "MxNxKxR")
        s1 = parse_stage("Y[m,n] += X[m,k] * W[k,n]", {"m": M, "n": N, "k": K}, "w4a4", ("m", "n", "k"))
        s2 = parse_stage("Y[m,n] += L[m,r] * U[r,n]", {"m": M, "n": N, "r": R}, "lowrank", ("m", "n", "r"))
        return _workload(spec, [s1, s2], {"X": 4, "W": 4, "L": lowrank_bits, "U": lowrank_bits, "Y": 32}, ("X", "W", "L", "U"), ("Y",))
    raise LegoError(f"workload {spec!r}: unknown kind {kind!r}; expected one of gemm, bgemm, conv2d, dwconv,"
                    " attn, linattn, mttkrp, svdq (or model:NAME on the command line)")


def wrap32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int64).astype(np.uint64).astype(np.uint32).astype(np.int32) if x.dtype != np.int32 else x


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    m = 1 << bits
    return ((x + (m >> 1)) % m) - (m >> 1)


def reference(workload: Workload, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Numpy reference of every stage (int64 arithmetic, wrapped to each tensor's width)."""
    env = {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}
    for st in workload.stages:
        idx = np.stack(np.meshgrid(*[np.arange(b) for b in st.bounds], indexing="ij"), axis=0).reshape(len(st.bounds), -1)
        prod = np.ones(idx.shape[1], dtype=np.int64)
        for acc in st.inputs:
            coords = acc.A @ idx + acc.b[:, None]
            prod = prod * env[acc.tensor][tuple(coords)]
        oc = st.output.A @ idx + st.output.b[:, None]
        out = env.get(st.output.tensor)
        if out is None or st.output.tensor not in [s.output.tensor for s in workload.stages[: workload.stages.index(st)]]:
            out = np.zeros(workload.shapes[st.output.tensor], dtype=np.int64)
        np.add.at(out, tuple(oc), prod)
        env[st.output.tensor] = wrap(out, workload.widths[st.output.tensor])
    return {k: env[k].astype(np.int32) if workload.widths[k] <= 32 else env[k] for k in workload.outputs}


def random_inputs(workload: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in workload.inputs:
        w = workload.widths[name]
        lo, hi = -(1 << (w - 1)), (1 << (w - 1))
        out[name] = rng.integers(lo, hi, size=workload.shapes[name]).astype(np.int32 if w > 8 else np.int8)
    return out


# ----------------------------------------------------------------------------------------------
# Model shapes


@dataclass(frozen=True)
class Layer:
    name: str
    spec: str
    count: int  # how many times the layer runs per forward pass
    # its input is the text alone (the cross-attention keys/values of a diffusion model), so a sampler
    # computes it once per generated image, not at every denoising step (genfoundry.sana does)
    once_per_image: bool = False


def generation_cycles(rows: list[tuple[Layer, int]], steps: int) -> int:
    """Cycles of a `steps`-step generation from (layer, cycles of one run) rows: the per-step layers
    every step, the `once_per_image` ones once."""
    return sum(layer.count * cycles * (1 if layer.once_per_image else steps) for layer, cycles in rows)


# Published configurations (REFERENCE.md); used when genfoundry.sana does not expose named configs.
SANA_0_6B = {"depth": 28, "hidden": 1152, "mlp_ratio": 2.5, "heads": 36, "head_dim": 32, "cross_heads": 16,
             "cross_head_dim": 72, "latent_hw": 32, "patch": 1, "text_len": 300}
VILA_U_LLM = {"layers": 32, "hidden": 4096, "ffn": 11008, "heads": 32, "seq": 1024}
DC_AE_F32 = {"stages": [(128, 1024), (256, 512), (512, 256), (512, 128), (1024, 64), (1024, 32)]}


def _sana_config() -> dict:
    cfg = dict(SANA_0_6B)
    try:  # the model package is optional; read only its named config numbers
        import importlib

        tr = importlib.import_module("genfoundry.sana.transformer")
        c = tr.NAMED_CONFIGS["sana-0.6b"]
        cfg.update(depth=c.num_layers, hidden=c.inner_dim, mlp_ratio=c.mlp_ratio, heads=c.num_attention_heads,
                   head_dim=c.attention_head_dim, cross_heads=c.num_cross_attention_heads,
                   cross_head_dim=c.cross_attention_head_dim, latent_hw=c.sample_size, patch=c.patch_size)
    except Exception:  # noqa: BLE001 - fall back to the published numbers
        pass
    cfg["ffn"] = int(round(cfg["hidden"] * cfg["mlp_ratio"]))
    return cfg


def trace(module, *args) -> list[Layer]:
    """Run `module(*args)` once and record every nn.Linear / nn.Conv2d call as a workload spec."""
    import torch

    rows: list[Layer] = []
    hooks = []

    def on_call(name):
        def hook(mod, inp, out):
            x = inp[0]
            if isinstance(mod, torch.nn.Linear):
                m = int(x.numel() // x.shape[-1])
                rows.append(Layer(name, f"gemm:{m}x{mod.out_features}x{mod.in_features}", 1))
            elif isinstance(mod, torch.nn.Conv2d):
                C, H, W = int(x.shape[-3]), int(x.shape[-2]), int(x.shape[-1])
                ph, pw = (mod.padding if isinstance(mod.padding, tuple) else (0, 0))
                R, S = mod.kernel_size
                st = mod.stride[0]
                b = int(x.numel() // (C * H * W))
                if mod.groups == C and mod.out_channels == C and C > 1:
                    rows.append(Layer(name, f"dwconv:{C}x{H + 2 * ph}x{W + 2 * pw}x{R}x{S}" + (f":s{st}" if st > 1 else ""), b))
                elif mod.groups == 1:
                    rows.append(Layer(name, f"conv2d:{C}x{H + 2 * ph}x{W + 2 * pw}x{mod.out_channels}x{R}x{S}"
                                      + (f":s{st}" if st > 1 else ""), b))
        return hook

    for name, mod in module.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            hooks.append(mod.register_forward_hook(on_call(name)))
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    return rows


def model_layers(name: str) -> list[Layer]:
    """Every GEMM / conv / attention shape of one forward pass of a model."""
    name = name.lower()
    if name in ("sana-0.6b", "sana"):
        c = _sana_config()
        T = c["latent_hw"] ** 2 // c["patch"] ** 2
        D, F, L = c["hidden"], c["ffn"], c["depth"]
        hd, H = c["head_dim"], c["heads"]
        chd, CH = c["cross_head_dim"], c["cross_heads"]
        Lt = c["text_len"]
        return [
            Layer("self-attn qkv", f"gemm:{T}x{3 * D}x{D}", L),
            Layer("linear attn K^T V (per head)", f"gemm:{hd}x{hd}x{T}", L * H),
            Layer("linear attn Q (K^T V) (per head)", f"gemm:{T}x{hd}x{hd}", L * H),
            Layer("self-attn out", f"gemm:{T}x{D}x{D}", L),
            Layer("cross-attn q", f"gemm:{T}x{D}x{D}", L),
            Layer("cross-attn kv", f"gemm:{Lt}x{2 * D}x{D}", L, once_per_image=True),
            Layer("cross-attn scores (per head)", f"attn:{T}x{Lt}x{chd}", L * CH),
            Layer("cross-attn PV (per head)", f"gemm:{T}x{chd}x{Lt}", L * CH),
            Layer("cross-attn out", f"gemm:{T}x{D}x{D}", L),
            Layer("Mix-FFN inverted conv 1x1", f"gemm:{T}x{2 * F}x{D}", L),
            Layer("Mix-FFN depthwise 3x3", f"dwconv:{2 * F}x{c['latent_hw'] + 2}x{c['latent_hw'] + 2}x3x3", L),
            Layer("Mix-FFN point conv 1x1", f"gemm:{T}x{D}x{F}", L),
        ]
    if name in ("vila-u", "vila-u-llm"):
        c = VILA_U_LLM
        S, D, F, L = c["seq"], c["hidden"], c["ffn"], c["layers"]
        hd = D // c["heads"]
        return [
            Layer("qkv", f"gemm:{S}x{3 * D}x{D}", L),
            Layer("scores (per head)", f"attn:{S}x{S}x{hd}", L * c["heads"]),
            Layer("PV (per head)", f"gemm:{S}x{hd}x{S}", L * c["heads"]),
            Layer("out proj", f"gemm:{S}x{D}x{D}", L),
            Layer("mlp gate+up", f"gemm:{S}x{2 * F}x{D}", L),
            Layer("mlp down", f"gemm:{S}x{D}x{F}", L),
        ]
    if name in ("dc-ae", "dcae"):
        rows = []
        for i, (ch, hw) in enumerate(DC_AE_F32["stages"]):
            rows.append(Layer(f"decoder stage {i} conv3x3", f"conv2d:{ch}x{hw + 2}x{hw + 2}x{ch}x3x3", 2))
        return rows
    if name in ("sana-svdq", "svdquant", "sana-svdq-r8"):
        # SANA-0.6B as SVDQuant deploys it: the linears on image tokens are W4A4 with a rank-32 int16
        # branch (its down projection X L1 is its own int16 GEMM); the cross-attention K/V projections
        # of the text stay 16-bit; attention products and the depthwise conv as in sana-0.6b (int8).
        # sana-svdq-r8: the same with the low-rank branch in int8 (both of its GEMMs)
        bits = 8 if name == "sana-svdq-r8" else 16
        c = _sana_config()
        T, D, F, R = c["latent_hw"] ** 2, c["hidden"], c["ffn"], 32
        quantized = {"self-attn qkv": (3 * D, D), "self-attn out": (D, D), "cross-attn q": (D, D),
                     "cross-attn out": (D, D), "Mix-FFN inverted conv 1x1": (2 * F, D),
                     "Mix-FFN point conv 1x1": (D, F)}
        rows = []
        for layer in model_layers("sana-0.6b"):
            if layer.name == "cross-attn kv":
                rows.append(Layer(f"{layer.name} (int16)", f"{layer.spec}:w16", layer.count, once_per_image=True))
                continue
            if layer.name not in quantized:
                rows.append(layer)
                continue
            N, K = quantized[layer.name]
            rows.append(Layer(f"{layer.name} low-rank down (int{bits})", f"gemm:{T}x{R}x{K}:w{bits}", layer.count))
            rows.append(Layer(f"{layer.name} W4A4 + low-rank up", f"svdq:{T}x{N}x{K}x{R}" + (":r8" if bits == 8 else ""),
                              layer.count))
        return rows
    raise LegoError(f"unknown model {name!r}; expected sana-0.6b, vila-u, dc-ae, sana-svdq or sana-svdq-r8")
