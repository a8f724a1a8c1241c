"""The one place that decides when two requests are "the same video".

Two requests share a key exactly when they would produce the same MP4: the normalised prompt,
plus every parameter that changes pixels or the file (model and its weights, negative prompt,
size, frames, fps, steps, guidance, seed, and the acceleration settings that alter output),
plus the cache scope (a tenant, when the operator keeps tenants apart).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping

from reelserve.schemas import GenerationParams, Role

# Bump when the key's recipe changes, so old entries stop matching rather than matching wrongly.
KEY_VERSION = 1
# Free text whose spelling variants make the same video.
_NORMALISED_TEXT = ("negative_prompt",)


def normalise_prompt(text: str) -> str:
    """Trim, fold whitespace, NFKC, case-fold, and drop punctuation that is noise.

    Punctuation between two letters or digits is kept ("don't", "3.5", "e-mail"): there it is
    part of a word. Elsewhere ("a cat!!", "«a cat»", "a cat.") it is replaced by a space.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P") and not _inside_word(text, i):
            chars.append(" ")
        else:
            chars.append(ch)
    return " ".join("".join(chars).split())


def _inside_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


# What a user brings besides the prompt (a first frame, a clip to re-draw, adapters) and what was added to
# the parameters later (a shift): part of the signature when given, so a request without them keys as it
# did before they existed and earlier cached videos still hit.
_WHEN_GIVEN = frozenset({"input_reference", "input_fit", "source", "strength", "loras", "flow_shift"})


def output_signature(
    params: GenerationParams, model_version: str, output_settings: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Everything but the prompt that decides the output, as a plain dict.

    Requests can only share a video (exactly or semantically) when their signatures are equal.
    ``output_settings`` are server-side options that alter pixels (dtype, step caching, ...).
    """
    signature: dict[str, object] = {
        "v": KEY_VERSION,
        "model_version": model_version,
        "settings": dict(sorted((output_settings or {}).items())),
    }
    for name in GenerationParams.fields_with(Role.PIXELS):
        if name == "prompt":  # keyed apart, normalised, and what the semantic cache matches on
            continue
        value = getattr(params, name)
        if name in _WHEN_GIVEN and value in (None, (), ""):
            continue
        if name == "loras":  # by content and scale, in one order: the name is only what it is called
            value = sorted((ref.sha256, ref.scale) for ref in value)
        signature[name] = normalise_prompt(value) if name in _NORMALISED_TEXT else value
    return signature


def signature_hash(signature: Mapping[str, object], scope: str = "global") -> str:
    """A short, stable id for a signature within a scope (the semantic index is split by it)."""
    return _sha256({"signature": signature, "scope": scope})[:32]


def cache_key(
    params: GenerationParams,
    model_version: str,
    output_settings: Mapping[str, object] | None = None,
    scope: str = "global",
) -> str:
    """The exact-cache key: sha256 hex of the normalised prompt, the output signature and the scope."""
    signature = output_signature(params, model_version, output_settings)
    return _sha256({"prompt": normalise_prompt(params.prompt), "signature": signature, "scope": scope})


def prompt_hash(prompt: str) -> str:
    """Indexes entries by normalised prompt (for invalidation) without storing the prompt."""
    return hashlib.sha256(normalise_prompt(prompt).encode()).hexdigest()[:32]


def _sha256(value: object) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()
