"""Tiny random-weight diffusers pipelines, built on this machine with no download.

A tiny pipeline has the real architecture of its family (same classes, same latent layout, a VAE that
downsamples by 8) with about a thousandth of the weights (1.6 million for sd15, 2.2 million for sdxl),
so that a job runs end to end on a CPU in about a second. Its images are noise. It is saved with
`save_pretrained` and loaded back with `DiffusionPipeline.from_pretrained(path)` exactly like a real
checkpoint, so the worker has no special case for it. The components follow diffusers' own fast tests
(`get_dummy_components`), except for the VAE (four blocks, like the real ones) and the tokenizer
(written here, since nothing may be downloaded).

torch, diffusers and transformers are imported inside the functions that need them: importing this
module is cheap.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TINY_FAMILIES: tuple[str, ...] = ("sd15", "sdxl")

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77

# Latents are 4 x H/8 x W/8, as in every SD 1.x / SDXL checkpoint; the UNet's sample_size (in latent
# pixels) makes 256 x 256 the pipelines' default image size.
_LATENT_CHANNELS = 4
_SAMPLE_SIZE = 32

# The hidden size of each tiny CLIP text encoder and the projection of SDXL's second one.
_TEXT_HIDDEN = 32
_TEXT_PROJECTION = 32
# SDXL's micro-conditioning: 6 numbers (original size, crop corner, target size), each embedded in
# `_ADDITION_TIME_EMBED_DIM` dimensions, then concatenated with text_encoder_2's pooled projection.
_ADDITION_TIME_EMBED_DIM = 8
_SDXL_ADD_TIME_IDS = 6
_SDXL_ADD_EMBED_DIM = _SDXL_ADD_TIME_IDS * _ADDITION_TIME_EMBED_DIM + _TEXT_PROJECTION

# The words the tiny BPE learns its merges from, most weight first: the vocabulary of portrait prompts,
# then common English. Prompts then split into whole words or a few sensible pieces.
_WORD_TEXT = """
portrait photo photograph photography woman women girl boy child young elderly smiling smile laughing
wearing dress shirt jacket suit hat glasses beard hair long short curly blonde brown black red blue
green golden silver soft studio lighting natural sunlight cinematic dramatic painting oil watercolor
sketch pencil drawing illustration digital art style detailed highly realistic photorealistic sharp
focus lens bokeh background portrait closeup close headshot profile view looking camera eyes lips skin
freckles makeup elegant beautiful handsome serene happy sad serious warm cold moody vintage film grain
canon nikon sony mm anime cartoon character fantasy knight queen king warrior wizard astronaut city
street forest beach garden night rain snow autumn spring summer winter sunset golden hour

the of and to a in is it you that he was for on are with as his they be at one have this from or had by
not word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two
has look more day could go come did number sound no most people my over know water than call first who
may down side been now find any new work part take get place made live where after back little only
round man year came show every good me give our under name very through just form sentence great think
say help low line differ turn cause much mean before move right boy old too same tell does set three
want air well also play small end put home read hand port large spell add even land here must big high
such follow act why ask men change went light kind off need house picture try us again animal point
mother world near build self earth father head stand own page should country found answer school grow
study still learn plant cover food sun four between state keep eye never last let thought city tree
cross farm hard start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group always music those
both mark often letter until mile river car feet care second book carry took science eat room friend
began idea fish mountain stop once base hear horse cut sure watch color face wood main
"""
_WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

# Enough merges to cover the words above and the common pairs between them; with the 512 byte-level
# symbols and the two special tokens this makes a vocabulary of at most 1000 entries.
_NUM_MERGES = 486


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return dict(sorted(table.items()))


def _learn_merges(words: Sequence[str], num_merges: int) -> list[tuple[str, str]]:
    """A small byte-pair encoding, learned from `words` (earlier words weigh more), deterministically."""
    weights: Counter[tuple[str, ...]] = Counter()
    for rank, word in enumerate(words):
        symbols = (*word[:-1], word[-1] + "</w>")
        weights[symbols] += len(words) - rank
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, weight in weights.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += weight
        if not pairs:
            break
        # Most frequent pair; ties go to the alphabetically first one, so the result never varies.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, weight in weights.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += weight
        weights = merged
    return merges


@functools.cache
def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's layout: byte symbols, the same with `</w>`, one entry per merge, then BOS and EOS.

    Cached (learning the merges takes a few tenths of a second): callers must not modify the result.
    """
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = _learn_merges(_WORDS, _NUM_MERGES)
    vocab = {token: i for i, token in enumerate(tokens)}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab, merges


