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
- probe: a linear classifier (softmax regression, the best of three weight decays) fitted on the
  token states of the training colour words in a sentence ("a {word} ball moving left"), then asked
  for the paraphrase colour words: the most a learned map from the encoder's token states (what the
  denoiser's cross-attention is) can get from them. Also fitted on a wider lexicon of 72 colour words
  that none of the paraphrases use, to see whether more training synonyms would help.

``--encoder DIR`` measures another sentence-transformers checkpoint directory (BERT- or
MPNet-style, loaded with ``AutoModel``) instead of the MiniLM the micro model uses.

    python bench/micro_text_ceiling.py [--encoder DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from reelserve.micro import captions as C
from reelserve.micro.dataset import paraphrase_prompts
from reelserve.micro.world import COLORS, MOTIONS, SHAPES
from reelserve.models.minilm import minilm_components

PARTS: dict = {}
# Twelve words a colour, none of them in the paraphrase set: would more training synonyms help?
WIDE_COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "maroon", "burgundy", "vermilion", "tomato", "garnet", "cardinal", "rouge",
            "blood red", "wine", "strawberry"),
    "green": ("green", "lime", "olive", "forest green", "grass green", "leafy", "moss", "pine", "sage",
              "chartreuse", "verdant", "kelly green"),
    "blue": ("blue", "azure", "sky blue", "ultramarine", "cornflower", "denim", "royal blue", "indigo",
             "turquoise", "aqua", "cyan", "steel blue"),
    "yellow": ("yellow", "golden", "amber", "mustard", "butter", "banana", "saffron", "honey", "gold", "sunny",
               "blond", "citrine"),
    "white": ("white", "snowy", "cream", "chalk", "alabaster", "snow", "silver", "bone", "linen", "frost",
              "porcelain", "off-white"),
    "magenta": ("magenta", "pink", "purple", "lilac", "lavender", "plum", "mauve", "hot pink", "grape",
                "amethyst", "raspberry", "rose"),
}


def load_encoder(directory: str | None) -> None:
    if directory is None:
        PARTS.update(minilm_components())
        return
    from transformers import AutoModel, AutoTokenizer

    PARTS.update(tokenizer=AutoTokenizer.from_pretrained(directory, local_files_only=True),
                 text_encoder=AutoModel.from_pretrained(directory, local_files_only=True).eval())


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


def word_states(words: list[str]) -> torch.Tensor:
    """Each word's mean token state inside "a {word} ball moving left" (after the [CLS] and "a")."""
    states = []
    for word in words:
        batch = PARTS["tokenizer"]([f"a {word} ball moving left"], return_tensors="pt")
        with torch.no_grad():
            hidden = PARTS["text_encoder"](**batch).last_hidden_state[0]
        pieces = len(PARTS["tokenizer"](word, add_special_tokens=False)["input_ids"])
        states.append(hidden[2 : 2 + pieces].mean(0))
    return torch.stack(states)


def probe_ceiling(trained: dict[str, tuple[str, ...]], unseen: dict[str, tuple[str, ...]]) -> float:
    classes = list(trained)
    known = word_states([w for words in trained.values() for w in words])
    labels = torch.tensor([classes.index(v) for v, words in trained.items() for _ in words])
    asked = word_states([w for words in unseen.values() for w in words])
    truth = torch.tensor([classes.index(v) for v, words in unseen.items() for _ in words])
    mean, std = known.mean(0), known.std(0) + 1e-6
    best = 0.0
    for decay in (1e-3, 1e-2, 1e-1):
        torch.manual_seed(0)
        weight = torch.zeros(known.shape[1], len(classes), requires_grad=True)
        bias = torch.zeros(len(classes), requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
        for _ in range(500):
            optimizer.zero_grad()
            logits = ((known - mean) / std) @ weight + bias
            loss = torch.nn.functional.cross_entropy(logits, labels) + decay * (weight**2).sum()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            guessed = (((asked - mean) / std) @ weight + bias).argmax(1)
        best = max(best, (guessed == truth).float().mean().item())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="a sentence-transformers checkpoint directory (default: MiniLM)")
    load_encoder(parser.parse_args().encoder)
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
    training = probe_ceiling(C.COLOR_WORDS, C.PARAPHRASE_COLOR_WORDS)
    wide = probe_ceiling(WIDE_COLOR_WORDS, C.PARAPHRASE_COLOR_WORDS)
    print(f"\ncolour, linear probe on token states: {training * 100:.1f} % from the training colour words, "
          f"{wide * 100:.1f} % from {sum(map(len, WIDE_COLOR_WORDS.values()))} wider colour words")


if __name__ == "__main__":
    main()
