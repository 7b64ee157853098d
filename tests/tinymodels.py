"""Tiny random-weight models and a locally trained tokenizer, built once per test session."""

from __future__ import annotations

import sysconfig
from pathlib import Path


def training_text() -> list[str]:
    """Real local text: Python stdlib sources (code) plus their docstrings (prose)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for p in sorted(lib.glob("*.py"))[:120]:
        texts.append(p.read_text(encoding="utf-8", errors="replace"))
    return texts


def build_tokenizer(out: Path, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(out)
    return fast


def build_model(out: Path, arch: str = "llama", tokenizer_dir: Path | None = None, seed: int = 0):
    """Save a tiny random-weight causal LM of the given architecture (+ tokenizer) to `out`."""
    import torch
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=512, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "llama":
        cfg = LlamaConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          **common)
        model = LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          **common)
        model = Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=1024, **common)
        model = GPT2LMHeadModel(cfg)
    elif arch == "mixtral":  # MoE: every layer routed, top-2 of 8 experts
        from transformers import MixtralConfig, MixtralForCausalLM

        cfg = MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                            max_position_embeddings=1024, **common)
        model = MixtralForCausalLM(cfg)
    elif arch == "qwen2_moe":  # MoE with a shared expert, and a dense first layer (mlp_only_layers)
        from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

        cfg = Qwen2MoeConfig(hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                             shared_expert_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, num_experts=16, num_experts_per_tok=4, mlp_only_layers=[0],
                             max_position_embeddings=1024, **common)
        model = Qwen2MoeForCausalLM(cfg)
    else:
        raise ValueError(arch)
    model.save_pretrained(out)
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


# A Qwen3-style template: special tokens around every turn, and a thinking switch it reads.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if enable_thinking is defined and not enable_thinking %}<s>nothink</s>\n{% endif %}"
)


def with_chat_template(model_dir: Path, out: Path) -> Path:
    """A copy of a saved model whose tokenizer has CHAT_TEMPLATE."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(model_dir, out)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    return out
