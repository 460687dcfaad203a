"""The model catalog: profiles read from `models.toml`, and which of them this host can serve.

Loading the catalog is the only place in `router/` that touches the file system (to read the TOML and
to see which checkpoints are present); `route()` itself is a pure function of the loaded catalog.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from router.sizes import RESOLUTION_CLASSES

# Families that make portraits from a prompt (txt2img, and vary through img2img on the same weights).
IMAGE_FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "sd3", "flux")
# Families behind the result buttons: Upscale (a latent x4 upscaler, an ESRGAN-class network, or plain
# Lanczos resampling when no upscale weights are configured) and Animate (Stable Video Diffusion).
UPSCALE_FAMILIES: tuple[str, ...] = ("sd-upscale", "esrgan", "lanczos")
ANIMATE_FAMILIES: tuple[str, ...] = ("svd",)
FAMILIES: tuple[str, ...] = IMAGE_FAMILIES + UPSCALE_FAMILIES + ANIMATE_FAMILIES
CAPABILITIES: tuple[str, ...] = ("photoreal", "literal", "text", "identity", "stylized", "upscale", "animate")
TINY_PREFIX = "tiny:"
BUILTIN_PREFIX = "builtin:"
# The tiny random-weight checkpoints Likeness builds on demand, by family.
TINY_CHECKPOINTS: dict[str, str] = {
    "sd15": "tiny:sd15",
    "sdxl": "tiny:sdxl",
    "sd-upscale": "tiny:sd-upscale",
    "esrgan": "tiny:esrgan",
    "svd": "tiny:svd",
}
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
QUEUE_PREFIX = "likeness:profile:"


class CatalogError(ValueError):
    """models.toml is malformed; the message names the file, the profile, the field and the fix."""


@dataclass(frozen=True)
class AdapterRef:
    """An IP-Adapter a profile conditions on character faces with (the identity workflow)."""

    source: str
    subfolder: str = ""
    weight_name: str = ""
    image_encoder_folder: str = ""

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith(TINY_PREFIX)


@dataclass(frozen=True)
class Profile:
    """A named engine recipe: which checkpoint, how to run it, what it is good at."""

    name: str
    family: str
    checkpoint: str
    scheduler: str
    steps: int
    max_steps: int
    cfg: float
    cfg_min: float
    cfg_max: float
    resolution: str
    memory_gb: float
    capabilities: tuple[str, ...]
    description: str = ""
    queue: str = ""
    ip_adapter: AdapterRef | None = None
    available: bool = False  # weights present on this host (tiny profiles: always, built on demand)
    # Upscale profiles: the tiling that bounds memory, and the noise the x4 upscaler adds to its input.
    tile: int = 0
    tile_overlap: int = 0
    noise_level: int = 0
    # Animate profiles: frames the model makes, their rate, default motion, frames decoded at once.
    frames: int = 0
    fps: int = 0
    motion: int = 0
    decode_chunk: int = 0

    @property
    def is_tiny(self) -> bool:
        return self.checkpoint.startswith(TINY_PREFIX)

    @property
    def kind(self) -> str:
        """The job kind this profile runs: `txt2img` (and vary), `upscale` or `animate`."""
        return _kind_of(self.family)

    @property
    def queue_name(self) -> str:
        """The queue its jobs go to: workers that serve this profile listen on it."""
        return self.queue or QUEUE_PREFIX + self.name


@dataclass(frozen=True)
class Catalog:
    profiles: Mapping[str, Profile]
    default: str
    default_reason: str = ""
    source: str = ""
    explicit_default: bool = False  # the operator named the default (rather than `auto`)

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name.lower())

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.profiles.values())

    def of_kind(self, kind: str) -> list[Profile]:
        """Profiles that run one job kind (`txt2img`, `upscale`, `animate`), in catalog order."""
        return [profile for profile in self.profiles.values() if profile.kind == kind]

    @property
    def default_profile(self) -> Profile:
        return self.profiles[self.default]


def weights_present(checkpoint: str) -> bool:
    """Whether a checkpoint can be loaded here without a download."""
    if checkpoint.startswith((TINY_PREFIX, BUILTIN_PREFIX)):
        return True
    path = Path(checkpoint).expanduser()
    if path.is_absolute() or checkpoint.startswith((".", "~")) or path.suffix in (".safetensors", ".pth"):
        return path.is_file() or (path / "model_index.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a base dependency
        return False
    found = try_to_load_from_cache(checkpoint, "model_index.json")
    return isinstance(found, str)


def adapter_present(adapter: AdapterRef) -> bool:
    """Whether an IP-Adapter's weights can be loaded here without a download."""
    if adapter.is_tiny:
        return True
    weight = "/".join(part for part in (adapter.subfolder, adapter.weight_name) if part)
    path = Path(adapter.source).expanduser()
    if path.is_absolute() or adapter.source.startswith((".", "~")):
        return (path / weight).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a base dependency
        return False
    return isinstance(try_to_load_from_cache(adapter.source, weight), str)


