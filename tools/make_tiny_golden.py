#!/usr/bin/env python3
"""Greedy generations of models/kvcomm-tiny by transformers, for tests/runtime/tiny_model_test.

Run on the GPU machine (PyTorch, transformers and sentencepiece are there):
    python3 tools/make_tiny_golden.py models/kvcomm-tiny bench/tasks OUT.json
Prompts: the first turn of the first held-out task of each type and four passages of held-out
text. Each is tokenized with the model's tokenizer.model (BOS first); transformers'
LlamaForCausalLM then continues it greedily for 64 tokens (no stop token), once with float32
weights and attention and once in bfloat16. Writes prompt text, prompt ids and both continuations.
"""
import json
import os
import sys

import sentencepiece
import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tasks  # noqa: E402

NEW_TOKENS = 64


def prompts(task_dir):
    templates = make_tasks.load_templates()
    for task_type in make_tasks.TYPES:
        with open(os.path.join(task_dir, f"{task_type}.jsonl")) as f:
            task = json.loads(f.readline())
        segments, _ = make_tasks.reference_runs(task, templates)[0]
        yield "".join(text for _, text in segments)
    with open(os.path.join(task_dir, "long_context.jsonl")) as f:
        record = json.loads(f.readline())["input"]
    for start in (0, 700, 1400, 2100):
        yield record[start:start + 400]


@torch.no_grad()
def greedy(model, ids):
    ids = torch.tensor([ids], device="cuda")
    for _ in range(NEW_TOKENS):
        next_id = model(ids).logits[0, -1].float().argmax()
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, -NEW_TOKENS:].tolist()


def main():
    model_dir, task_dir, out = sys.argv[1:4]
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    models = {name: LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()
              for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cases = []
    for text in prompts(task_dir):
        ids = [sp.bos_id()] + sp.encode(text)
        case = {"prompt": text, "prompt_ids": ids}
        for name, model in models.items():
            case[name] = greedy(model, ids)
        case["float32_text"] = sp.decode(case["float32"])
        cases.append(case)
        print(f"{len(ids)} prompt tokens, fp32 == bf16: {case['float32'] == case['bfloat16']}")
    with open(out, "w") as f:
        json.dump({"model": "models/kvcomm-tiny", "new_tokens": NEW_TOKENS, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
