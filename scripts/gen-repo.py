#!/usr/bin/env python3
"""Writes a generated source tree for the benchmarks: FILES Rust-like files of 30 lines in folders of 100.

    scripts/gen-repo.py DIR FILES
"""
import os
import random
import sys

root, files = sys.argv[1], int(sys.argv[2])
random.seed(7)
per_dir = 100
for n in range(files):
    d = os.path.join(root, "src", f"mod{n // per_dir:04}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{n % per_dir:03}.rs"), "w") as fh:
        fh.write("".join(f"pub fn f{i}() -> u64 {{ {random.randint(0, 10**9)} }}\n" for i in range(30)))