def load_catalog(
    path: Path | None = None,
    *,
    default: str | None = None,
    probe: Callable[[str], bool] = weights_present,
    adapter_probe: Callable[[AdapterRef], bool] = adapter_present,
) -> Catalog:
    """Read a catalog file (the shipped one when `path` is None) and mark the profiles this host can run.

    `default` overrides the file's `default` (a profile name or "auto").
    """
    if path is None:
        text = resources.files("router").joinpath("models.toml").read_text(encoding="utf-8")
        source = "built-in models.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(
                f"cannot read the models file {path}: {exc.strerror}; fix LIKENESS_MODELS_FILE"
            ) from exc
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source} is not valid TOML: {exc}") from exc
    return catalog_from_dict(data, source=source, default=default, probe=probe, adapter_probe=adapter_probe)


def catalog_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "models.toml",
    default: str | None = None,
    probe: Callable[[str], bool] = weights_present,
    adapter_probe: Callable[[AdapterRef], bool] = adapter_present,
) -> Catalog:
    raw_profiles = data.get("profiles")
    if not isinstance(raw_profiles, Mapping) or not raw_profiles:
        raise CatalogError(f"{source} defines no profiles; add at least one [profiles.NAME] table")
    profiles: dict[str, Profile] = {}
    for name, raw in raw_profiles.items():
        profile = _profile(source, name, raw)
        profiles[profile.name] = _with_availability(profile, probe, adapter_probe)
    chosen, reason = _choose_default(source, profiles.values(), default or str(data.get("default", "auto")))
    wanted = default or str(data.get("default", "auto"))
    return Catalog(
        profiles=profiles,
        default=chosen,
        default_reason=reason,
        source=source,
        explicit_default=wanted != "auto",
    )


def _with_availability(
    profile: Profile, probe: Callable[[str], bool], adapter_probe: Callable[[AdapterRef], bool]
) -> Profile:
    available = profile.checkpoint.startswith(BUILTIN_PREFIX) or probe(profile.checkpoint)
    if available and profile.ip_adapter is not None:
        available = adapter_probe(profile.ip_adapter)
    return replace(profile, available=available)


def _choose_default(source: str, profiles: Iterable[Profile], wanted: str) -> tuple[str, str]:
    by_name = {p.name: p for p in profiles}
    portraits = [p for p in by_name.values() if p.kind == "txt2img"]
    if wanted != "auto":
        chosen = by_name.get(wanted.lower())
        if chosen is None or chosen.kind != "txt2img":
            what = "is not in the catalog" if chosen is None else f"is an {chosen.kind} engine"
            raise CatalogError(
                f"{source}: default profile {wanted!r} {what}; the default makes portraits: use one of "
                + ", ".join(p.name for p in portraits)
            )
        return chosen.name, "set as the default"
    if not portraits:
        raise CatalogError(f"{source} has no portrait profile; add one of family {', '.join(IMAGE_FAMILIES)}")
    profiles = portraits
    for profile in profiles:
        if profile.available and not profile.is_tiny:
            return profile.name, "first profile whose weights are present on this host"
    for profile in profiles:
        if profile.is_tiny and profile.family == "sdxl":
            return profile.name, "no real weights on this host: tiny random-weight profile (noise)"
    tiny = [p for p in profiles if p.is_tiny]
    if tiny:
        return tiny[0].name, "no real weights on this host: tiny random-weight profile (noise)"
    return profiles[0].name, "no profile has weights here; the first one is the default"


