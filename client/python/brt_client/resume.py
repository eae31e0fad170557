"""Resumable scoring: score a whole document into a session and survive the loss of the replica serving it.

How it works (brt.proto, ScoreRequest.ack_position and token_ids):
- Every request message carries `ack_position`: the client has the scores of every token before it. The server
  then persists the session (autosave, shutdown save) only up to the last line end the client acknowledged.
- When the call fails (the replica was killed or drained, the proxy moved the session), the client asks for the
  session (GetSession, retried while it is UNAVAILABLE: another replica restores it from the shared store once
  the old one's lease has expired) and gets the position P it was persisted at. The tokens from P to the end of
  that line are ones the client already received: it sends them as token ids (a line may not be re-tokenized
  from its middle), then the rest of the document as text. The scores from P on are computed again the same way,
  so every token's NLL equals that of an uninterrupted run (bitwise on CPU).
- If the session was never persisted, the server does not know it (NOT_FOUND): it is created again under the
  same id (the client drew it) and the document is scored from the start.
"""
import math
import queue
import threading
import time
from typing import Callable, Dict, Optional

import grpc

from ._proto import brt_pb2 as pb

# Codes after which a call is retried: the replica or the proxy went away, or the session is between replicas.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED)


class _NotYet(Exception):
    """The session is not (yet) at a position this client can continue from exactly: while it moves between
    replicas a draining one may still report its live position. Retried until retry_for has passed."""


class ResumableScore:
    """One document scored into `session_id` through `client` (a brt_client.Client), resumed after failures.

    run() returns a ScoreResult-like object with one Token per text token, positions 1..N in order, and a
    summary over all of them. `retries` counts the resumptions, `resent_tokens` the tokens scored twice
    because of them, `recovery_seconds` the time from each failure to the resumed call's first reply.
    """

    def __init__(self, client, session_id: str, text: bytes, *, chunk_bytes: int = 8192,
                 retry_for: float = 120.0, on_failure: Optional[Callable[[Exception], None]] = None):
        self.client = client
        self.session_id = session_id
        self.text = bytes(text)
        self.chunk_bytes = chunk_bytes
        self.retry_for = retry_for
        self.on_failure = on_failure
        self.tokens: Dict[int, object] = {}  # position -> Token, byte offsets in the whole document
        self.retries = 0
        self.resent_tokens = 0
        self.recovery_seconds = []
        self.failures = []  # what each retry answered

    # -- the resume point --------------------------------------------------------------------------------------
    def _line_end_before(self, position):
        """Position + 1 of the last received token before `position` that ends a line, else 1."""
        p = position - 1
        while p >= 1 and p in self.tokens:
            if self.tokens[p].piece.endswith(b"\n"):
                return p + 1
            p -= 1
        return 1

    def _plan(self, position):
        """(token ids to send, byte offset of the text after them) to continue the session at `position`: the
        tokens from `position` to the end of their line, which this client received (the server persists a
        session only up to a line end the client acknowledged), then the text after that line end."""
        if position == 1:
            return [], 0
        if position - 1 not in self.tokens:
            raise _NotYet(f"session {self.session_id} is at position {position}, beyond the scores this client "
                          f"received (up to {max(self.tokens, default=0)})")
        ids, p = [], position
        while not self.tokens[p - 1].piece.endswith(b"\n"):
            if p not in self.tokens:
                raise _NotYet(f"the line holding position {position} was not received whole")
            ids.append(self.tokens[p].token_id)
            p += 1
        return ids, self.tokens[p - 1].byte_end

    # -- one call -----------------------------------------------------------------------------------------------
    def _session_position(self, deadline):
        """The session's position, waiting while it moves between replicas; None when it does not exist."""
        while True:
            try:
                return self.client.get_session(self.session_id).position
            except Exception as e:  # BrtError
                code = getattr(e, "code", None)
                if code == grpc.StatusCode.NOT_FOUND:
                    return None
                if code not in RETRYABLE or time.time() > deadline:
                    raise
                time.sleep(0.2)

    def _call(self, position, failed_at):
        ids, offset = self._plan(position)
        base = self.tokens[position - 1].byte_end if position > 1 else 0
        acked = [max(self.tokens, default=0) + 1]
        done = threading.Event()

        def requests():
            first = pb.ScoreRequest(session_id=self.session_id, token_ids=ids, ack_position=acked[0],
                                    text=self.text[offset:offset + self.chunk_bytes])
            yield first
            for at in range(offset + self.chunk_bytes, len(self.text), self.chunk_bytes):
                if done.is_set():
                    return
                yield pb.ScoreRequest(text=self.text[at:at + self.chunk_bytes], ack_position=acked[0])

        summary = None
        self._progress = False
        stream = self.client._stub.Score(requests(), timeout=self.client.stream_timeout,
                                         metadata=self.client._md(self.session_id))
        try:
            for resp in stream:
                self._progress = True
                if failed_at is not None:
                    self.recovery_seconds.append(time.time() - failed_at)
                    failed_at = None
                for t in resp.tokens:
                    tok = self.client._token(t, base)
                    if t.position in self.tokens:
                        self.resent_tokens += 1
                        old = self.tokens[t.position]
                        if (old.token_id, old.byte_begin) != (tok.token_id, tok.byte_begin):
                            raise RuntimeError(f"position {t.position} differs after resuming: "
                                               f"{old} vs {tok}")
                    else:
                        self.tokens[t.position] = tok
                    acked[0] = max(acked[0], t.position + 1)
                if resp.HasField("summary"):
                    summary = resp.summary
        finally:
            done.set()
        return summary

    def run(self):
        from .client import ScoreResult, Summary  # (import cycle)
        failed_at = None
        deadline = None
        while True:
            try:
                position = self._session_position(time.time() + self.retry_for)
                if position is None:  # never persisted: start the document again under the same id
                    self.client.create_session(session_id=self.session_id)
                    position = 1
                summary = self._call(position, failed_at)
                if summary is not None:
                    break
                raise RuntimeError("the Score call ended without a summary")
            except grpc.RpcError as e:
                err = e
                code = e.code()
            except _NotYet as e:
                err = e
                code = grpc.StatusCode.UNAVAILABLE
            except Exception as e:  # BrtError from the client's unary calls
                err = e
                code = getattr(e, "code", None)
            # ALREADY_EXISTS: re-creating a session that another replica had after all.
            if code not in RETRYABLE and code != grpc.StatusCode.ALREADY_EXISTS:
                raise err
            now = time.time()
            if getattr(self, "_progress", False):  # a new failure after progress: a new retry window
                deadline = None
                self._progress = False
            deadline = deadline or now + self.retry_for
            if now > deadline:
                raise err
            self.retries += 1
            failed_at = failed_at or now
            self.failures.append(f"{getattr(code, 'name', code)}: {err}")
            if self.on_failure is not None:
                self.on_failure(err)
            time.sleep(0.2)
        positions = sorted(self.tokens)
        if positions != list(range(1, len(positions) + 1)):
            raise RuntimeError("scores are missing after resuming")
        toks = [self.tokens[p] for p in positions]
        total = math.fsum(t.nll for t in toks)
        n = len(toks)
        nbytes = len(self.text)
        s = Summary(n, nbytes, total, total / n if n else 0.0, math.exp(total / n) if n else 1.0,
                    total / n / math.log(2) if n else 0.0, total / nbytes / math.log(2) if nbytes else 0.0,
                    summary.position)
        return ScoreResult(toks, s, self.session_id)
