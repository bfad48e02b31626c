import json
import subprocess
import sys

import pytest
import torch

from genfoundry import hub
from genfoundry.hub import CheckpointError


def test_roundtrip_with_metadata(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(6, dtype=torch.int8).view(2, 3)}
    meta = {"quantization_config": {"method": "svdquant", "rank": 32}, "note": "hello"}
    path = hub.save_file(tensors, tmp_path / "m.safetensors", metadata=meta)
    loaded, found_meta = hub.load_file(path)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert json.loads(found_meta["quantization_config"]) == meta["quantization_config"]
    assert found_meta["note"] == "hello"
    assert hub.read_metadata(path)["note"] == "hello"


def test_shared_and_noncontiguous_tensors_are_saved(tmp_path):
    base = torch.randn(4, 4)
    tensors = {"t": base.t(), "view": base[1]}
    loaded, _ = hub.load_file(hub.save_file(tensors, tmp_path / "s.safetensors"))
    assert torch.equal(loaded["t"], base.t()) and torch.equal(loaded["view"], base[1])


def test_failing_writer_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    hub.save_file({"w": torch.ones(2)}, path)
    before = path.read_bytes()

    import safetensors.torch as st

    def exploding_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial garbage")
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "save_file", exploding_save)
    with pytest.raises(RuntimeError, match="disk full"):
        hub.save_file({"w": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_killed_writer_leaves_old_file_intact(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    hub.save_file({"w": torch.ones(2)}, path)
    before = path.read_bytes()
    script = (
        "import os, sys\n"
        "from genfoundry.hub import atomic_path\n"
        f"with atomic_path({str(path)!r}) as tmp:\n"
        "    open(tmp, 'wb').write(b'half a file')\n"
        "    os._exit(9)\n"  # killed mid-write: no cleanup, no rename
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert path.read_bytes() == before
    assert torch.equal(hub.load_file(path)[0]["w"], torch.ones(2))


def test_missing_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hub.load_file(tmp_path / "nope.safetensors")
    path = hub.save_file({"w": torch.randn(64, 64)}, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        hub.load_file(tmp_path / "trunc.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        hub.load_file(tmp_path / "tiny.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"x" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        hub.load_file(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="folder"):
        hub.load_file(tmp_path)


def test_check_state_dict_names_every_problem():
    expected = {"a.weight": torch.zeros(4, 3), "b.bias": torch.zeros(4), "c": torch.zeros(2)}
    found = {"a.weight": torch.zeros(4, 2), "b.bias": torch.zeros(4), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        hub.check_state_dict(found, expected, what="model.safetensors")
    msg = str(err.value)
    assert "model.safetensors" in msg and "missing keys (1): c" in msg
    assert "unexpected keys (1): extra" in msg
    assert "a.weight: expected (4, 3), found (4, 2)" in msg
    hub.check_state_dict(expected, expected)


def test_resolve(tmp_path):
    assert hub.resolve(tmp_path) == tmp_path
    with pytest.raises(CheckpointError, match="cannot find checkpoint 'no-such-model'"):
        hub.resolve("no-such-model")


def test_json_atomic(tmp_path):
    hub.write_json_atomic(tmp_path / "x" / "a.json", {"b": 1})
    assert json.loads((tmp_path / "x" / "a.json").read_text()) == {"b": 1}