_NUMBERS = {"steps": int, "max_steps": int, "cfg": float, "cfg_min": float, "cfg_max": float}


def _profile(source: str, name: str, raw: Any) -> Profile:
    where = f"{source}: profile {name!r}"
    if not PROFILE_NAME.match(name):
        raise CatalogError(f"{where}: names are lowercase letters, digits, '.', '_' or '-' (up to 64)")
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where} must be a table: [profiles.{name}]")
    known = {
        "family",
        "checkpoint",
        "scheduler",
        "steps",
        "max_steps",
        "cfg",
        "cfg_min",
        "cfg_max",
        "resolution",
        "memory_gb",
        "capabilities",
        "description",
        "queue",
        "ip_adapter",
        *_KIND_FIELDS["upscale"],
        *_KIND_FIELDS["animate"],
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CatalogError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    for required in ("family", "checkpoint"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise CatalogError(f"{where}: `{required}` is required (a string)")
    family = raw["family"]
    if family not in FAMILIES:
        raise CatalogError(f"{where}: family {family!r} is not supported; use one of {', '.join(FAMILIES)}")
    values: dict[str, Any] = {}
    defaults: dict[str, Any] = {"steps": 30, "cfg": 5.0, "cfg_min": 0.0, "cfg_max": 20.0}
    for key, number in _NUMBERS.items():
        value = raw.get(key, defaults.get(key))
        if key == "max_steps" and value is None:
            value = max(150, values["steps"])
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (number is int and value != int(value))
        ):
            raise CatalogError(
                f"{where}: `{key}` must be a {'whole ' if number is int else ''}number, got {value!r}"
            )
        values[key] = number(value)
    if not 1 <= values["steps"] <= values["max_steps"] <= 200:
        raise CatalogError(
            f"{where}: need 1 <= steps <= max_steps <= 200, got {values['steps']}, {values['max_steps']}"
        )
    if not 0 <= values["cfg_min"] <= values["cfg"] <= values["cfg_max"] <= 50:
        raise CatalogError(
            f"{where}: need 0 <= cfg_min <= cfg <= cfg_max <= 50, got "
            f"{values['cfg_min']}, {values['cfg']}, {values['cfg_max']}"
        )
    kind = _kind_of(family)
    resolution = raw.get("resolution", family if kind == "txt2img" else "svd" if kind == "animate" else "")
    if kind != "upscale" and resolution not in RESOLUTION_CLASSES:
        raise CatalogError(
            f"{where}: resolution {resolution!r} is unknown; use one of {', '.join(RESOLUTION_CLASSES)}"
        )
    capabilities = raw.get("capabilities", [] if kind == "txt2img" else [kind])
    if not isinstance(capabilities, list) or any(c not in CAPABILITIES for c in capabilities):
        raise CatalogError(f"{where}: capabilities must be a list drawn from {', '.join(CAPABILITIES)}")
    if kind != "txt2img" and capabilities != [kind]:
        raise CatalogError(f'{where}: a {family} profile has exactly the capabilities ["{kind}"]')
    if kind == "txt2img" and {"upscale", "animate"} & set(capabilities):
        raise CatalogError(
            f"{where}: `upscale` and `animate` belong to profiles of family "
            f"{', '.join(UPSCALE_FAMILIES + ANIMATE_FAMILIES)}, not {family}"
        )
    extras: dict[str, Any] = _kind_fields(where, raw, family, kind)
    memory = raw.get("memory_gb", 8.0)
    if isinstance(memory, bool) or not isinstance(memory, int | float) or memory <= 0:
        raise CatalogError(f"{where}: `memory_gb` must be a positive number, got {memory!r}")
    checkpoint = raw["checkpoint"]
    if checkpoint.startswith(TINY_PREFIX) and TINY_CHECKPOINTS.get(family) != checkpoint:
        tiny = ", ".join(f"{value} ({key})" for key, value in TINY_CHECKPOINTS.items())
        raise CatalogError(f"{where}: there is no tiny checkpoint {checkpoint!r} for {family}; tiny: {tiny}")
    if (family == "lanczos") != (checkpoint == BUILTIN_PREFIX + "lanczos"):
        raise CatalogError(
            f"{where}: Lanczos resampling is the checkpoint `builtin:lanczos` of family `lanczos`, "
            "and only that"
        )
    adapter = _adapter(where, raw.get("ip_adapter"), family)
    if ("identity" in capabilities) != (adapter is not None):
        raise CatalogError(
            f"{where}: a profile has the `identity` capability exactly when it has an `ip_adapter`"
        )
    return Profile(
        name=name,
        ip_adapter=adapter,
        family=family,
        checkpoint=checkpoint,
        # Upscalers and video models keep the scheduler they ship with unless one is named.
        scheduler=str(raw.get("scheduler", "EulerDiscreteScheduler" if kind == "txt2img" else "")),
        resolution=resolution,
        memory_gb=float(memory),
        capabilities=tuple(capabilities),
        description=str(raw.get("description", "")),
        queue=str(raw.get("queue", "")),
        **values,
        **extras,
    )


def _kind_of(family: str) -> str:
    if family in UPSCALE_FAMILIES:
        return "upscale"
    if family in ANIMATE_FAMILIES:
        return "animate"
    return "txt2img"


# Fields of upscale and animate profiles: (default, smallest, largest).
_KIND_FIELDS: dict[str, dict[str, tuple[int, int, int]]] = {
    "upscale": {"tile": (256, 32, 4096), "tile_overlap": (32, 0, 512), "noise_level": (20, 0, 350)},
    "animate": {
        "frames": (25, 2, 128),
        "fps": (7, 1, 60),
        "motion": (127, 1, 255),
        "decode_chunk": (8, 1, 128),
    },
}


def _kind_fields(where: str, raw: Mapping[str, Any], family: str, kind: str) -> dict[str, int]:
    """The tiling fields of an upscale profile, or the motion fields of an animate one, validated."""
    for other, fields in _KIND_FIELDS.items():
        stray = sorted(key for key in fields if key in raw and other != kind)
        if stray:
            raise CatalogError(f"{where}: {', '.join(stray)} apply to {other} profiles only, not {family}")
    values: dict[str, int] = {}
    for key, (default, low, high) in _KIND_FIELDS.get(kind, {}).items():
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CatalogError(f"{where}: `{key}` must be a whole number from {low} to {high}, got {value!r}")
        values[key] = value
    if kind == "upscale":
        if values["tile"] % 8:
            raise CatalogError(f"{where}: `tile` must be a multiple of 8, got {values['tile']}")
        if values["tile_overlap"] * 2 >= values["tile"]:
            raise CatalogError(
                f"{where}: `tile_overlap` must be under half the tile, got {values['tile_overlap']} for "
                f"tile {values['tile']}"
            )
    return values


def _adapter(where: str, raw: Any, family: str) -> AdapterRef | None:
    if raw is None:
        return None
    fields = ("source", "subfolder", "weight_name", "image_encoder_folder")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("source"), str) or not raw["source"]:
        raise CatalogError(
            f'{where}: `ip_adapter` must be a table with a `source`, e.g. {{ source = "h94/IP-Adapter" }}'
        )
    unknown = sorted(set(raw) - set(fields))
    if unknown or any(not isinstance(raw.get(key, ""), str) for key in fields):
        raise CatalogError(f"{where}: `ip_adapter` takes the strings {', '.join(fields)}")
    if family not in ("sd15", "sdxl"):
        raise CatalogError(f"{where}: IP-Adapter identity works with sd15 and sdxl profiles, not {family}")
    adapter = AdapterRef(**{key: str(raw.get(key, "")) for key in fields})
    if adapter.is_tiny and adapter.source != "tiny:ip-adapter":
        raise CatalogError(f"{where}: the tiny adapter is `tiny:ip-adapter`, got {adapter.source!r}")
    return adapter
