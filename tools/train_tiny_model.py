#!/usr/bin/env python3
"""Trains models/kvcomm-tiny: a ~19M-parameter Llama on English docs and the multi-agent tasks.

Run on the GPU machine (PyTorch, transformers and sentencepiece are there), after
tools/prepare_corpus.py has written build-train/ here:
    python3 tools/train_tiny_model.py --data build-train --out OUT_DIR [--steps N | --minutes M]
With --minutes the step count is fixed after timing the first steps and printed; pass it as
--steps to reproduce the model exactly (same seeds, same data order).

Data: 30% of the rows are the training text (Linux kernel and Python documentation), 70% are
multi-agent task turns drawn fresh from tools/make_tasks.py with training seeds, rendered and
tokenized segment by segment exactly as the pipeline runner does. Task rows carry loss on the
agents' replies only; gaps at their ends are filled with training text. Rows of one sequence
share one causal window, documents separated by BOS.

Writes OUT_DIR in the Hugging Face layout (config.json, bf16 safetensors shards under 16 MiB with
their index, tokenizer.model, generation_config.json), checks that transformers'
LlamaForCausalLM loads it with the trained model's logits, and writes OUT_DIR/train_report.json:
steps, tokens, time, held-out perplexity and greedy accuracy per task type on held-out tasks.
"""
import argparse
import json
import lzma
import math
import os
import random
import shutil
import sys
import time

import sentencepiece
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tasks  # noqa: E402

CONFIG = dict(vocab_size=8000, hidden_size=384, intermediate_size=1024, num_hidden_layers=10,
              num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=2048,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1,
              eos_token_id=2)
SEQ = 2048
BATCH = 32
SEED = 1234
TASK_ROWS = 0.7  # fraction of rows made of task turns; the rest is training text
TASK_WEIGHTS = {"fact_relay": 0.22, "aggregation": 0.35, "rag": 0.35, "long_context": 0.08}
NEWLINE = "\n"


# ---- model (Hugging Face Llama parameter names, rotate-half RoPE) ------------------------------
class RmsNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c["hidden_size"] // self.heads
        d = c["hidden_size"]
        self.q_proj = torch.nn.Linear(d, self.heads * self.head_dim, bias=False)
        self.k_proj = torch.nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = torch.nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = torch.nn.Linear(self.heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Mlp(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = torch.nn.Linear(d, f, bias=False)
        self.up_proj = torch.nn.Linear(d, f, bias=False)
        self.down_proj = torch.nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])


class TinyLlama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = Backbone(c)
        head_dim = c["hidden_size"] // c["num_attention_heads"]
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(c["max_position_embeddings"]).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        std, layers = 0.02, c["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                scale = 1 / math.sqrt(2 * layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
                torch.nn.init.normal_(p, std=std * scale)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = self.cos[:t].to(torch.bfloat16), self.sin[:t].to(torch.bfloat16)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return F.linear(self.model.norm(x), self.model.embed_tokens.weight)  # tied head


# ---- data ---------------------------------------------------------------------------------------
class Encoder:
    """Segment-by-segment tokenization, the same rule the pipeline runner follows."""

    def __init__(self, model_path):
        self.sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.bos = self.sp.bos_id()

    def encode(self, text):
        return self.sp.encode(text)

    def sample(self, segments, reply):
        ids, mask = [self.bos], [0]
        for _, text in segments:
            piece = self.encode(text)
            ids += piece
            mask += [0] * len(piece)
        answer = self.encode(reply + NEWLINE)
        return ids + answer, mask + [1] * len(answer)


def tokenize_text(sp, text, threads=16):
    """The whole text as one token stream: lines encoded separately (identical to encoding the
    whole, since no piece spans a newline) joined by the newline byte token."""
    newline = sp.encode(NEWLINE)
    assert len(newline) == 1
    lines = text.split("\n")
    out = []
    for start in range(0, len(lines), 200000):
        for piece in sp.encode(lines[start:start + 200000], num_threads=threads):
            out += piece
            out.append(newline[0])
    return torch.tensor(out, dtype=torch.int32)


class Rows(torch.utils.data.IterableDataset):
    def __init__(self, data_dir, stream, text_path, seed):
        self.data_dir, self.stream, self.text_path, self.seed = data_dir, stream, text_path, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + (info.id if info else 0))
        encoder = Encoder(os.path.join(self.data_dir, "tokenizer.model"))
        templates = make_tasks.load_templates()
        text = make_tasks.TextSource(self.text_path)
        types, weights = zip(*TASK_WEIGHTS.items())
        pending = None
        while True:
            ids, mask = [], []
            if rng.random() < TASK_ROWS:
                while True:
                    if pending is None:
                        task_type = rng.choices(types, weights)[0]
                        task = make_tasks.GENERATORS[task_type](rng, templates, text)
                        pending = [encoder.sample(s, r) for s, r in make_tasks.reference_runs(task, templates)]
                        pending = [p for p in pending if len(p[0]) <= SEQ + 1]
                    while pending and len(ids) + len(pending[0][0]) <= SEQ + 1:
                        sample_ids, sample_mask = pending.pop(0)
                        ids += sample_ids
                        mask += sample_mask
                    if pending:
                        break
                    pending = None
            gap = SEQ + 1 - len(ids)
            if gap > 0:
                start = rng.randrange(0, len(self.stream) - gap)
                ids += self.stream[start:start + gap].tolist()
                mask += [1] * gap
            yield torch.tensor(ids, dtype=torch.int64), torch.tensor(mask, dtype=torch.float32)


