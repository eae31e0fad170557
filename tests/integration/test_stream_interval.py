"""GenerateRequest.stream_interval: several tokens per streamed message, the same tokens as one per message."""
import pytest

from conftest import STUBS

pb = STUBS.pb

PROMPT = b"1:1 In the beginning God created the heaven and the earth. 1:2 And the earth"


def run(server, max_tokens, interval, **sampling):
    sid = server.stub.CreateSession(pb.CreateSessionRequest(), timeout=30).id
    req = pb.GenerateRequest(session_id=sid, prompt=PROMPT, max_tokens=max_tokens, stream_interval=interval,
                             sampling=pb.SamplingParams(**sampling))
    msgs = list(server.stub.Generate(req, timeout=120))
    server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=30)
    return msgs


def one_per_message(msgs):
    """(token_id, logprob, position, token_bytes) of a stream_interval 1 stream; checks its shape."""
    assert all(len(m.tokens) == 0 for m in msgs)
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in msgs[:-1])
    return [(m.token_id, m.logprob, m.position, m.token_bytes) for m in msgs[:-1]]


def several_per_message(msgs, interval):
    """The same tuples from a stream_interval > 1 stream; checks the messages' sizes and unset fields."""
    body, last = msgs[:-1], msgs[-1]
    assert last.finish_reason != pb.FINISH_REASON_UNSPECIFIED
    assert [len(m.tokens) for m in body[:1]] == [1], "the first token goes out alone"
    assert all(len(m.tokens) == interval for m in body[1:])
    assert len(last.tokens) < interval
    for m in msgs:
        assert (m.token_id, m.logprob, m.position, m.token_bytes) == (0, 0.0, 0, b"")
    return [(t.token_id, t.logprob, t.position, t.token_bytes) for m in msgs for t in m.tokens]


def assert_same_stream(a, b):
    """Same tokens (ids, positions, bytes exactly; logprobs to fp32 rounding), text and summary."""
    ta = one_per_message(a)
    tb = b[1]
    assert [(t[0], t[2], t[3]) for t in ta] == [(t[0], t[2], t[3]) for t in tb]
    assert [t[1] for t in ta] == pytest.approx([t[1] for t in tb], abs=1e-4)
    assert "".join(m.text for m in a) == "".join(m.text for m in b[0])
    fa, fb = a[-1], b[0][-1]
    assert (fa.finish_reason, fa.prompt_tokens, fa.generated_tokens, fa.session_position) == \
        (fb.finish_reason, fb.prompt_tokens, fb.generated_tokens, fb.session_position)


@pytest.mark.parametrize("interval", [2, 5, 64])
def test_several_tokens_per_message_are_the_tokens_of_one_per_message(server, interval):
    max_tokens = 23
    ones = run(server, max_tokens, 0, temperature=0.0)
    assert one_per_message(ones) == one_per_message(run(server, max_tokens, 1, temperature=0.0))
    several = run(server, max_tokens, interval, temperature=0.0)
    assert_same_stream(ones, (several, several_per_message(several, interval)))
    n = ones[-1].generated_tokens
    if ones[-1].finish_reason == pb.FINISH_REASON_LENGTH:
        assert n == max_tokens
        # 1 alone, then full messages of `interval`, the rest with the finish reason.
        assert len(several) == 1 + (n - 1) // interval + 1


def test_sampled_stop_sequence_and_held_back_text_match_one_per_message(server):
    # A stop sequence holds text back and ends the stream mid-message; seeded sampling gives both runs
    # the same draws.
    sampling = dict(temperature=0.9, top_p=0.95, seed=7, stop=[" the"])
    ones = run(server, 60, 1, **sampling)
    several = run(server, 60, 4, **sampling)
    assert_same_stream(ones, (several, several_per_message(several, 4)))
    assert ones[-1].finish_reason == pb.FINISH_REASON_STOP_SEQUENCE


def test_zero_tokens_with_an_interval_is_one_message(server):
    msgs = run(server, 0, 8, temperature=0.0)
    assert len(msgs) == 1 and len(msgs[0].tokens) == 0
    assert msgs[0].finish_reason == pb.FINISH_REASON_LENGTH and msgs[0].generated_tokens == 0
