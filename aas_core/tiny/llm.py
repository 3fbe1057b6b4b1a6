"""A random-weight Qwen2.5-Instruct stand-in in the real hub layout, with a real (small) byte-level BPE tokenizer.

The tokenizer is trained offline with the `tokenizers` library on a small built-in corpus, using the
same normaliser, pre-tokeniser (Qwen2's split regex + byte level), decoder, special tokens and chat
template as Qwen2.5, so every byte string round-trips and chat formatting works exactly as for the
real model; only the vocabulary is ~800 tokens instead of 151,643.
"""

from __future__ import annotations

import json
from pathlib import Path

from aas_core.registry import ModelSpec

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokeniser split pattern (its tokenizer.json), so words and digits split the way the real one does."""
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_SYSTEM_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM_DEFAULT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen2.5-Instruct's chat template without its tool-calling branches (the planner calls no tools)."""
TINY_VOCAB = 800


def _corpus() -> list[str]:
    """Training text: the planner's own prompts and a canned plan, so JSON and story words get merges."""
    from aas_core.story import prompts

    example = json.dumps(prompts.EXAMPLE_ANSWER, indent=2)
    return [prompts.SYSTEM, example, prompts.user_message("A fox runs through snow. It stops.", ["fox"], 2)] * 3


def build_tokenizer():
    """A byte-level BPE `tokenizers.Tokenizer` shaped like Qwen2's (special tokens after the regular vocabulary)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, special_tokens=[]
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def _tokenizer_config(tok) -> dict:
    added = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for t in SPECIAL_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tiny_qwen_instruct(folder: Path, spec: ModelSpec) -> None:
    """config.json, generation_config.json, model.safetensors, tokenizer.json/_config.json, vocab.json, merges.txt, LICENSE."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    tok.model.save(str(folder))  # vocab.json + merges.txt, as the slow Qwen2Tokenizer reads them
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(tok), indent=2))
    endoftext, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, max_window_layers=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, bos_token_id=endoftext, eos_token_id=im_end,
        use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    # The real generation_config.json's values (sampling settings included; the planner decodes greedily anyway).
    GenerationConfig(
        bos_token_id=endoftext, pad_token_id=endoftext, eos_token_id=[im_end, endoftext], do_sample=True,
        repetition_penalty=1.1, temperature=0.7, top_p=0.8, top_k=20,
    ).save_pretrained(str(folder))
    (folder / "LICENSE").write_text(f"Tiny random-weight stand-in for {spec.hub_id}; the real weights are {spec.license}.\n")
