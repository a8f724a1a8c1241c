"""The cache key: requests that make the same video share it; anything that changes the video splits it."""

from __future__ import annotations

import hashlib
import json

import pytest

from reelserve.cache.key import KEY_VERSION, cache_key, normalise_prompt, prompt_hash, signature_hash
from reelserve.schemas import GenerationParams
from reelserve.schemas.inputs import LoraRef

BASE = GenerationParams(
    model="wan-1.3b",
    prompt="A red fox runs through fresh snow",
    negative_prompt="blurry",
    width=832,
    height=480,
    num_frames=33,
    fps=16,
    num_inference_steps=30,
    guidance_scale=5.0,
    guidance_scale_2=None,
    seed=42,
)
VERSION = "sha-abc123"


def key_for(**changes: object) -> str:
    return cache_key(BASE.model_copy(update=changes), VERSION)


@pytest.mark.parametrize(
    "prompt",
    [
        "  A red fox   runs through\tfresh snow ",  # whitespace
        "a RED Fox runs through FRESH snow",  # case
        "Ａ ｒｅｄ ｆｏｘ ｒｕｎｓ ｔｈｒｏｕｇｈ ｆｒｅｓｈ ｓｎｏｗ",  # full-width, folded by NFKC
        "A red fox runs through fresh snow.",  # trailing punctuation
        "A red fox runs through fresh snow!!!",
        "«A red fox runs through fresh snow»",
        "A red fox runs through fresh snow ！",  # full-width exclamation mark
    ],
)
def test_equivalent_prompts_share_a_key(prompt: str) -> None:
    assert key_for(prompt=prompt) == key_for()


def test_equivalent_negative_prompts_share_a_key() -> None:
    assert key_for(negative_prompt="  BLURRY. ") == key_for()


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Don't stop", "don't stop"),
        ("Version 3.5 of e-mail", "version 3.5 of e-mail"),
        ("a cat... sleeping!", "a cat sleeping"),
        ("ﬁne Straße", "fine strasse"),  # ligature (NFKC) and ß (case folding)
    ],
)
def test_punctuation_inside_words_is_kept(text: str, normalised: str) -> None:
    assert normalise_prompt(text) == normalised


def test_different_prompts_get_different_keys() -> None:
    assert key_for(prompt="A red fox runs through fresh sand") != key_for()
    assert key_for(prompt="A red fox doesn't run") != key_for(prompt="A red fox doesn t run")


# Every GenerationParams field other than the prompt, with a value that changes the output.
CHANGED_FIELDS = {
    "model": "wan-14b",
    "negative_prompt": "low quality",
    "width": 480,
    "height": 832,
    "num_frames": 49,
    "fps": 24,
    "num_inference_steps": 31,
    "guidance_scale": 5.5,
    "guidance_scale_2": 3.0,
    "seed": 43,
    "input_reference": "sha256:another-first-frame",
    "input_fit": "pad",
    "source": "sha256:another-clip",
    "strength": 0.4,
    "loras": (LoraRef(name="style", sha256="sha256:ab", scale=0.8),),
    "flow_shift": 3.0,
}


# Fields that change no pixel of the video, so no cache key: a request that asks for live previews
# is served the cached video of the same request without them.
SAME_VIDEO_FIELDS = {"preview_every": 5}


def test_every_parameter_is_covered() -> None:
    # A new GenerationParams field must be added here, and so considered for the key.
    assert set(GenerationParams.model_fields) - {"prompt"} == set(CHANGED_FIELDS) | set(SAME_VIDEO_FIELDS)


@pytest.mark.parametrize(("field", "value"), SAME_VIDEO_FIELDS.items())
def test_a_parameter_that_changes_no_pixel_leaves_the_key(field: str, value: object) -> None:
    assert key_for(**{field: value}) == key_for()


@pytest.mark.parametrize(("field", "value"), CHANGED_FIELDS.items())
def test_each_output_parameter_changes_the_key(field: str, value: object) -> None:
    assert key_for(**{field: value}) != key_for()


def test_model_version_output_settings_and_scope_change_the_key() -> None:
    base = cache_key(BASE, VERSION)
    assert cache_key(BASE, "sha-def456") != base
    assert cache_key(BASE, VERSION, {"dtype": "bfloat16"}) != base
    assert cache_key(BASE, VERSION, {"dtype": "bfloat16"}) != cache_key(BASE, VERSION, {"dtype": "float16"})
    assert cache_key(BASE, VERSION, scope="tenant-a") != base
    assert cache_key(BASE, VERSION, scope="tenant-a") != cache_key(BASE, VERSION, scope="tenant-b")


def test_output_settings_order_does_not_matter() -> None:
    one = cache_key(BASE, VERSION, {"dtype": "bfloat16", "step_cache": True})
    assert one == cache_key(BASE, VERSION, {"step_cache": True, "dtype": "bfloat16"})


def test_key_follows_the_documented_recipe() -> None:
    """Recomputed here from the recipe, so a change to it (which orphans every stored entry) is deliberate."""
    signature = {
        "v": KEY_VERSION,
        "model": "wan-1.3b",
        "model_version": VERSION,
        "negative_prompt": "blurry",
        "width": 832,
        "height": 480,
        "num_frames": 33,
        "fps": 16,
        "num_inference_steps": 30,
        "guidance_scale": 5.0,
        "guidance_scale_2": None,
        "seed": 42,
        "settings": {"dtype": "bfloat16"},
    }
    document = {"prompt": "a red fox runs through fresh snow", "signature": signature, "scope": "global"}
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert cache_key(BASE, VERSION, {"dtype": "bfloat16"}) == hashlib.sha256(encoded).hexdigest()
    assert KEY_VERSION == 1


def test_prompt_hash_and_signature_hash_are_stable() -> None:
    assert prompt_hash("  A Red fox! ") == hashlib.sha256(b"a red fox").hexdigest()[:32]
    signature = {"v": 1, "model": "m"}
    encoded = json.dumps({"signature": signature, "scope": "t"}, sort_keys=True, separators=(",", ":"))
    assert signature_hash(signature, "t") == hashlib.sha256(encoded.encode()).hexdigest()[:32]
