import re

import numpy as np

from reelserve.micro.captions import (
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    combinations,
    is_held_out,
    vocabulary,
)
from reelserve.micro.dataset import (
    eval_prompts,
    first_frame_prompts,
    held_out_samples,
    paraphrase_prompts,
    seen_prompts,
    training_samples,
)
from reelserve.micro.world import BACKGROUNDS, COLORS, FRAMES, MOTIONS, SHAPES, SIZE


def test_same_seed_same_clips_and_captions() -> None:
    first, again = training_samples(6, seed=11), training_samples(6, seed=11)
    assert [s.caption for s in first] == [s.caption for s in again]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.render(), b.render())


def test_different_seeds_differ() -> None:
    a, b = training_samples(6, seed=1), training_samples(6, seed=2)
    assert [s.scene for s in a] != [s.scene for s in b]


def test_clips_are_17_frames_of_one_moving_object() -> None:
    for sample in training_samples(20, seed=3):
        clip = sample.render()
        assert clip.shape == (FRAMES, SIZE, SIZE, 3) and clip.dtype == np.uint8
        background = np.array(BACKGROUNDS[sample.scene.background])
        object_pixels = np.abs(clip.astype(int) - background).sum(-1) > 60
        assert object_pixels.any(axis=(1, 2)).all(), "the object is in every frame"
        moved = not np.array_equal(object_pixels[0], object_pixels[-1])
        assert moved == (sample.scene.motion != "still")


def test_the_world_has_the_promised_variety() -> None:
    assert len(SHAPES) == 3 and len(COLORS) >= 6 and len(MOTIONS) == 5 and len(BACKGROUNDS) >= 3
    scenes = [s.scene for s in training_samples(400, seed=4)]
    assert {s.shape for s in scenes} == set(SHAPES)
    assert {s.color for s in scenes} == set(COLORS)
    assert {s.motion for s in scenes} == set(MOTIONS)
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert len({s.caption for s in training_samples(400, seed=4)}) > 300, "captions vary"


def test_held_out_combinations_and_phrasings_never_reach_training() -> None:
    train, held = set(combinations(held_out=False)), set(combinations(held_out=True))
    assert train and held and not train & held
    assert len(train) + len(held) == len(SHAPES) * len(COLORS) * len(MOTIONS)
    for sample in training_samples(500, seed=5):
        scene = sample.scene
        assert not is_held_out(scene.shape, scene.color, scene.motion)
    for sample in held_out_samples(50, seed=5):
        assert is_held_out(sample.scene.shape, sample.scene.color, sample.scene.motion)
    assert not set(TRAIN_TEMPLATES) & set(HELD_OUT_TEMPLATES)


def test_eval_prompts_are_fixed_and_all_held_out() -> None:
    prompts = eval_prompts()
    assert prompts == eval_prompts()
    assert {(p.shape, p.color, p.motion) for p in prompts} == set(combinations(held_out=True))


def test_seen_prompts_are_fixed_distinct_training_combinations() -> None:
    prompts = seen_prompts()
    assert prompts == seen_prompts() and len(prompts) == len(eval_prompts())
    combos = [(p.shape, p.color, p.motion) for p in prompts]
    assert len(set(combos)) == len(combos)
    assert set(combos) <= set(combinations(held_out=False))
    assert all(_words(p.prompt) <= set(vocabulary()) for p in prompts)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_training_words_are_the_vocabulary_and_held_out_phrasing_has_other_words() -> None:
    from transformers import BertTokenizerFast

    from reelserve.micro.architecture import MAX_SEQUENCE_LENGTH
    from reelserve.models.minilm import minilm_dir

    known = set(vocabulary())
    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir())
    for sample in training_samples(300, seed=6):
        assert _words(sample.caption) <= known, sample.caption
        # Every caption fits the word pieces a prompt is encoded with, so none is ever cut short.
        assert len(tokenizer(sample.caption).input_ids) <= MAX_SEQUENCE_LENGTH, sample.caption
    assert any(not _words(p.prompt) <= known for p in eval_prompts()), "held-out templates use words training never saw"


def test_paraphrases_use_no_content_word_of_the_training_captions() -> None:
    import re

    prompts = paraphrase_prompts()
    assert prompts == paraphrase_prompts() and len(prompts) >= 30
    assert len({(p.shape, p.color, p.motion) for p in prompts}) == len(prompts)
    trained = set(vocabulary())
    shared = {word for p in prompts for word in re.findall(r"[a-z]+", p.prompt)} & trained
    assert shared <= {"a", "an", "in", "the", "one"}, shared


def test_first_frame_cases_cover_every_motion_and_the_truth_keeps_its_object() -> None:
    from dataclasses import replace

    from reelserve.micro.adherence import first_frame_score
    from reelserve.micro.evaluate import judge
    from reelserve.micro.world import render

    cases = first_frame_prompts()
    assert cases == first_frame_prompts() and {c.scene.motion for c in cases} == set(MOTIONS)
    for case in cases:
        assert first_frame_score(judge(render(case.scene)), case) == {"motion": True, "kept": True}
    case = cases[0]
    moved = replace(case.scene, x=case.scene.x + 6)  # the same object, drawn somewhere else
    assert first_frame_score(judge(render(moved)), case)["kept"] is False
    other = replace(case.scene, color="yellow" if case.scene.color != "yellow" else "red")
    assert first_frame_score(judge(render(other)), case)["kept"] is False
