from pathlib import Path

from transformers import AutoTokenizer

from reelserve.models.tokenizer import build_byte_tokenizer


def test_special_ids_follow_t5_convention() -> None:
    tokenizer = build_byte_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == 3 + 256


def test_one_id_per_byte_and_eos_appended() -> None:
    tokenizer = build_byte_tokenizer()
    text = "héllo 猫"
    ids = tokenizer(text).input_ids
    assert len(ids) == len(text.encode("utf-8")) + 1
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_pads_to_max_length_with_mask() -> None:
    tokenizer = build_byte_tokenizer()
    batch = tokenizer(
        ["ab", "abcd"], padding="max_length", max_length=8, truncation=True, return_tensors="pt"
    )
    assert batch.input_ids.shape == (2, 8)
    assert batch.attention_mask.sum(dim=1).tolist() == [3, 5]
    assert batch.input_ids[0, 3:].tolist() == [0] * 5


def test_round_trips_through_auto_tokenizer(tmp_path: Path) -> None:
    tokenizer = build_byte_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "a cat on a skateboard, ünïcødé"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert len(loaded) == len(tokenizer)
