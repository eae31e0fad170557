"""A small Python client for brt-server (brt.v1 over gRPC).

    from brt_client import Client
    with Client("127.0.0.1:50051") as c:
        result = c.score_file("book.txt")           # per-token NLLs (nats) and the summary
        print(result.summary.bits_per_token)
        for tok in c.generate("In the beginning", max_tokens=32, seed=7):
            print(tok.text, end="", flush=True)

Every RPC error is raised as BrtError, carrying the gRPC status code and the server's message.
Sessions can be saved, restored and forked (save_session, restore_session, fork_session).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import grpc

from ._proto import brt_pb2 as pb
from ._proto import brt_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_CHUNK_BYTES = 64 * 1024


class BrtError(Exception):
    """An RPC failed. `code` is a grpc.StatusCode, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, rpc: str = ""):
        self.code = code
        self.details = details
        self.rpc = rpc
        where = f"{rpc}: " if rpc else ""
        super().__init__(f"{code.name}: {where}{details}")


def _raise(err: grpc.RpcError, rpc: str):
    raise BrtError(err.code(), err.details() or "", rpc) from None


@dataclasses.dataclass
class Alternative:
    token_id: int
    piece: bytes
    logprob: float


@dataclasses.dataclass
class Token:
    """The score of one text token (brt.v1.TokenScore)."""
    position: int
    token_id: int
    piece: bytes
    byte_begin: int
    byte_end: int
    nll: float  # nats
    top: List[Alternative] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Summary:
    """Totals of one Score call (brt.v1.ScoreSummary)."""
    tokens: int
    bytes: int
    total_nll: float
    mean_nll: float
    perplexity: float
    bits_per_token: float
    bits_per_byte: float
    position: int

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ScoreResult:
    tokens: List[Token]
    summary: Summary
    session_id: str

    @property
    def nlls(self) -> List[float]:
        return [t.nll for t in self.tokens]


@dataclasses.dataclass
class SavedSnapshot:
    """The result of save_session: the store key (empty when not stored), the bytes (when asked
    for), and the snapshot's size."""
    snapshot_key: str
    snapshot: Optional[bytes]
    size_bytes: int


@dataclasses.dataclass
class GeneratedToken:
    """One generated token. `text` is the new text released with it (whole UTF-8; may be empty
    while bytes are held back, see brt.proto); `token_bytes` are the token's exact bytes.
    The last item of a stream may be text-only (token_id, logprob and position None): text held
    back until the end. So "".join(t.text for t in generation) is the whole completion."""
    text: str
    token_id: Optional[int]
    logprob: Optional[float]
    position: Optional[int]
    token_bytes: bytes


class Generation:
    """The stream of one Generate call: iterate for GeneratedToken items. After the stream ends,
    `text` is the whole completion and finish_reason ("length", "stop_sequence", "eos",
    "cancelled"), prompt_tokens, generated_tokens and session_position are set."""

    def __init__(self, responses, session_id: str = "", on_done=None):
        self._responses = responses
        self.session_id = session_id
        self._on_done = on_done
        self.text = ""
        self.tokens: List[GeneratedToken] = []
        self.finish_reason: Optional[str] = None
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.session_position = 0
        self._done = False

    def __iter__(self) -> Iterator[GeneratedToken]:
        if self._done:
            raise RuntimeError("a Generation can be iterated once; its tokens are in .tokens")
        try:
            for r in self._responses:
                self.text += r.text
                if r.finish_reason != pb.FINISH_REASON_UNSPECIFIED:
                    self.finish_reason = pb.FinishReason.Name(r.finish_reason)[len("FINISH_REASON_"):].lower()
                    self.prompt_tokens = r.prompt_tokens
                    self.generated_tokens = r.generated_tokens
                    self.session_position = r.session_position
                    yield from self._several(r.tokens, "")
                    if r.text:
                        # Text held back until the end (a possible stop-sequence start, an incomplete
                        # UTF-8 sequence) comes as a text-only item.
                        yield GeneratedToken(r.text, None, None, None, b"")
                    continue
                if r.tokens:  # stream_interval > 1: the message's text goes with its last token
                    yield from self._several(r.tokens, r.text)
                    continue
                tok = GeneratedToken(r.text, r.token_id, r.logprob, r.position, r.token_bytes)
                self.tokens.append(tok)
                yield tok
        except grpc.RpcError as e:
            _raise(e, "Generate")
        finally:
            self._done = True
            if self._on_done is not None:
                on_done, self._on_done = self._on_done, None
                on_done()

    def _several(self, tokens, text: str) -> Iterator[GeneratedToken]:
        for i, t in enumerate(tokens):
            tok = GeneratedToken(text if i == len(tokens) - 1 else "", t.token_id, t.logprob, t.position,
                                 t.token_bytes)
            self.tokens.append(tok)
            yield tok

    def result(self) -> "Generation":
        """Runs the stream to its end; returns self."""
        for _ in self:
            pass
        return self


