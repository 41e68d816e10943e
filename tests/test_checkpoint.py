"""Checkpoints: safetensors round trips, metadata, and refusal of pickles and broken files."""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from invlab import __version__
from invlab.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from invlab.models import GroupPooled, create_model


def built(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **kwargs).eval()


def inputs(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 1, 36, 36, generator=torch.Generator().manual_seed(7))


MODELS = {
    "mlp5": lambda: built("mlp5"),
    "wt_mlp5_t3": lambda: built("wt_mlp5", group="t3", pool="mean", hidden=64),
    "cnn_small": lambda: built("cnn_small", width=8, num_classes=5),
    "pooled_cnn_d4": lambda: GroupPooled(built("cnn_small"), "d4").eval(),
    "pooled_mlp5_t3": lambda: GroupPooled(built("mlp5", depth=2), "t3").eval(),
}


@pytest.mark.parametrize("key", list(MODELS))
def test_round_trip_is_bit_identical(tmp_path: Path, key: str) -> None:
    model = MODELS[key]()
    path = save_checkpoint(model, tmp_path / "run" / "best.safetensors", group="r4", seed=3,
                           normalization={"mean": 0.08, "std": 0.25}, note="ü ok")
    assert path == tmp_path / "run" / "best.safetensors" and path.is_file()
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model)
    assert not loaded.training
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    # metadata: what the caller added plus what rebuilds the model
    assert meta["group"] == "r4" and meta["seed"] == 3 and meta["note"] == "ü ok"
    assert meta["normalization"] == {"mean": 0.08, "std": 0.25}
    assert meta["invlab_version"] == __version__
    inner = model.model if isinstance(model, GroupPooled) else model
    assert meta["model"] == inner.model_name
    assert meta["model_kwargs"] == json.loads(json.dumps(inner.model_kwargs))
    if isinstance(model, GroupPooled):
        assert meta["wrapper"] == {"group_pooled": model.group.name}
        assert loaded.group == model.group
    assert read_metadata(path) == meta


def test_wt_mlp5_kwargs_survive(tmp_path: Path) -> None:
    model = MODELS["wt_mlp5_t3"]()
    loaded, meta = load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors"))
    assert meta["model_kwargs"]["group"] == "t3" and meta["model_kwargs"]["pool"] == "mean"
    assert loaded.group.name == "t3" and loaded.pool == "mean" and loaded.input.out_features == 64


def test_overwrite_and_atomic_write_leaves_no_tmp_files(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(built("mlp5", seed=0), path)
    save_checkpoint(built("mlp5", seed=1), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.input.weight, built("mlp5", seed=1).input.weight)


def test_failed_write_keeps_the_old_file_and_no_tmp(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(built("mlp5", seed=0), path)
    before = path.read_bytes()

    import safetensors.torch

    def failing_save(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(built("mlp5", seed=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="JSON-serializable"):
        save_checkpoint(built("mlp5"), tmp_path / "m.safetensors", bad={1, 2})
    assert list(tmp_path.iterdir()) == []


def test_models_not_from_create_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="create_model"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- pickles


class _Evil:
    """Unpickling this creates ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.open, (self.path, "w"))


@pytest.mark.parametrize("kind", ["pickle_dump", "pickle_protocol0", "torch_save",
                                  "torch_save_legacy"])
def test_pickles_are_refused_without_unpickling(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"input.weight": torch.zeros(2, 2), "evil": _Evil(marker)}
    path = tmp_path / "model.safetensors"
    if kind == "pickle_dump":
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    elif kind == "pickle_protocol0":
        with open(path, "wb") as fh:
            pickle.dump({"evil": _Evil(marker)}, fh, protocol=0)
    elif kind == "torch_save":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    for call in (load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError) as err:
            call(path)
        assert str(path) in str(err.value)
        if kind != "pickle_protocol0":
            assert "pickle" in str(err.value) and "never unpickles" in str(err.value)
    assert not marker.exists()
    # control: the payload is live, so the refusal above is what kept the marker from appearing
    if kind.startswith("pickle"):
        with open(path, "rb") as fh:
            pickle.load(fh).get("evil").close()
    else:
        copy = tmp_path / "copy.pt"  # torch.load treats a .safetensors name specially
        copy.write_bytes(path.read_bytes())
        torch.load(copy, weights_only=False)["evil"].close()
    assert marker.exists()


def test_state_dict_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(built("mlp5").state_dict(), path)
    with pytest.raises(CheckpointError, match="torch.save zip archive"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- broken files


def test_weights_not_matching_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(built("mlp5"), path, seed=0)
    raw_meta = read_metadata(path)
    # rewrite the weights of a different model (hidden=64) under the original metadata
    other = built("mlp5", hidden=64)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path),
              metadata={"invlab": json.dumps(raw_meta)})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "'mlp5'" in msg
    assert "input.weight (expected (128, 1296), found (64, 1296))" in msg
    assert "head.weight (expected (9, 128), found (9, 64))" in msg


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(built("mlp5"), path)
    meta = read_metadata(path)
    state = load_file(str(path))
    state["extra.bias"] = torch.zeros(3)
    del state["head.bias"]
    save_file(state, str(path), metadata={"invlab": json.dumps(meta)})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "missing ['head.bias']" in msg and "unexpected ['extra.bias']" in msg


def test_metadata_naming_an_unknown_model(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path),
              metadata={"invlab": json.dumps({"model": "resnet", "model_kwargs": {}})})
    with pytest.raises(CheckpointError, match="does not describe a known model"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 20, "half", "minus1"])
def test_truncated_file(tmp_path: Path, keep: int | str) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(built("mlp5", hidden=16), path)
    raw = path.read_bytes()
    n = {"half": len(raw) // 2, "minus1": len(raw) - 1}.get(keep, keep)  # type: ignore[call-overload]
    path.write_bytes(raw[:n])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_safetensors_without_invlab_metadata(tmp_path: Path) -> None:
    state = {k: v.contiguous() for k, v in built("mlp5").state_dict().items()}
    for i, metadata in enumerate((None, {"format": "pt"})):
        path = tmp_path / f"plain{i}.safetensors"
        save_file(state, str(path), metadata=metadata)
        for call in (load_checkpoint, read_metadata):
            with pytest.raises(CheckpointError, match="without invlab metadata"):
                call(path)


def test_invalid_json_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"invlab": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)


def test_not_a_checkpoint_at_all(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")
