#!/usr/bin/env python3
"""Prepares the training corpus and the tokenizer of models/kvcomm-tiny (runs here, no GPU).

    sudo apt-get install linux-doc-6.1 python3.11-doc sentencepiece
    python3 tools/prepare_corpus.py build-train

Collects the English reStructuredText sources that Debian packages carry (the Linux kernel's
Documentation, without its translations, and the Python 3.11 documentation sources), drops rst
section underlines, splits them by file into train (98%) and held-out (2%) text, and trains the
sentencepiece BPE vocabulary (8k pieces, byte fallback, digits split) with Debian's spm_train on
the training text plus rendered task prompts. Writes OUT/corpus/{train,heldout}.txt,
OUT/corpus/train.txt.xz (what travels to the GPU machine) and OUT/tokenizer.model.
Deterministic: the same packages give the same files.
"""
import glob
import gzip
import hashlib
import lzma
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tasks  # noqa: E402

SOURCES = [("/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz", "translations/"),
           ("/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", None)]
UNDERLINE = re.compile(r"^\s*([=\-~^*#+`.:'\"_])\1{3,}\s*$")
VOCAB_SIZE = 8000


def read(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return data.decode("utf-8", errors="replace")


def clean(text):
    lines = [l.rstrip() for l in text.split("\n") if not UNDERLINE.match(l)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def is_heldout(path):
    return int(hashlib.sha1(os.path.basename(path).encode() + path.encode()).hexdigest(), 16) % 50 == 0


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "corpus"), exist_ok=True)
    parts = {"train": [], "heldout": []}
    for pattern, exclude in SOURCES:
        files = sorted(glob.glob(pattern, recursive=True))
        if not files:
            raise SystemExit(f"no files match {pattern}: install linux-doc-6.1 and python3.11-doc")
        for path in files:
            if exclude and exclude in path:
                continue
            parts["heldout" if is_heldout(path) else "train"].append(clean(read(path)))
    for split, texts in parts.items():
        body = "\n".join(texts)
        with open(os.path.join(out, "corpus", f"{split}.txt"), "w") as f:
            f.write(body)
        print(f"{split}: {len(texts)} files, {len(body) / 1e6:.1f} MB", file=sys.stderr)
    with open(os.path.join(out, "corpus", "train.txt"), "rb") as src:
        with lzma.open(os.path.join(out, "corpus", "train.txt.xz"), "wb", preset=6) as dst:
            dst.write(src.read())

    # The vocabulary also sees the task prompts, so their labels become whole pieces.
    templates = make_tasks.load_templates()
    text = make_tasks.TextSource(os.path.join(out, "corpus", "train.txt"))
    rng = random.Random(7)
    spm_input = os.path.join(out, "spm_input.txt")
    with open(spm_input, "w") as f:
        f.write(open(os.path.join(out, "corpus", "train.txt")).read())
        for i in range(4000):
            task_type = make_tasks.TYPES[i % len(make_tasks.TYPES)]
            if task_type == "long_context":
                continue
            task = make_tasks.GENERATORS[task_type](rng, templates, text)
            for segments, reply in make_tasks.reference_runs(task, templates):
                f.write("".join(s for _, s in segments) + reply + "\n")
    subprocess.run(["spm_train", f"--input={spm_input}",
                    f"--model_prefix={os.path.join(out, 'tokenizer')}",
                    f"--vocab_size={VOCAB_SIZE}", "--model_type=bpe", "--byte_fallback=true",
                    "--character_coverage=0.9995", "--normalization_rule_name=identity",
                    "--add_dummy_prefix=false", "--remove_extra_whitespaces=false",
                    "--split_digits=true", "--allow_whitespace_only_pieces=true",
                    "--input_sentence_size=3000000", "--shuffle_input_sentence=true",
                    "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
                    "--num_threads=2", "--minloglevel=1"], check=True)
    os.remove(spm_input)
    print(f"wrote {out}/tokenizer.model", file=sys.stderr)


if __name__ == "__main__":
    main()