# ---- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def heldout_perplexity(model, stream):
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(stream) - SEQ - 1, SEQ):
        chunk = stream[start:start + SEQ + 1].long().cuda()[None]
        with torch.autocast("cuda", torch.bfloat16):
            logits = model(chunk[:, :-1]).float()
        total += F.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
        count += SEQ
    model.train()
    return math.exp(total / count), count


@torch.no_grad()
def greedy_reply(model, encoder, segments, max_new=24):
    ids = [encoder.bos]
    for _, text in segments:
        ids += encoder.encode(text)
    newline = encoder.encode(NEWLINE)[0]
    out = []
    for _ in range(max_new):
        x = torch.tensor([ids + out], device="cuda")
        with torch.autocast("cuda", torch.bfloat16):
            token = int(model(x)[0, -1].float().argmax())
        if token in (newline, encoder.sp.eos_id()) or len(ids) + len(out) >= SEQ:
            break
        out.append(token)
    return encoder.sp.decode(out)


def task_accuracy(model, encoder, task_dir, per_type):
    model.eval()
    templates = make_tasks.load_templates()
    result = {}
    for task_type in make_tasks.TYPES:
        with open(os.path.join(task_dir, f"{task_type}.jsonl")) as f:
            tasks = [json.loads(line) for line in f][:per_type]
        correct = 0
        for task in tasks:
            turns = make_tasks.schedule(task)
            replies = []
            for agent_index, seen in turns:
                agent = task["agents"][agent_index]
                messages = [(task["agents"][turns[t][0]]["name"], replies[t]) for t in seen]
                segments = make_tasks.render(templates[task["template"]], agent, task, messages)
                replies.append(greedy_reply(model, encoder, segments))
            correct += make_tasks.normalize_answer(replies[-1]) == make_tasks.normalize_answer(task["answer"])
        result[task_type] = correct / len(tasks)
    model.train()
    return result


