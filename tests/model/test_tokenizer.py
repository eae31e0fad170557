"""The shipped tokenizer is lossless and can be fed in chunks split anywhere."""
import os
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "model"))

from brt.tokenizer import IncrementalTokenizer, Tokenizer  # noqa: E402

TOKENIZER = os.path.join(ROOT, "model", "artifacts", "tokenizer.model")

SAMPLES = [
    "In the beginning God created the heaven and the earth.\n",
    "\tTabs\tand  double  spaces,   triple, \n\n\nblank lines\r\nand CRLF",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "Non-ASCII: café, naïve, Ελληνικά, русский, 中文, 日本語, emoji 🎉🚀, math ∑∫√",
    "   leading spaces and trailing spaces   ",
    "",
    "\n",
    "x" * 3000,
    "控制字符 \x00\x01\x7f and private use \ue000 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(TOKENIZER)


def random_text(rng, n):
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABC\t\n  ,.;:'\"()[]{}_-=+0123456789") + \
        ["é", "ß", "中", "🎉", "\u2581", "Ω", "\r\n", "    "]
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_round_trip(tok):
    rng = random.Random(0)
    for text in SAMPLES + [random_text(rng, 500) for _ in range(50)]:
        assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")
        assert tok.decode(tok.encode(text)) == text


def test_invalid_utf8_bytes_round_trip(tok):
    data = b"valid \xff\xfe invalid \xc3 truncated \xe4\xb8 end\n"
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


def test_special_ids(tok):
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
    assert tok.piece_bytes(tok.bos_id) == b"" and tok.vocab_size == 4096


@pytest.mark.parametrize("seed", range(8))
def test_chunked_equals_whole_at_random_byte_splits(tok, seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(SAMPLES) + random_text(rng, 200) for _ in range(6))
    data = text.encode("utf-8")
    whole = tok.encode(text)
    inc = IncrementalTokenizer(tok)
    got, i = [], 0
    while i < len(data):
        n = rng.randint(1, 40)  # cuts land mid-word and mid-UTF-8 sequence
        got += inc.feed(data[i:i + n])
        i += n
    got += inc.finish()
    assert got == whole


def test_corpus_text_chunked_equals_whole(tok):
    path = os.path.join(ROOT, "model", "data", "valid.jsonl")
    if not os.path.exists(path):
        pytest.fail("corpus not built: run model/build_corpus.py (deploy/test.sh does)")
    import json
    rng = random.Random(1)
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f][:6]
    for text in docs:
        data = text.encode()
        inc = IncrementalTokenizer(tok)
        got, i = [], 0
        while i < len(data):
            n = rng.randint(1, 5000)
            got += inc.feed(data[i:i + n])
            i += n
        got += inc.finish()
        assert got == tok.encode(text)
