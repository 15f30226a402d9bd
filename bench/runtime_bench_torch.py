#!/usr/bin/env python3
"""PyTorch reference for bench/runtime_bench: the same shapes and methodology with transformers'
LlamaForCausalLM (sdpa attention) in bf16 on the GPU, random weights. Run it in the same device
command as `runtime_bench --device cuda`.

    python3 bench/runtime_bench_torch.py [--prefill 1024 4096 16384] [--decode 128] [--repeat 3]
"""
import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prefill", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                         rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         attn_implementation="sdpa")
    start = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.cuda.synchronize()
    print(f"runtime_bench_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, Llama-3-8B shape bf16, "
          f"sdpa, random weights made in {time.time() - start:.1f} s")
    print(f"{'phase':<10} {'tokens':>10} {'median ms':>12} {'tokens/s':>14}")
    g = torch.Generator(device="cuda").manual_seed(7)

    with torch.inference_mode():
        for n in args.prefill:
            ids = torch.randint(0, config.vocab_size, (1, n), device="cuda", generator=g)
            times = []
            for r in range(args.repeat + 1):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                # logits_to_keep=1: like our runtime, only the last position's logits.
                out = model(ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                if r > 0:
                    times.append(time.perf_counter() - t0)
                del out
            t = statistics.median(times)
            print(f"{'prefill':<10} {n:>10} {t * 1e3:>12.1f} {n / t:>14.0f}")

        ids = torch.randint(0, config.vocab_size, (1, 1024), device="cuda", generator=g)
        times = []
        for r in range(args.repeat + 1):
            out = model(ids, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.decode):
                out = model(next_id, past_key_values=past, use_cache=True)
                past = out.past_key_values
                next_id = out.logits[:, -1].argmax(-1, keepdim=True)
                next_id.item()
            torch.cuda.synchronize()
            if r > 0:
                times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        print(f"{'decode':<10} {args.decode:>10} {t * 1e3:>12.1f} {args.decode / t:>14.1f}   "
              "(batch 1, after a 1024-token prompt)")

        # Attention alone at one layer's shape, as bench/attention_bench times ours: causal sdpa
        # over N tokens, k/v with 8 heads expanded to 32 (what transformers' sdpa path hands it).
        print(f"{'attention':<10} {'tokens':>10} {'ms per layer':>12} {'TFLOP/s':>14}")
        for n in args.prefill:
            q = torch.randn(1, 32, n, 128, device="cuda", generator=g)
            k = torch.randn(1, 8, n, 128, device="cuda", generator=g).repeat_interleave(4, dim=1)
            v = torch.randn(1, 8, n, 128, device="cuda", generator=g).repeat_interleave(4, dim=1)
            start_event, stop_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for r in range(21):
                start_event.record()
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                stop_event.record()
                torch.cuda.synchronize()
                if r > 0:
                    times.append(start_event.elapsed_time(stop_event))
            ms = statistics.median(times)
            flops = 4 * 128 * 32 * n * (n + 1) / 2
            print(f"{'attention':<10} {n:>10} {ms:>12.3f} {flops / (ms * 1e-3) / 1e12:>14.1f}")


if __name__ == "__main__":
    main()
