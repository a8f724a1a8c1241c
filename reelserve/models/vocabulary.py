"""What a model was trained to understand, so that a prompt it cannot follow gets a warning rather
than a silent guess. Only the micro model has a closed vocabulary: the words of its training
captions, written beside its weights as ``vocabulary.json``."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

# Words that carry no content: a prompt made of only these says nothing about the scene either way.
FUNCTION_WORDS = frozenset(
    "a an the of on in at to into onto over under with and or is are be it its this that one some "
    "very slowly quickly please show me make video clip of we see there here".split()
)


@cache
def known_words(vocabulary_file: Path) -> frozenset[str] | None:
    """The words in ``vocabulary_file`` (a JSON list), or None when there is no such file."""
    if not vocabulary_file.is_file():
        return None
    return frozenset(json.loads(vocabulary_file.read_text()))


def unknown_words_warning(prompt: str, known: frozenset[str] | None, hint: str) -> str | None:
    """A warning when the prompt has content words and not one of them is ``known``; else None."""
    if known is None:
        return None
    content = [w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in FUNCTION_WORDS]
    if not content or any(w in known for w in content):
        return None
    listed = ", ".join(dict.fromkeys(content))
    return f"none of the prompt's words ({listed}) was in this model's training, so the video may not follow it. {hint}"
