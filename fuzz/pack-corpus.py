#!/usr/bin/env python3
"""Packs each minimized corpus (fuzz/corpus/<target>/, after `cargo fuzz
cmin`) into fuzz/corpus-min/<target>.hex: one input per line, hex-encoded,
sorted. tests/fuzz_corpus.rs replays these files on every CI run."""
import pathlib, sys

root = pathlib.Path(__file__).parent
for target in sys.argv[1:]:
    inputs = sorted(p.read_bytes() for p in (root / "corpus" / target).iterdir() if p.is_file())
    out = root / "corpus-min" / f"{target}.hex"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(i.hex() + "\n" for i in inputs))
    print(f"{target}: {len(inputs)} inputs, {sum(map(len, inputs))} bytes -> {out}")
