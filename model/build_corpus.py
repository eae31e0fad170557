#!/usr/bin/env python3
"""Builds the training corpus from Debian-packaged text only; nothing is downloaded.

Documents:
  * the 66 books of the King James Bible (package bible-kjv), one document per book, one verse a line
    written as "chapter:verse text";
  * Python standard-library source files shipped by Debian (/usr/lib/python3.11), one document per file.

The split is by whole documents and deterministic (a hash of the document name), so no document is in
two splits. Output: <out>/{train,valid,test}.jsonl, each line {"name": ..., "text": ...}, and
<out>/tokenizer_sample.txt for spm_train.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

# Held-out books: long enough for the state to matter, named people and places recurring far apart.
VALID_BOOKS = {"Ezra", "Jer", "Mark"}
TEST_BOOKS = {"Eze", "Acts"}  # (2 Samuel, meant to be here too, is "2Sm" in bible-kjv: it is in train)
REF = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def bible_documents():
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    books = []
    for line in out.splitlines():
        m = REF.match(line)
        if not m:
            continue
        book, chap, verse, text = m.groups()
        if not books or books[-1][0] != book:
            books.append((book, []))
        books[-1][1].append(f"{chap}:{verse} {text}")
    if len(books) != 66:
        sys.exit(f"expected 66 books of the Bible, found {len(books)}")
    for book, lines in books:
        yield f"kjv/{book}", "\n".join(lines) + "\n"


def python_documents(root, max_bytes):
    files = []
    for d, _, names in os.walk(root):
        if "site-packages" in d or "dist-packages" in d:
            continue
        for n in names:
            if n.endswith(".py"):
                files.append(os.path.join(d, n))
    files.sort()
    total = 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip() or len(text) > 200_000:
            continue
        if total + len(text) > max_bytes:
            break
        total += len(text)
        yield "py/" + os.path.relpath(path, root), text


def split_of(name):
    if name.startswith("kjv/"):
        book = name[4:]
        return "valid" if book in VALID_BOOKS else "test" if book in TEST_BOOKS else "train"
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "valid" if h < 4 else "test" if h < 8 else "train"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="model/data")
    ap.add_argument("--python-root", default="/usr/lib/python3.11")
    ap.add_argument("--python-bytes", type=int, default=5_000_000, help="cap on Python source bytes")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    outs = {s: open(os.path.join(args.out, f"{s}.jsonl"), "w", encoding="utf-8") for s in ("train", "valid", "test")}
    counts = {s: [0, 0] for s in outs}
    sample = open(os.path.join(args.out, "tokenizer_sample.txt"), "w", encoding="utf-8")
    docs = list(bible_documents()) + list(python_documents(args.python_root, args.python_bytes))
    for name, text in docs:
        s = split_of(name)
        outs[s].write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
        counts[s][0] += 1
        counts[s][1] += len(text.encode())
        if s == "train":
            sample.write(text)
    for f in list(outs.values()) + [sample]:
        f.close()
    for s, (n, b) in counts.items():
        print(f"{s}: {n} documents, {b} bytes")


if __name__ == "__main__":
    main()
