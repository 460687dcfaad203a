"""The catalog: the shipped models.toml, operator files, validation messages, the host's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.catalog import AdapterRef, CatalogError, catalog_from_dict, load_catalog


def test_shipped_catalog_has_real_and_tiny_profiles() -> None:
    catalog = load_catalog(probe=lambda c: c.startswith("tiny:"))
    names = [p.name for p in catalog]
    assert {"photoreal-xl", "sdxl-base", "tiny-xl", "tiny-sd15"} <= set(names)
    assert catalog.default == "tiny-xl"
    assert "noise" in catalog.default_reason
    assert all(p.queue_name.startswith("likeness:profile:") for p in catalog)


def test_default_is_the_first_profile_with_weights() -> None:
    catalog = load_catalog(probe=lambda c: c == "stabilityai/stable-diffusion-xl-base-1.0" or "tiny" in c)
    assert catalog.default == "sdxl-base"
    assert catalog.default_profile.available


def test_explicit_default_wins_and_unknown_default_is_named() -> None:
    assert load_catalog(default="tiny-sd15", probe=lambda c: True).default == "tiny-sd15"
    with pytest.raises(CatalogError, match="'nope' is not in the catalog"):
        load_catalog(default="nope", probe=lambda c: True)


def test_operator_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[profiles.mine]\nfamily = "sdxl"\ncheckpoint = "/nowhere/model.safetensors"\nsteps = 25\n'
        'resolution = "sdxl"\ncapabilities = ["photoreal"]\nqueue = "gpu-big"\n'
    )
    catalog = load_catalog(path)
    profile = catalog.profiles["mine"]
    assert not profile.available
    assert profile.queue_name == "gpu-big"
    assert catalog.default == "mine"
    assert "no profile has weights" in catalog.default_reason


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"checkpoint": "x"}, "`family` is required"),
        ({"family": "dalle", "checkpoint": "x"}, "family 'dalle' is not supported; use one of sd15"),
        ({"family": "sdxl", "checkpoint": "x", "steps": 0}, "need 1 <= steps"),
        ({"family": "sdxl", "checkpoint": "x", "cfg": 99}, "need 0 <= cfg_min <= cfg"),
        ({"family": "sdxl", "checkpoint": "x", "steps": "many"}, "`steps` must be a whole number"),
        ({"family": "sdxl", "checkpoint": "x", "resolution": "8k"}, "resolution '8k' is unknown"),
        ({"family": "sdxl", "checkpoint": "x", "capabilities": ["magic"]}, "capabilities must be a list"),
        ({"family": "sdxl", "checkpoint": "x", "colour": "red"}, "unknown field(s) colour"),
        ({"family": "sdxl", "checkpoint": "tiny:flux"}, "there is no tiny checkpoint .tiny:flux. for sdxl"),
        ({"family": "sd-upscale", "checkpoint": "x", "frames": 9}, "frames apply to animate profiles only"),
        ({"family": "sd-upscale", "checkpoint": "x", "tile": 100}, "`tile` must be a multiple of 8"),
        ({"family": "sd-upscale", "checkpoint": "x", "tile": 64, "tile_overlap": 32}, "under half the tile"),
        (
            {"family": "svd", "checkpoint": "x", "motion": 300},
            "`motion` must be a whole number from 1 to 255",
        ),
        ({"family": "svd", "checkpoint": "x", "capabilities": ["photoreal"]}, "exactly the capabilities"),
        (
            {"family": "sdxl", "checkpoint": "x", "capabilities": ["upscale"]},
            "`upscale` and `animate` belong",
        ),
        ({"family": "lanczos", "checkpoint": "x"}, "builtin:lanczos"),
        ({"family": "sdxl", "checkpoint": "builtin:lanczos"}, "builtin:lanczos"),
        ({"family": "sdxl", "checkpoint": "x", "memory_gb": -1}, "`memory_gb` must be a positive number"),
    ],
)
def test_malformed_profiles_name_the_field(profile: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=f"profile 'p'.*{message.replace('(', '.').replace(')', '.')}"):
        catalog_from_dict({"profiles": {"p": profile}}, probe=lambda c: False)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the models file"):
        load_catalog(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles.x\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("default = 'auto'\n")
    with pytest.raises(CatalogError, match="defines no profiles"):
        load_catalog(empty)


def test_identity_needs_an_adapter_and_the_adapter_is_checked() -> None:
    base = {"family": "sdxl", "checkpoint": "x"}
    with pytest.raises(CatalogError, match="`identity` capability exactly when it has an `ip_adapter`"):
        catalog_from_dict({"profiles": {"p": {**base, "capabilities": ["identity"]}}}, probe=lambda c: False)
    with pytest.raises(CatalogError, match="`ip_adapter` must be a table with a `source`"):
        catalog_from_dict(
            {"profiles": {"p": {**base, "capabilities": ["identity"], "ip_adapter": "h94"}}},
            probe=lambda c: False,
        )
    adapter = {"source": "h94/IP-Adapter", "subfolder": "sdxl_models", "weight_name": "w.safetensors"}
    raw = {"profiles": {"p": {**base, "capabilities": ["identity"], "ip_adapter": adapter}}}
    with_adapter = catalog_from_dict(raw, probe=lambda c: True, adapter_probe=lambda a: True)
    assert with_adapter.profiles["p"].available
    assert with_adapter.profiles["p"].ip_adapter == AdapterRef(
        "h94/IP-Adapter", "sdxl_models", "w.safetensors"
    )
    without = catalog_from_dict(raw, probe=lambda c: True, adapter_probe=lambda a: False)
    assert not without.profiles["p"].available
