from pathlib import Path

from transformers import AutoTokenizer

from reelserve.models.tokenizer import build_word_tokenizer


def test_words_map_to_ids_and_unknown_words_to_unk(tmp_path: Path) -> None:
    tokenizer = build_word_tokenizer(["a", "red", "circle", ","])
    ids = tokenizer("A RED circle, zorble!").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["a", "red", "circle", ",", "<unk>", "<unk>", "</s>"]
    assert tokenizer("").input_ids == [tokenizer.eos_token_id]


def test_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    tokenizer = build_word_tokenizer(["blue", "square"])
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    batch = loaded(["blue square", "square"], padding="max_length", max_length=6, return_tensors="pt")
    assert batch.input_ids.tolist() == [
        tokenizer("blue square").input_ids + [0] * 3,
        tokenizer("square").input_ids + [0] * 4,
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
