"""Backend dispatch for the SVDQuant operator.

A backend is a module that provides three functions with the signatures of `reference`:
``svdq_linear``, ``quantize_act_lora_down`` and ``gemm_w4a4_lora_up``. Backends are named in
`BACKENDS` (name -> module path, imported lazily on first use). A backend module may also define
``supports(device: torch.device) -> bool``; automatic selection skips it where that returns False.

Which backend runs a call:
  1. ``backend=`` given to the call;
  2. else the one set with ``use_backend(name)`` in the current context (a `contextvars` value, so
     threads and asyncio tasks do not leak it to each other; it works as a plain call that sets the
     default for this context, and as a ``with`` block that restores the previous choice);
  3. else automatic: ``"triton"`` when the input is on CUDA and the triton backend imports and
     supports the device, otherwise ``"reference"``. If the triton backend fails to import, the call
     falls back to ``reference`` with a warning (shown once per process by the warnings filter).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import warnings
from types import MappingProxyType, ModuleType

import torch

from genfoundry.nunchaku.packing import INT4_GROUP

BACKENDS = MappingProxyType({
    "reference": "genfoundry.nunchaku.reference",
    "triton": "genfoundry.nunchaku.triton.backend",
})

_FUNCTIONS = ("svdq_linear", "quantize_act_lora_down", "gemm_w4a4_lora_up")
_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar("genfoundry_nunchaku_backend", default=None)


class BackendUnavailable(RuntimeError):
    """A named backend exists but cannot be imported here (missing triton, no GPU, ...)."""


def available_backends() -> list[str]:
    return list(BACKENDS)


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown nunchaku backend {name!r}; available backends: {', '.join(BACKENDS)}")
    return name


@functools.cache
def _import_backend(name: str) -> ModuleType | str:
    """The backend module, or the import error text (cached so a failing import is tried once)."""
    try:
        module = importlib.import_module(BACKENDS[name])
    except Exception as err:  # noqa: BLE001 - any import failure means "not usable here"
        return f"{type(err).__name__}: {err}"
    missing = [f for f in _FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        return f"module {BACKENDS[name]} lacks {', '.join(missing)}"
    return module


def get_backend(name: str) -> ModuleType:
    """The module of backend `name`; raises `BackendUnavailable` if it cannot be imported."""
    found = _import_backend(_check_name(name))
    if isinstance(found, str):
        raise BackendUnavailable(f"nunchaku backend {name!r} is not available: {found}")
    return found


class use_backend:  # noqa: N801 - used like a function: use_backend("reference")
    """Select the backend for the current context: ``use_backend("reference")`` sets it until changed;
    ``with use_backend("triton"): ...`` restores the previous choice on exit. ``None`` = automatic."""

    def __init__(self, name: str | None) -> None:
        if name is not None:
            _check_name(name)
        self._token = _selected.set(name)

    def __enter__(self) -> "use_backend":
        return self

    def __exit__(self, *exc) -> None:
        _selected.reset(self._token)


def current_backend() -> str | None:
    """The name set by `use_backend` in this context (None = automatic)."""
    return _selected.get()


def _auto(x: torch.Tensor) -> str:
    if not x.is_cuda:
        return "reference"
    found = _import_backend("triton")
    if isinstance(found, str):
        warnings.warn(f"nunchaku: the triton backend is unavailable ({found}); using the slow reference backend",
                      RuntimeWarning, stacklevel=3)
        return "reference"
    supports = getattr(found, "supports", None)
    if supports is not None and not supports(x.device):
        return "reference"
    return "triton"


def resolve_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """The backend name a call with input `x` would use."""
    if backend is not None:
        return _check_name(backend)
    chosen = _selected.get()
    return chosen if chosen is not None else _auto(x)


def svdq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    wscales: torch.Tensor,
    smooth: torch.Tensor | None,
    lora_down: torch.Tensor | None,
    lora_up: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    *,
    weight_format: str = "int4",
    group_size: int = INT4_GROUP,
    wtscale: torch.Tensor | None = None,
    act_unsigned: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """``y = GEMM4(Q(x / smooth), qweight) + (x @ lora_down) @ lora_up.T + bias`` on the chosen backend.

    x ``[..., K]``; qweight int8 ``[N, K/2]``; wscales ``[K/G, N]``; smooth ``[K]``; lora_down ``[K, r]``
    (pre-divided by smooth); lora_up ``[N, r]``; bias ``[N]``. Output ``[..., N]`` in ``x.dtype``."""
    if x.shape[-1] != qweight.shape[-1] * 2:
        raise ValueError(
            f"svdq_linear: input has K={x.shape[-1]} features but qweight {tuple(qweight.shape)} packs "
            f"K={qweight.shape[-1] * 2}"
        )
    extra = {"act_unsigned": True} if act_unsigned else {}
    return get_backend(resolve_backend(x, backend)).svdq_linear(
        x, qweight, wscales, smooth, lora_down, lora_up, bias,
        weight_format=weight_format, group_size=group_size, wtscale=wtscale, **extra,
    )


def quantize_act_lora_down(
    x: torch.Tensor,
    smooth: torch.Tensor | None,
    lora_down: torch.Tensor | None,
    *,
    act_format: str = "int4",
    group_size: int = INT4_GROUP,
    act_unsigned: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First fused half: ``(qact [M, K/2], ascales [K/G, M], lora_act [M, r] fp32)``."""
    extra = {"act_unsigned": True} if act_unsigned else {}
    return get_backend(resolve_backend(x, backend)).quantize_act_lora_down(
        x, smooth, lora_down, act_format=act_format, group_size=group_size, **extra
    )


def gemm_w4a4_lora_up(
    qact: torch.Tensor,
    ascales: torch.Tensor,
    qweight: torch.Tensor,
    wscales: torch.Tensor,
    lora_act: torch.Tensor | None,
    lora_up: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    weight_format: str = "int4",
    group_size: int = INT4_GROUP,
    wtscale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
    act_unsigned: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Second fused half: 4-bit GEMM + ``lora_act @ lora_up.T`` + bias -> ``y [M, N]`` in out_dtype.

    ``act_unsigned=True`` says `qact` holds unsigned (shifted, post-GELU) codes."""
    extra = {"act_unsigned": True} if act_unsigned else {}
    return get_backend(resolve_backend(qact, backend)).gemm_w4a4_lora_up(
        qact, ascales, qweight, wscales, lora_act, lora_up, bias,
        weight_format=weight_format, group_size=group_size, wtscale=wtscale, out_dtype=out_dtype, **extra,
    )
