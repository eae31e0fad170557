"""Lossless SentencePiece tokenizer with byte-level piece surfaces.

Every id maps to the exact bytes it stands for (U+2581 becomes a space, <0xAB> byte pieces become that
byte, control tokens are empty), so decoding is a concatenation of bytes and per-token byte offsets are
cumulative sums. The server implements the same rules in C++ (server/tokenizer).

A literal U+2581 in the text is encoded as its three byte pieces (see `encode`); the server does the same.

Incremental tokenization: the newline is a user-defined symbol, so it is always one piece and
SentencePiece never forms a piece across it. Text can therefore be committed up to its last newline
and the tokens are the same as tokenizing the whole text at once.
"""
from __future__ import annotations

import hashlib
import re
from typing import List

import sentencepiece as spm

_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_MARK = "\u2581"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tokenizer:
    def __init__(self, path: str):
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.pad_id()
        self.unk_id = self.sp.unk_id()
        self.sha256 = file_sha256(path)
        self._bytes: List[bytes] = [self._piece_bytes(i) for i in range(self.vocab_size)]
        self._mark_ids = [self.sp.piece_to_id("<0x%02X>" % b) for b in _MARK.encode("utf-8")]

    def _piece_bytes(self, i: int) -> bytes:
        if self.sp.is_control(i):
            return b""
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):
            m = _BYTE.match(piece)
            return bytes([int(m.group(1), 16)])
        if self.sp.is_unknown(i):
            return b""
        return piece.replace("\u2581", " ").encode("utf-8")

    def encode(self, text: str) -> List[int]:
        """SentencePiece ids, except that a literal U+2581 in the text (SentencePiece's own space marker)
        becomes its three UTF-8 byte pieces, so that decoding gives it back rather than a space."""
        if _MARK not in text:
            return self.sp.encode(text)
        ids: List[int] = []
        for i, part in enumerate(text.split(_MARK)):
            if i:
                ids.extend(self._mark_ids)
            if part:
                ids.extend(self.sp.encode(part))
        return ids

    def piece_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    def decode_bytes(self, ids: List[int]) -> bytes:
        return b"".join(self._bytes[i] for i in ids)

    def decode(self, ids: List[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode_bytes(self, data: bytes) -> List[int]:
        """Tokenizes bytes that may not be valid UTF-8: valid runs go through SentencePiece, the rest as
        byte pieces. For valid UTF-8 this equals encode(data.decode())."""
        text = data.decode("utf-8", errors="surrogateescape")
        ids: List[int] = []
        run: List[str] = []
        for ch in text:
            if 0xDC80 <= ord(ch) <= 0xDCFF:
                if run:
                    ids.extend(self.encode("".join(run)))
                    run = []
                ids.append(self.sp.piece_to_id("<0x%02X>" % (ord(ch) - 0xDC00)))
            else:
                run.append(ch)
        if run:
            ids.extend(self.encode("".join(run)))
        return ids


class IncrementalTokenizer:
    """Tokenizes a byte stream that arrives in arbitrary chunks, giving the same ids as tokenizing it whole.

    Bytes are committed up to and including the last newline seen; the rest waits for more input or
    `finish()`. The server implements the same rule.
    """

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.buf = b""

    def feed(self, chunk: bytes) -> List[int]:
        self.buf += chunk
        cut = self.buf.rfind(b"\n")
        if cut < 0:
            return []
        ready, self.buf = self.buf[:cut + 1], self.buf[cut + 1:]
        return self.tok.encode_bytes(ready)

    def finish(self) -> List[int]:
        ready, self.buf = self.buf, b""
        return self.tok.encode_bytes(ready) if ready else []
