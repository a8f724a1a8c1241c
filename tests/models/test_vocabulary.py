import json
from pathlib import Path

from reelserve.models.micro import MICRO_CARD, MICRO_WEIGHTS
from reelserve.models.vocabulary import known_words, unknown_words_warning

KNOWN = frozenset({"red", "circle", "moving", "right"})


def test_a_prompt_with_no_known_content_word_is_warned_about_by_name() -> None:
    warning = unknown_words_warning("A cat playing the piano.", KNOWN, "Try shapes.")
    assert warning is not None and "(cat, playing, piano)" in warning and warning.endswith("Try shapes.")


def test_one_known_word_or_no_content_words_means_no_warning() -> None:
    assert unknown_words_warning("a crimson circle gliding", KNOWN, "") is None
    assert unknown_words_warning("a the of", KNOWN, "") is None
    assert unknown_words_warning("a cat", None, "") is None  # a model without a vocabulary never warns


def test_vocabulary_files_are_read_once_and_a_missing_one_is_none(tmp_path: Path) -> None:
    (tmp_path / "vocabulary.json").write_text(json.dumps(["red", "ball"]))
    assert known_words(tmp_path / "vocabulary.json") == {"red", "ball"}
    assert known_words(tmp_path / "missing.json") is None
    shipped = known_words(MICRO_WEIGHTS / "vocabulary.json")
    assert shipped is not None and {"red", "circle", "moving", "right"} <= shipped
    assert "circle" in MICRO_CARD.about
