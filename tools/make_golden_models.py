#!/usr/bin/env python3
"""Writes the tiny golden checkpoints that tests/runtime compares our runtime against.

Run on the GPU machine (it has PyTorch and transformers; no download is needed):
    python3 tools/make_golden_models.py OUT_DIR
For each variant it builds a random model with transformers' own classes (fixed seed), stores
it in bf16 (safetensors, Hugging Face layout), reloads those bf16 weights into a float32 model,
and records the float32 logits of a fixed token sequence in golden.safetensors
(`token_ids` I32 [T], `logits` F32 [T, vocab]).

Variants: `llama` (untied embeddings, llama3 RoPE scaling, GQA, one model.safetensors) and
`qwen2` (q/k/v biases, tied embeddings, sharded with model.safetensors.index.json).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, initializer_range=0.15, bos_token_id=1, eos_token_id=2)


def variants():
    yield "llama", LlamaForCausalLM, LlamaConfig(
        **COMMON, tie_word_embeddings=False, rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), None
    yield "qwen2", Qwen2ForCausalLM, Qwen2Config(**COMMON, tie_word_embeddings=True,
                                                 rope_theta=1000000.0), "24KB"


def main():
    out = sys.argv[1]
    for name, cls, config, shard in variants():
        torch.manual_seed(1234)
        model = cls(config).to(torch.bfloat16).eval()
        path = os.path.join(out, name)
        kwargs = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(path, safe_serialization=True, **kwargs)
        reference = cls.from_pretrained(path, torch_dtype=torch.float32).eval()
        g = torch.Generator().manual_seed(99)
        ids = torch.randint(3, config.vocab_size, (1, 24), generator=g)
        with torch.no_grad():
            logits = reference(ids).logits[0].float().contiguous()
        save_file({"token_ids": ids[0].to(torch.int32).contiguous(), "logits": logits},
                  os.path.join(path, "golden.safetensors"))
        print(name, sorted(os.listdir(path)))
        print(json.dumps(json.load(open(os.path.join(path, "config.json"))), indent=1))


if __name__ == "__main__":
    main()