# ---- export -------------------------------------------------------------------------------------
def export(model, data_dir, out):
    """Saves the Hugging Face checkpoint; returns (parameter count, bf16 state dict)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    os.makedirs(out, exist_ok=True)
    config = LlamaConfig(**CONFIG)
    hf = LlamaForCausalLM(config)
    state = {k: v.detach().to(torch.bfloat16).cpu() for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    hf.to(torch.bfloat16).save_pretrained(out, max_shard_size="15MB")
    GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=False).save_pretrained(out)
    shutil.copy(os.path.join(data_dir, "tokenizer.model"), out)
    return hf.num_parameters(), state


def check_export(state, out):
    """The saved files, loaded by transformers in float32, must give the trained model's logits."""
    from transformers import LlamaForCausalLM
    reloaded = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).cuda().eval()
    ours = TinyLlama(CONFIG).cuda().eval()
    ours.load_state_dict({k: v.float() for k, v in state.items()})
    ids = torch.randint(3, CONFIG["vocab_size"], (1, 300), generator=torch.Generator().manual_seed(5)).cuda()
    with torch.no_grad():
        ours.cos, ours.sin = ours.cos.float(), ours.sin.float()
        t = ids.shape[1]
        x = ours.model.embed_tokens(ids)
        for layer in ours.model.layers:
            x = layer(x, ours.cos[:t], ours.sin[:t])
        a = F.linear(ours.model.norm(x), ours.model.embed_tokens.weight)
        b = reloaded(ids).logits
    err = ((a - b).norm() / b.norm()).item()
    assert err < 1e-4, f"transformers disagrees with the trained model: relative error {err}"
    return err


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--minutes", type=float, help="fix --steps from the speed of the first steps")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-tasks", type=int, default=100, help="held-out tasks per type")
    args = parser.parse_args()
    assert args.steps or args.minutes, "give --steps or --minutes"

    torch.manual_seed(SEED)
    began = time.time()
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(args.data, "tokenizer.model"))
    with lzma.open(os.path.join(args.data, "corpus", "train.txt.xz"), "rt") as f:
        train_text = f.read()
    stream = tokenize_text(sp, train_text)
    with open(os.path.join(args.data, "corpus", "heldout.txt")) as f:
        heldout = tokenize_text(sp, f.read())
    text_path = "/tmp/kvcomm_train_text.txt"
    with open(text_path, "w") as f:
        f.write(train_text)
    print(f"text: {len(stream)} training tokens, {len(heldout)} held-out ({time.time() - began:.0f} s)", flush=True)

    loader = torch.utils.data.DataLoader(Rows(args.data, stream, text_path, SEED), batch_size=BATCH,
                                         num_workers=12, pin_memory=True, prefetch_factor=4,
                                         persistent_workers=True)
    model = TinyLlama(CONFIG).cuda()
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": other, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), fused=True)
    compiled = torch.compile(model)

    def loss_of(ids, mask):
        with torch.autocast("cuda", torch.bfloat16):
            logits = compiled(ids[:, :-1])
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                             reduction="none")
        m = mask[:, 1:].reshape(-1)
        return (ce * m).sum() / m.sum()

    steps, warmup = args.steps, 200
    step, tokens, timing_start = 0, 0, None
    train_start = time.time()
    for ids, mask in loader:
        if steps is None and step == 30:
            timing_start = time.time()
        if steps is None and step == 60:
            per_step = (time.time() - timing_start) / 30
            steps = int(args.minutes * 60 / per_step)
            print(f"{per_step * 1000:.0f} ms/step: training {steps} steps (--steps {steps})", flush=True)
        total = steps or 10 ** 9
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, mask = ids.cuda(non_blocking=True), mask.cuda(non_blocking=True)
        loss = loss_of(ids, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens += ids.numel()
        if step % 100 == 0 or step == 1:
            print(f"step {step}/{steps} loss {loss.item():.3f} lr {lr:.2e} {time.time() - train_start:.0f} s", flush=True)
        if steps is not None and step >= steps:
            break
    train_seconds = time.time() - train_start

    # Files first, so that they exist even if a later check fails.
    parameters, state = export(model, args.data, args.out)
    report = {"steps": steps, "batch_rows": BATCH, "seq": SEQ, "tokens": tokens,
              "train_seconds": round(train_seconds, 1), "parameters": parameters,
              "config": CONFIG, "lr": args.lr, "seed": SEED, "device": torch.cuda.get_device_name()}

    def save_report():
        with open(os.path.join(args.out, "train_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1), flush=True)

    save_report()
    report["export_relative_error"] = check_export(state, args.out)
    ppl, ppl_tokens = heldout_perplexity(model, heldout)
    report.update(heldout_perplexity=round(ppl, 2), heldout_tokens=ppl_tokens)
    save_report()
    encoder = Encoder(os.path.join(args.data, "tokenizer.model"))
    task_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "tasks")
    report["accuracy_pytorch_bf16"] = task_accuracy(model, encoder, task_dir, args.eval_tasks)
    save_report()


if __name__ == "__main__":
    main()