def _sampling(temperature=None, top_k=None, top_p=None, min_p=None, repetition_penalty=None,
              repetition_window=None, seed=None, stop: Sequence[str] = ()):
    sp = pb.SamplingParams(stop=list(stop))
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                        ("min_p", min_p), ("repetition_penalty", repetition_penalty),
                        ("repetition_window", repetition_window), ("seed", seed)):
        if value is not None:
            setattr(sp, name, value)
    return sp


def _as_bytes(text: Union[str, bytes]) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


class Client:
    """A connection to one brt-server.

    address: "host:port". api_key: sent as `authorization: Bearer KEY` metadata on every call
    (checked by a server started with --api_keys_file; it names the tenant). tls/root_cert: connect
    with TLS, trusting root_cert (a PEM path or bytes) or the system roots. cert_chain/private_key:
    this client's certificate and key (PEM paths or bytes) for a server that requires client
    certificates (mutual TLS). timeout: seconds per unary call (streams have none unless
    stream_timeout is given). Every call about one session also sends its id as `x-brt-session`
    metadata, so that a proxy in front of several replicas routes it to the replica holding the
    session. Thread-safe like the gRPC channel under it.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, api_key: Optional[str] = None,
                 tls: bool = False, root_cert: Union[str, bytes, None] = None,
                 cert_chain: Union[str, bytes, None] = None,
                 private_key: Union[str, bytes, None] = None,
                 timeout: float = 30.0, stream_timeout: Optional[float] = None):
        self.address = address
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        if tls or root_cert is not None or cert_chain is not None:
            def pem(value):
                if isinstance(value, str):
                    with open(value, "rb") as f:
                        return f.read()
                return value
            if (cert_chain is None) != (private_key is None):
                raise ValueError("cert_chain and private_key go together (mutual TLS)")
            creds = grpc.ssl_channel_credentials(root_certificates=pem(root_cert),
                                                 private_key=pem(private_key),
                                                 certificate_chain=pem(cert_chain))
            self._channel = grpc.secure_channel(address, creds)
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.BrtStub(self._channel)
        # grpc.health.v1.Health/Check without generated classes: the request is an empty message and
        # the response one enum field, so a second copy of health.proto in the process's descriptor
        # pool (which would clash with one the application loads) is avoided.
        self._health_check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda _: b"",
            response_deserializer=_parse_health_status)

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _md(self, session_id: Optional[str] = None):
        """Call metadata: the API key, and the session id for routing (x-brt-session)."""
        if session_id:
            return self._metadata + (("x-brt-session", session_id),)
        return self._metadata or None

    def _unary(self, name, request, session_id: Optional[str] = None):
        try:
            return getattr(self._stub, name)(request, timeout=self.timeout,
                                             metadata=self._md(session_id))
        except grpc.RpcError as e:
            _raise(e, name)

    # -- server ------------------------------------------------------------------------------------
    def health(self) -> str:
        """The server's health status name: "SERVING", "NOT_SERVING", ..."""
        try:
            status = self._health_check(None, timeout=self.timeout, metadata=self._md())
        except grpc.RpcError as e:
            _raise(e, "Health.Check")
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))

    def server_info(self) -> pb.ServerInfo:
        return self._unary("GetServerInfo", pb.GetServerInfoRequest())

    # -- sessions ----------------------------------------------------------------------------------
    def create_session(self, label: str = "", *, session_id: Optional[str] = None, **sampling) -> pb.Session:
        """Creates an empty session; keyword arguments are its default sampling settings. Its id is drawn
        here (128 random bits; or `session_id`) and sent as `x-brt-session`, so that a proxy routing by that
        header sends the create and every later call of the session to the same replica."""
        session_id = session_id or "s_" + secrets.token_hex(16)
        return self._unary("CreateSession",
                           pb.CreateSessionRequest(label=label, default_sampling=_sampling(**sampling)),
                           session_id)

    def get_session(self, session_id: str) -> pb.Session:
        return self._unary("GetSession", pb.GetSessionRequest(session_id=session_id), session_id)

    def list_sessions(self) -> List[pb.Session]:
        return list(self._unary("ListSessions", pb.ListSessionsRequest()).sessions)

    def delete_session(self, session_id: str) -> None:
        self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), session_id)

    # -- persistence (see "Session persistence" in proto/brt/v1/brt.proto) ---------------------------
    def save_session(self, session_id: str, *, to_store: bool = True,
                     return_bytes: bool = False, unload: bool = False) -> SavedSnapshot:
        """Snapshots an idle session into the server's store (key = session id) and/or returns the
        snapshot bytes (return_bytes). The session stays loaded unless `unload`: then it is freed on that
        server (and its lease among replicas given up), and its next use restores it, there or elsewhere."""
        r = self._unary("SaveSession", pb.SaveSessionRequest(session_id=session_id, to_store=to_store,
                                                             return_bytes=return_bytes, unload=unload),
                        session_id)
        return SavedSnapshot(r.snapshot_key, r.snapshot if return_bytes else None, r.size_bytes)

    def restore_session(self, snapshot_key: Optional[str] = None, *, snapshot: Optional[bytes] = None,
                        new_id: bool = False) -> pb.Session:
        """Loads a session from the store (snapshot_key) or from snapshot bytes; under its own id
        unless new_id."""
        if (snapshot_key is None) == (snapshot is None):
            raise ValueError("give exactly one of snapshot_key and snapshot")
        req = pb.RestoreSessionRequest(new_id=new_id)
        if snapshot is not None:
            req.snapshot = bytes(snapshot)
        else:
            req.snapshot_key = snapshot_key
        return self._unary("RestoreSession", req)

    def fork_session(self, session_id: str, position: Optional[int] = None) -> pb.Session:
        """Copies an idle session into a new one; both then continue independently. With `position`, the
        copy is the session as it was at that earlier position (exactly, see rewind_session)."""
        req = pb.ForkSessionRequest(session_id=session_id)
        if position is not None:
            req.position = position
        return self._unary("ForkSession", req, session_id)

    def rewind_session(self, session_id: str, position: int) -> pb.Session:
        """Rewinds an idle session to an earlier position (1 = the start; not before the session's
        earliest_rewind_position), exactly: it then equals a session that read only the tokens before it."""
        return self._unary("RewindSession", pb.RewindSessionRequest(session_id=session_id, position=position),
                           session_id)

    def list_snapshots(self) -> List[str]:
        return list(self._unary("ListSnapshots", pb.ListSnapshotsRequest()).snapshot_keys)

    def delete_snapshot(self, snapshot_key: str) -> None:
        self._unary("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_key=snapshot_key))

    @contextmanager
    def session(self, label: str = "", **sampling):
        """A new session's id for a `with` block; the session is deleted afterwards."""
        s = self.create_session(label, **sampling)
        try:
            yield s.id
        finally:
            try:
                self.delete_session(s.id)
            except BrtError:
                pass

    # -- scoring -----------------------------------------------------------------------------------
    def score_chunks(self, chunks: Iterable[bytes], session_id: str, *, top_k: int = 0,
                     omit_tokens: bool = False) -> ScoreResult:
        """One Score call appending the concatenated chunks (one tokenization unit) to a session."""

        def requests():
            first = True
            for c in chunks:
                if first:
                    yield pb.ScoreRequest(session_id=session_id, top_k=top_k, omit_tokens=omit_tokens,
                                          text=c)
                    first = False
                elif c:
                    yield pb.ScoreRequest(text=c)
            if first:
                yield pb.ScoreRequest(session_id=session_id, top_k=top_k, omit_tokens=omit_tokens)

        tokens, summary = [], None
        try:
            for resp in self._stub.Score(requests(), timeout=self.stream_timeout,
                                         metadata=self._md(session_id)):
                for t in resp.tokens:
                    tokens.append(Token(t.position, t.token_id, t.piece, t.byte_begin, t.byte_end, t.nll,
                                        [Alternative(a.token_id, a.piece, a.logprob) for a in t.top]))
                if resp.HasField("summary"):
                    s = resp.summary
                    summary = Summary(s.tokens, s.bytes, s.total_nll, s.mean_nll, s.perplexity,
                                      s.bits_per_token, s.bits_per_byte, s.position)
        except grpc.RpcError as e:
            _raise(e, "Score")
        if summary is None:
            raise BrtError(grpc.StatusCode.INTERNAL, "Score ended without a summary", "Score")
        return ScoreResult(tokens, summary, session_id)

    @staticmethod
    def _token(t, base: int = 0) -> Token:
        return Token(t.position, t.token_id, t.piece, base + t.byte_begin, base + t.byte_end, t.nll,
                     [Alternative(a.token_id, a.piece, a.logprob) for a in t.top])

    def score_resumable(self, text: Union[str, bytes], *, session_id: Optional[str] = None,
                        chunk_bytes: int = 8192, retry_for: float = 120.0) -> "ScoreResult":
        """Scores a whole document into a new session (or `session_id`, which must be new or empty) and
        survives the loss of the replica serving it: the call is resumed where the session was persisted,
        exactly, so every token's NLL is that of an uninterrupted run. See brt_client/resume.py."""
        from .resume import ResumableScore
        if session_id is None:
            session_id = self.create_session(label="resumable").id
        return ResumableScore(self, session_id, _as_bytes(text), chunk_bytes=chunk_bytes,
                              retry_for=retry_for).run()

    def score_text(self, text: Union[str, bytes], *, session_id: Optional[str] = None,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, top_k: int = 0,
                   keep_session: bool = False) -> ScoreResult:
        """Scores text in one Score call: into session_id if given (continuing it), else into a new
        session that is deleted afterwards unless keep_session."""
        data = _as_bytes(text)
        return self._score(lambda: (data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)),
                           session_id, top_k, keep_session, "score_text")

    def score_file(self, path: Union[str, os.PathLike], *, session_id: Optional[str] = None,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, top_k: int = 0,
                   keep_session: bool = False) -> ScoreResult:
        """Scores a whole file (a book), streamed in chunks, like `brt score`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)

        def chunks():
            with open(path, "rb") as f:
                while True:
                    c = f.read(chunk_bytes)
                    if not c:
                        return
                    yield c

        return self._score(chunks, session_id, top_k, keep_session, os.path.basename(path))

    def _score(self, make_chunks, session_id, top_k, keep_session, label):
        owned = session_id is None
        if owned:
            session_id = self.create_session(label).id
        try:
            return self.score_chunks(make_chunks(), session_id, top_k=top_k)
        finally:
            if owned and not keep_session:
                try:
                    self.delete_session(session_id)
                except BrtError:
                    pass

    # -- generation --------------------------------------------------------------------------------
    def generate(self, prompt: Union[str, bytes] = b"", *, session_id: Optional[str] = None,
                 max_tokens: Optional[int] = None, temperature: Optional[float] = None,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 min_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
                 repetition_window: Optional[int] = None, seed: Optional[int] = None,
                 stop: Sequence[str] = (), keep_session: bool = False,
                 stream_interval: Optional[int] = None) -> Generation:
        """Streams a completion: iterate the result (once) for tokens, or call .result(). Without
        session_id a new session is used and deleted when the iteration ends (unless keep_session).
        Unset sampling options take the session's defaults, then the server's. stream_interval N > 1:
        the server sends the first token alone, then N tokens per message (less work per token for
        both sides, up to N - 1 decode steps later); the items are the same, one per token."""
        owned = session_id is None
        if owned:
            session_id = self.create_session("brt_client generate").id
        req = pb.GenerateRequest(session_id=session_id, prompt=_as_bytes(prompt),
                                 sampling=_sampling(temperature, top_k, top_p, min_p, repetition_penalty,
                                                    repetition_window, seed, stop))
        if max_tokens is not None:
            req.max_tokens = max_tokens
        if stream_interval is not None:
            req.stream_interval = stream_interval

        def cleanup():
            if owned and not keep_session:
                try:
                    self.delete_session(session_id)
                except BrtError:
                    pass

        stream = self._stub.Generate(req, timeout=self.stream_timeout, metadata=self._md(session_id))
        return Generation(stream, session_id, cleanup)

    def complete(self, prompt: Union[str, bytes] = b"", **kwargs) -> str:
        """generate(...) run to the end; returns the completion text."""
        return self.generate(prompt, **kwargs).result().text


def _parse_health_status(data: bytes) -> int:
    """Reads field 1 (varint) of grpc.health.v1.HealthCheckResponse; absent means 0 (UNKNOWN)."""
    i, status = 0, 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            if field == 1:
                status = value
        elif wire == 2:
            n, i = _varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise BrtError(grpc.StatusCode.INTERNAL, "malformed health response", "Health.Check")
    return status


def _varint(data: bytes, i: int):
    value, shift = 0, 0
    while True:
        if i >= len(data):
            raise BrtError(grpc.StatusCode.INTERNAL, "malformed health response", "Health.Check")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
