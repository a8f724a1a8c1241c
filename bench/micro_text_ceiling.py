"""How much of a paraphrase's meaning does the frozen text encoder itself carry?

The micro model can only understand a word it never saw in training ("crimson", "orb", "ascending")
as well as all-MiniLM-L6-v2 places that word near the training words of the same meaning. This
measures that ceiling with MiniLM alone, no video model involved, on the paraphrase set the micro
evaluation uses (``reelserve micro eval --prompts paraphrase``):

- sentence: each paraphrase prompt's nearest training caption (mean-pooled MiniLM, cosine) over a
  bank of 12 training captions for every (shape, colour, motion); is that caption's colour (shape,
  motion) the prompt's?
- word: each paraphrase word alone, against every training synonym alone; is the nearest one's
  attribute value the right one?

    python bench/micro_text_ceiling.py
"""

from __future__ import annotations

import numpy as np
import torch

from reelserve.micro import captions as C
from reelserve.micro.dataset import paraphrase_prompts
from reelserve.micro.world import COLORS, MOTIONS, SHAPES
from reelserve.models.minilm import minilm_components

PARTS = minilm_components()


def embed(texts: list[str]) -> torch.Tensor:
    batch = PARTS["tokenizer"](texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = PARTS["text_encoder"](**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)


def sentence_ceiling() -> dict[str, float]:
    rng = np.random.default_rng(0)
    bank, labels = [], []
    for shape in SHAPES:
        for color in COLORS:
            for motion in MOTIONS:
                for _ in range(12):
                    bank.append(C.caption(rng, shape, color, motion, "black", C.TRAIN_TEMPLATES))
                    labels.append({"shape": shape, "color": color, "motion": motion})
    prompts = paraphrase_prompts()
    nearest = (embed([p.prompt for p in prompts]) @ embed(bank).T).argmax(dim=1)
    return {
        attribute: sum(labels[int(j)][attribute] == getattr(p, attribute) for p, j in zip(prompts, nearest, strict=True))
        / len(prompts)
        for attribute in ("color", "shape", "motion")
    }


def word_ceiling(trained: dict[str, tuple[str, ...]], unseen: dict[str, tuple[str, ...]]) -> float:
    words = [(value, word) for value, synonyms in trained.items() for word in synonyms]
    known = embed([word for _, word in words])
    asked = [(value, word) for value, synonyms in unseen.items() for word in synonyms]
    nearest = (embed([word for _, word in asked]) @ known.T).argmax(dim=1)
    return sum(words[int(j)][0] == value for (value, _), j in zip(asked, nearest, strict=True)) / len(asked)


def main() -> None:
    sentence = sentence_ceiling()
    word = {
        "color": word_ceiling(C.COLOR_WORDS, C.PARAPHRASE_COLOR_WORDS),
        "shape": word_ceiling(C.SHAPE_WORDS, C.PARAPHRASE_SHAPE_WORDS),
        "motion": word_ceiling(C.MOTION_WORDS, C.PARAPHRASE_MOTION_WORDS),
    }
    print("| attribute | nearest training caption (sentence) | nearest training word (word alone) |")
    print("|---|---|---|")
    for attribute in ("color", "shape", "motion"):
        print(f"| {attribute} | {sentence[attribute] * 100:.1f} % | {word[attribute] * 100:.1f} % |")


if __name__ == "__main__":
    main()
