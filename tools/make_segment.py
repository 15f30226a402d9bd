#!/usr/bin/env python3
"""Writes a segment file (safetensors) with seeded random KV, for demos and manual testing.

Tensors k and v are [layers, kv_heads, tokens, head_dim] in F32/F16/BF16; token_ids and
positions are I32 [tokens]. Uses only the standard library.
"""
import argparse
import json
import random
import struct


def float_bits(value, dtype):
    if dtype == "F32":
        return struct.pack("<f", value)
    if dtype == "F16":
        return struct.pack("<e", value)
    bits = struct.unpack("<I", struct.pack("<f", value))[0]  # BF16: round to nearest even
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return struct.pack("<H", bits)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="BF16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-token", type=int, default=100, help="token ids are consecutive from here")
    p.add_argument("--namespace", default=None)
    args = p.parse_args()

    rng = random.Random(args.seed)
    shape = [args.layers, args.kv_heads, args.tokens, args.head_dim]
    count = args.layers * args.kv_heads * args.tokens * args.head_dim
    k = b"".join(float_bits(rng.gauss(0, 1), args.dtype) for _ in range(count))
    v = b"".join(float_bits(rng.gauss(0, 1), args.dtype) for _ in range(count))
    ids = struct.pack(f"<{args.tokens}i", *range(args.first_token, args.first_token + args.tokens))
    pos = struct.pack(f"<{args.tokens}i", *range(args.tokens))

    header, offset, blobs = {}, 0, []
    for name, dtype, dims, data in [("k", args.dtype, shape, k), ("v", args.dtype, shape, v),
                                    ("token_ids", "I32", [args.tokens], ids),
                                    ("positions", "I32", [args.tokens], pos)]:
        header[name] = {"dtype": dtype, "shape": dims, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if args.namespace:
        header["__metadata__"] = {"namespace": args.namespace}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    main()
