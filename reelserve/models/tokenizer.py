"""An offline stand-in for the UMT5 tokenizer, for toy pipelines that must not touch the hub."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"
# Fixed ids, matching T5's convention (pad=0, eos=1, unk=2) so padding masks look like the real thing.
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: one id per UTF-8 byte (259 ids in all), every prompt ends in ``</s>``.

    Any text encodes without ``<unk>``. It round-trips through ``save_pretrained`` and
    ``AutoTokenizer.from_pretrained``, so a toy pipeline saved to disk loads like a real one.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    # Sorted so ids do not depend on set iteration order.
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    # Empty merges: BPE then never joins bytes, which keeps the tokenizer tiny and exact.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, vocab[EOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN
    )
