"""Cell ids, config conversion/validation, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from invlab.sweep import (
    ConfigError,
    atomic_write_json,
    atomic_write_text,
    cell_id,
    check,
    config_to_dict,
    from_dict,
    validate,
    write_resolved_config,
)


class Pool(Enum):
    MAX = "max"
    MEAN = "mean"


@dataclass(frozen=True)
class Inner:
    width: int = 128
    pool: Pool = Pool.MAX


@dataclass(frozen=True)
class Cfg:
    group: Literal["r4", "t3"] = "r4"
    method: str = "da"
    lr: float = 8e-4
    epochs: int = 3
    seed: int = 0
    nus: tuple[float, ...] = (0.1, 1.0)
    augment: bool = True
    note: str | None = None
    model: Inner = field(default_factory=Inner)
    workers: int = field(default=1, metadata={"cell_id": False})

    def __post_init__(self) -> None:
        validate(self)  # types first, so the value checks below compare like with like
        check("lr", self.lr > 0, f"expected > 0, got {self.lr}")
        check("epochs", self.epochs >= 1, f"expected >= 1, got {self.epochs}")
        check("method", self.method in ("da", "wt", "ir"), f"expected da/wt/ir, got "
              f"{self.method!r}")


@dataclass(frozen=True)
class OtherCfg:  # same fields as a subset of Cfg, different type
    group: str = "r4"


@dataclass(frozen=True)
class Flat:
    group: str = "r4"


# ----------------------------------------------------------------------------- cell_id


def test_cell_id_golden_value() -> None:
    # Changing the hashing scheme silently would orphan every stored result: pin it.
    assert cell_id(Flat()) == "d7360a2ea1e6468b"
    doc = '{"config":{"group":"r4"},"type":"Flat"}'
    import hashlib

    assert cell_id(Flat()) == hashlib.sha256(doc.encode()).hexdigest()[:16]


def test_a_field_added_at_its_default_keeps_the_id() -> None:
    from invlab.sweep.config import ID_IF_NOT_DEFAULT

    @dataclass(frozen=True)
    class Flat:  # noqa: F811 - the same type name, one field more
        group: str = "r4"
        added: str = field(default="old", metadata=ID_IF_NOT_DEFAULT)

    assert cell_id(Flat()) == "d7360a2ea1e6468b"  # the golden id of the field-less Flat
    assert cell_id(Flat(added="new")) != "d7360a2ea1e6468b"
    assert config_to_dict(Flat())["added"] == "old"  # stored with the config all the same


def test_cell_id_stable_and_type_sensitive() -> None:
    a, b = Cfg(), Cfg()
    assert a is not b and cell_id(a) == cell_id(b)
    assert len(cell_id(a)) == 16 and all(c in "0123456789abcdef" for c in cell_id(a))
    # same fields, other dataclass type => other cell
    assert cell_id(Flat("r4")) != cell_id(OtherCfg("r4"))
    # tuples and lists hash alike (both are JSON lists)
    assert cell_id(dataclasses.replace(Cfg(), nus=(0.1, 1.0))) == cell_id(Cfg())
    # fields marked cell_id=False do not change the id but are stored
    assert cell_id(Cfg(workers=8)) == cell_id(Cfg())
    assert config_to_dict(Cfg(workers=8))["workers"] == 8


_CHANGES = {
    "group": ["t3"],
    "method": ["wt", "ir"],
    "lr": [8e-4 + 1e-12, 1e-3, 8],
    "epochs": [4, 300],
    "seed": [1, -1, 2**40],
    "nus": [(0.1,), (1.0, 0.1), (0.1, 1.0, 2.0), ()],
    "augment": [False],
    "note": ["", "x"],
    "model": [Inner(width=129), Inner(pool=Pool.MEAN)],
}


@pytest.mark.parametrize("name", sorted(_CHANGES))
def test_cell_id_changes_with_every_field(name: str) -> None:
    base = cell_id(Cfg())
    for v in _CHANGES[name]:
        assert cell_id(dataclasses.replace(Cfg(), **{name: v})) != base, (name, v)


@settings(max_examples=60, deadline=None)
@given(
    lr=st.floats(min_value=1e-9, max_value=10, allow_nan=False),
    epochs=st.integers(min_value=1, max_value=10**6),
    seed=st.integers(min_value=-(2**62), max_value=2**62),
    nus=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4).map(tuple),
    note=st.one_of(st.none(), st.text(max_size=8)),
)
def test_cell_id_property(lr: float, epochs: int, seed: int, nus: tuple, note: str | None
                          ) -> None:
    cfg = Cfg(lr=lr, epochs=epochs, seed=seed, nus=nus, note=note)
    cid = cell_id(cfg)
    # stable: recomputed from a round trip through JSON and from_dict
    again = from_dict(Cfg, json.loads(json.dumps(config_to_dict(cfg))))
    assert again == cfg and cell_id(again) == cid
    # differs when a field changes
    assert cell_id(dataclasses.replace(cfg, epochs=epochs + 1)) != cid
    assert cell_id(dataclasses.replace(cfg, seed=seed + 1)) != cid
    assert cell_id(dataclasses.replace(cfg, note=(note or "") + "!")) != cid


def test_cell_id_rejects_nan_and_non_dataclass() -> None:
    with pytest.raises(ConfigError) as ei:
        cell_id(Cfg(nus=(float("nan"),)))
    assert ei.value.field == "nus[0]"
    with pytest.raises(TypeError):
        cell_id({"group": "r4"})
    with pytest.raises(TypeError):
        cell_id(Cfg)


def test_config_to_dict() -> None:
    d = config_to_dict(Cfg())
    assert d == {"group": "r4", "method": "da", "lr": 8e-4, "epochs": 3, "seed": 0,
                 "nus": [0.1, 1.0], "augment": True, "note": None,
                 "model": {"width": 128, "pool": "max"}, "workers": 1}
    json.dumps(d, allow_nan=False)


# ----------------------------------------------------------------------------- errors


def test_post_init_error_names_field() -> None:
    with pytest.raises(ConfigError) as ei:
        Cfg(lr=-1.0)
    assert ei.value.field == "lr" and "lr" in str(ei.value) and "-1.0" in str(ei.value)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(ConfigError, match="method"):
        Cfg(method="xx")


def test_from_dict_unknown_keys_named() -> None:
    with pytest.raises(ConfigError) as ei:
        from_dict(Cfg, {"group": "r4", "lerning_rate": 0.1, "zz": 1})
    assert ei.value.field == "lerning_rate, zz"
    assert "lerning_rate" in str(ei.value) and "valid keys" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        from_dict(Cfg, {"model": {"widht": 3}})
    assert ei.value.field == "model.widht"


def test_from_dict_bad_values_named() -> None:
    cases = {
        "epochs": "three",
        "lr": "fast",
        "augment": "maybe",
        "group": "r8",
        "nus": "0.1",
        "seed": 1.5,
    }
    for name, bad in cases.items():
        with pytest.raises(ConfigError) as ei:
            from_dict(Cfg, {name: bad})
        assert ei.value.field == name, (name, ei.value)
        assert repr(bad) in str(ei.value)
    with pytest.raises(ConfigError) as ei:  # __post_init__ of a nested config
        from_dict(Cfg, {"epochs": 0})
    assert ei.value.field == "epochs"
    with pytest.raises(ConfigError) as ei:
        from_dict(Cfg, {"model": {"pool": "median"}})
    assert ei.value.field == "model.pool"
    with pytest.raises(ConfigError) as ei:
        from_dict(Cfg, {"nus": [0.1, "x"]})
    assert ei.value.field == "nus[1]"


def test_from_dict_coerces_obvious_types() -> None:
    cfg = from_dict(Cfg, {"lr": "1e-3", "epochs": "300", "seed": 2.0, "nus": [1, "2.5"],
                          "augment": "false", "group": "t3", "note": None,
                          "model": {"width": "64", "pool": "mean"}})
    assert cfg == Cfg(lr=1e-3, epochs=300, seed=2, nus=(1.0, 2.5), augment=False,
                      group="t3", model=Inner(64, Pool.MEAN))
    assert type(cfg.nus) is tuple and type(cfg.lr) is float and type(cfg.epochs) is int
    assert from_dict(Cfg, {"lr": 1}).lr == 1.0 and type(from_dict(Cfg, {"lr": 1}).lr) is float


def test_from_dict_missing_required() -> None:
    @dataclass(frozen=True)
    class Req:
        a: int
        b: int = 0

    with pytest.raises(ConfigError) as ei:
        from_dict(Req, {"b": 1})
    assert ei.value.field == "a"


def test_validate() -> None:
    cfg = Cfg()
    assert validate(cfg) is cfg
    validate(Cfg(lr=1))  # an int is a fine float
    with pytest.raises(ConfigError) as ei:
        Cfg(epochs="3")  # type: ignore[arg-type]
    assert ei.value.field == "epochs" and "'3'" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        Cfg(nus=[0.1])  # type: ignore[arg-type]  # a list would make the config unhashable
    assert ei.value.field == "nus"
    with pytest.raises(ConfigError) as ei:
        Cfg(augment=1)  # type: ignore[arg-type]
    assert ei.value.field == "augment"
    # without validate() in __post_init__, validate() checks an instance afterwards
    bad = Flat(group=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as ei:
        validate(bad)
    assert ei.value.field == "group"
    with pytest.raises(ConfigError) as ei:
        validate(Cfg(model=Inner(width=2.5)))  # type: ignore[arg-type]
    assert ei.value.field == "model.width"


# ----------------------------------------------------------------------------- io


def test_atomic_write_json_and_failure_keeps_old(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "out.json"
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}
    assert p.read_text().index('"a"') < p.read_text().index('"b"')
    mode = p.stat().st_mode & 0o777
    assert mode & 0o044, f"file not readable by others: {oct(mode)} (mkstemp's 0600 leaked)"
    with pytest.raises(ValueError):
        atomic_write_json(p, {"x": float("nan")})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(os.listdir(p.parent)) == ["out.json"], "temporary files left behind"
    atomic_write_text(p, "new")
    assert p.read_text() == "new"


def test_write_resolved_config(tmp_path: Path) -> None:
    y, j = write_resolved_config(tmp_path / "run", "genuine", Cfg())
    assert (y.name, j.name) == ("config.yaml", "config.json")
    dy = yaml.safe_load(y.read_text())
    dj = json.loads(j.read_text())
    assert dy == dj
    assert dj["study"] == "genuine" and dj["config"] == config_to_dict(Cfg())
    assert from_dict(Cfg, dj["config"]) == Cfg()
    keys = [ln.split(":")[0] for ln in y.read_text().splitlines() if not ln.startswith(" ")]
    assert keys == sorted(keys)
    # a plain dict works too
    write_resolved_config(tmp_path / "run2", "drift", {"beta": [0.0, 0.5]})
    assert yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["config"] == {
        "beta": [0.0, 0.5]}