def write_clip_tokenizer(dest: Path) -> None:
    """Write a small CLIP BPE tokenizer in `dest`: vocab.json, merges.txt and its configuration.

    Byte-level like CLIP's: every byte has a symbol, alone and with the `</w>` end-of-word suffix, so any
    text tokenizes; a few hundred merges learned from common English and portrait words make prompts
    split into sensible pieces. BOS and EOS are the last two ids (as in CLIP); EOS also pads. Loads with
    `CLIPTokenizer.from_pretrained(dest)` or `CLIPTokenizer(dest / "vocab.json", dest / "merges.txt")`.
    """
    vocab, merges = _clip_vocab()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges)
    (dest / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    }
    added_tokens = {
        str(vocab[token]): {
            "content": token,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in (BOS_TOKEN, EOS_TOKEN)
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added_tokens,
        **special,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def _check_family(family: str) -> None:
    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny pipeline for family {family!r}; tiny families: {', '.join(TINY_FAMILIES)}")


def _load_tokenizer(path: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path))


def _text_encoder(tokenizer: Any, *, hidden_act: str, with_projection: bool, seed: int) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        projection_dim=_TEXT_PROJECTION,
        num_hidden_layers=5,  # SDXL reads the penultimate layer: it needs at least two
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        # The tokenizer's real ids. With eos_token_id == 2 CLIPTextModel would fall back to "the highest
        # id is EOS" when pooling, a legacy special case we do not want to depend on.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config).eval()


def _vae(*, seed: int, scaling_factor: float) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four blocks, three downsamplings: latents are 1/8 of the image on each side, as in SD and SDXL.
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=_LATENT_CHANNELS,
        sample_size=_SAMPLE_SIZE * 8,
        scaling_factor=scaling_factor,
    ).eval()


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    # Stable Diffusion's training noise schedule, as in the sd15 and sdxl checkpoints' scheduler configs.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def _sd15(tokenizer_dir: Path, seed: int) -> Any:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = _load_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=_SAMPLE_SIZE,
        in_channels=_LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=_TEXT_HIDDEN,
    ).eval()
    text_encoder = _text_encoder(tokenizer, hidden_act="quick_gelu", with_projection=False, seed=seed)
    return StableDiffusionPipeline(
        vae=_vae(seed=seed, scaling_factor=0.18215),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(tokenizer_dir: Path, seed: int) -> Any:
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = _load_tokenizer(tokenizer_dir)
    tokenizer_2 = _load_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=_SAMPLE_SIZE,
        in_channels=_LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        # The two encoders' penultimate hidden states are concatenated along the feature axis.
        cross_attention_dim=2 * _TEXT_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=_ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=_SDXL_ADD_EMBED_DIM,
    ).eval()
    text_encoder = _text_encoder(tokenizer, hidden_act="quick_gelu", with_projection=False, seed=seed)
    text_encoder_2 = _text_encoder(tokenizer_2, hidden_act="gelu", with_projection=True, seed=seed + 1)
    return StableDiffusionXLPipeline(
        vae=_vae(seed=seed, scaling_factor=0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_pipeline(family: str, dest: Path, *, seed: int = 0) -> Path:
    """Build the tiny random-weight pipeline of `family` and save it (save_pretrained) in `dest`.

    Deterministic: the same family and seed give the same weights, bit for bit. The global torch RNG is
    left as it was. The pipeline is built in a temporary folder next to `dest` and renamed into place,
    so a crash never leaves a half-written model; an existing `dest` is replaced. Returns `dest`.
    """
    _check_family(family)
    import torch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(dest) as tmp:
        tokenizer_dir = tmp / "_tokenizer"
        write_clip_tokenizer(tokenizer_dir)
        with torch.random.fork_rng(devices=[]):
            pipe = _sd15(tokenizer_dir, seed) if family == "sd15" else _sdxl(tokenizer_dir, seed)
        model_dir = tmp / "model"
        pipe.save_pretrained(str(model_dir), safe_serialization=True)
        # transformers 5 saves tokenizer.json only; the vocab and merges files keep the folder loadable
        # by transformers 4's (slow) CLIPTokenizer too.
        for name in ("tokenizer", "tokenizer_2"):
            if (model_dir / name).is_dir():
                for file in ("vocab.json", "merges.txt"):
                    if not (model_dir / name / file).exists():
                        shutil.copyfile(tokenizer_dir / file, model_dir / name / file)
        replace_dir(model_dir, dest)
    return dest


def ensure_tiny_pipeline(family: str, models_dir: Path) -> Path:
    """The saved tiny pipeline of `family` under `models_dir` (`models_dir/tiny-<family>`), built if missing.

    Safe when several processes race: builders take a lock file next to the model, and whoever comes
    second finds the model built. The model appears by an atomic rename, so a process that does not take
    the lock never sees a half-written one.
    """
    _check_family(family)
    dest = Path(models_dir) / f"tiny-{family}"
    return build_once(
        dest, lambda path: (path / "model_index.json").is_file(), lambda: build_tiny_pipeline(family, dest)
    )


def build_once(dest: Path, is_built: Callable[[Path], bool], build: Callable[[], object]) -> Path:
    """`dest`, made by `build()` unless `is_built(dest)`; safe when several processes race.

    Builders take a lock file beside `dest`, and whoever comes second finds it built. `build` must
    write by atomic rename (see `scratch_dir`, `replace_dir`), so a reader that takes no lock never
    sees a half-written folder.
    """
    from filelock import FileLock

    if is_built(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if not is_built(dest):
            # What a builder killed mid-way left behind (it holds the lock no more).
            for leftover in dest.parent.glob(f".{dest.name}.*"):
                if leftover.is_dir() and leftover.suffix in (".tmp", ".old"):
                    shutil.rmtree(leftover, ignore_errors=True)
            build()
    return dest


@contextmanager
def scratch_dir(dest: Path) -> Iterator[Path]:
    """A temporary folder beside `dest` (same file system, so renames are atomic), always removed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dest: Path) -> None:
    """Move the folder `src` to `dest`, replacing what is there; `src` must be beside `dest`."""
    try:
        os.rename(src, dest)
        return
    except OSError:
        if not dest.exists():
            raise
    # `dest` exists: move it aside first (both renames are atomic), then drop the old copy.
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.rename(dest, old / "previous")
    os.rename(src, dest)
    shutil.rmtree(old, ignore_errors=True)
