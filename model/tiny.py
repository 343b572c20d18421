"""A tiny causal LM and tokenizer built locally, for tests of training, sampling and batching.

No downloads: the tokenizer is a byte-level BPE trained in milliseconds on a few genre names,
the model a two-layer ``LlamaConfig(hidden_size=16, ...)`` with random weights. The folder is
loadable by :meth:`model.sampler.Sampler.load` and trainable by :mod:`model.train`.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "genre: post rock\n",
    "genre: dream pop\n",
    "like: shoegaze\ngenre: midwest shoegaze\n",
    "genre: dark ambient\n",
    "genre: drum and bass\n",
    "genre: k-pop\n",
    "genre: lo-fi hip hop\n",
    "like: techno\ngenre: detroit techno\n",
    "genre: música popular brasileira\n",
    "genre: zydeco\n",
]

EOS = "<|endoftext|>"


def build_tiny_model(path: str | Path, *, seed: int = 0, vocab_size: int = 384) -> Path:
    """Write a tiny random Llama model and its tokenizer to ``path`` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    tokenizer.save_pretrained(str(target))

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(target))
    return target
