"""Where checkpoints come from, and how every checkpoint file is written and read.

- `resolve(name_or_path)`: an embedded zoo name (``sana-shapes``), a local file/folder, or an official
  repo id already in the local Hugging Face cache.
- `save_file` / `load_file`: safetensors with string metadata, written atomically (temp file in the
  same folder, fsync, rename) so a crash mid-write never leaves a half-written or lost checkpoint.
- `check_state_dict`: compare a state dict against a model's expected keys/shapes and raise one clear
  error naming every missing key, unexpected key and shape mismatch.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from genfoundry.errors import GenfoundryError

ZOO_DIR = Path(__file__).parent / "zoo"


class CheckpointError(GenfoundryError, ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


# ----------------------------------------------------------------------------------------------
# Atomic writes


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success fsync it and rename it over `path`.

    On any exception the temporary file is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save_atomic(obj, path: str | os.PathLike) -> None:
    """`torch.save` through a temp file + rename (for optimizer/RNG state in training checkpoints)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ----------------------------------------------------------------------------------------------
# safetensors


def _as_metadata(metadata: Mapping[str, object] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    out = {}
    for key, value in metadata.items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def save_file(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write `tensors` to a safetensors file atomically. Non-string metadata values are JSON-encoded."""
    from safetensors.torch import save_file as _save

    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"save_file: values must be torch.Tensor; not a tensor: {bad[:5]}")
    # safetensors refuses shared storage and non-contiguous views; give it plain copies.
    plain = {k: v.detach().contiguous().clone() if _shares_storage(v) else v.detach().contiguous()
             for k, v in tensors.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        _save(plain, str(tmp), metadata=_as_metadata(metadata))
    return path


def cast_floating(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The floating-point tensors cast to `dtype` (None: unchanged), the others as they are: what a
    `save_pretrained(path, dtype=...)` writes."""
    if dtype is None:
        return dict(tensors)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _shares_storage(t: torch.Tensor) -> bool:
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (without reading the tensors)."""
    header = _read_header(Path(path))
    return dict(header.get("__metadata__", {}) or {})


def _read_header(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a .safetensors file, got a folder: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: only {size} bytes (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: header claims {n} bytes but the file has {size} "
                "(truncated or corrupt)"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {err}") from None
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"{path} has a corrupt entry for tensor {key!r}") from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: tensors need {8 + n + end} bytes but the file has {size}"
        )
    return header


def load_file(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (tensors, metadata). Clear `CheckpointError` if missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file as _load

    path = Path(path)
    header = _read_header(path)
    try:
        tensors = _load(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"could not read {path}: {err}") from None
    return tensors, dict(header.get("__metadata__", {}) or {})


def check_state_dict(
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor | torch.Size | tuple],
    what: str = "checkpoint",
    allow_missing: Callable[[str], bool] | None = None,
) -> None:
    """Raise `CheckpointError` listing missing keys, unexpected keys and shape mismatches."""

    def shape_of(v) -> tuple:
        return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)

    missing = [k for k in expected if k not in found and not (allow_missing and allow_missing(k))]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        f"{k}: expected {shape_of(expected[k])}, found {shape_of(found[k])}"
        for k in expected
        if k in found and shape_of(found[k]) != shape_of(expected[k])
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{what} does not match the model:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            shown = items[:20]
            more = f" ... and {len(items) - 20} more" if len(items) > 20 else ""
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown) + more)
    raise CheckpointError("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Where checkpoints come from


def zoo_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Map an embedded zoo name, a local path, or a cached Hugging Face repo id to a local path."""
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.exists():
        return local
    if text in zoo_names():
        return ZOO_DIR / text
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # noqa: BLE001 - any hub failure means "not available offline"
            pass
    known = ", ".join(zoo_names()) or "(none installed)"
    raise CheckpointError(
        f"cannot find checkpoint {text!r}: not a local file or folder, not an embedded model "
        f"(embedded: {known}), and not a Hugging Face repo id in the local cache"
    )
