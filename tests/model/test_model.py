"""Tests of the BRT module: the attention window, the state, block/token equivalence, TorchScript, gradients."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "model"))

from brt.config import BRTConfig  # noqa: E402
from brt.model import BlockRecurrentTransformer  # noqa: E402
from brt.reference import score_tokens  # noqa: E402

torch.set_num_threads(1)
V = 61


def make(n_layers=1, recurrent=(), window=4, gate="fixed", seed=0):
    torch.manual_seed(seed)
    cfg = BRTConfig(vocab_size=V, d_model=32, n_layers=n_layers, n_heads=2, d_ff=48, window=window, n_state=5,
                    recurrent_layers=list(recurrent), gate=gate, dropout=0.0, attn_scale_init=3.0)
    return BlockRecurrentTransformer(cfg).eval()


@torch.no_grad()
def logits(model, tokens):
    kv, st = model.initial_state(tokens.shape[0])
    out, _, _ = model.forward_blocks(tokens, kv, st)
    return out


@torch.no_grad()
def influence(model, T, seed=1):
    """changed[i][j]: does replacing token j change the output at position i?"""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, V, (1, T), generator=g)
    ref = logits(model, base)
    changed = torch.zeros(T, T, dtype=torch.bool)
    for j in range(T):
        mod = base.clone()
        mod[0, j] = (base[0, j] + 7) % V
        diff = (logits(model, mod) - ref).abs().amax(-1)[0]
        changed[:, j] = diff > 1e-6
    return changed


@pytest.mark.parametrize("n_layers", [1, 3])
def test_window_without_recurrence(n_layers):
    W = 4
    T = 6 * W
    model = make(n_layers=n_layers, window=W)
    changed = influence(model, T)
    for i in range(T):
        for j in range(T):
            expected = i - n_layers * W <= j <= i
            assert bool(changed[i, j]) == expected, (i, j, n_layers)


def test_state_carries_information_beyond_the_window():
    W, L = 4, 2
    T = 8 * W
    model = make(n_layers=L, recurrent=[1], window=W)
    changed = influence(model, T)
    # Every position sees tokens far outside the attention span, through the state.
    for i in range(3 * W, T):
        for j in range(0, i - L * W):
            if j // W < i // W:  # token j's block fed a state that position i reads
                assert changed[i, j], (i, j)
    # Without the state's contribution, the window rule of a plain L-layer model holds again.
    model.state_scale = 0.0
    changed0 = influence(model, T)
    for i in range(T):
        for j in range(T):
            assert bool(changed0[i, j]) == (i - L * W <= j <= i), (i, j)


@pytest.mark.parametrize("gate", ["fixed", "lstm"])
def test_block_scoring_equals_token_decoding_batched_at_different_offsets(gate):
    W = 8
    model = make(n_layers=3, recurrent=[1], window=W, gate=gate)
    B, T = 4, 4 * W  # at least 3 blocks
    g = torch.Generator().manual_seed(3)
    toks = torch.randint(0, V, (B, T), generator=g)
    # Reference: each row alone, block-parallel.
    want = [score_tokens(model, toks[r].tolist()) for r in range(B)]
    with torch.no_grad():
        # Row r first consumes r*3 tokens alone, so in the batched steps rows sit at different offsets.
        kvs, sts, lps = [], [], []
        for r in range(B):
            kv, st = model.initial_state(1)
            row_lp = []
            for p in range(r * 3):
                lp, kv, st = model.decode_step(toks[r:r + 1, p], torch.tensor([p]), kv, st)
                row_lp.append(lp[0])
            kvs.append(kv)
            sts.append(st)
            lps.append(row_lp)
        kv, st = torch.cat(kvs), torch.cat(sts)
        pos = torch.tensor([r * 3 for r in range(B)])
        while int(pos.min()) < T:
            active = pos < T
            feed = torch.where(active, toks[torch.arange(B), pos.clamp(max=T - 1)], torch.zeros_like(pos))
            lp, kv2, st2 = model.decode_step(feed, pos.clamp(max=T - 1), kv, st)
            a6 = active.view(B, 1, 1, 1, 1, 1)
            kv = torch.where(a6, kv2, kv)
            st = torch.where(active.view(B, 1, 1, 1, 1), st2, st)
            for r in range(B):
                if active[r]:
                    lps[r].append(lp[r])
            pos = pos + active.long()
    for r in range(B):
        lp = torch.stack(lps[r])
        got = (-lp[:-1].gather(1, toks[r, 1:].unsqueeze(1)).squeeze(1)).tolist()
        assert max(abs(a - b) for a, b in zip(got, want[r])) < 1e-4


def test_score_blocks_matches_forward_and_carries_memory():
    W = 8
    model = make(n_layers=2, recurrent=[0], window=W)
    toks = torch.randint(0, V, (2, 3 * W))
    with torch.no_grad():
        kv, st = model.initial_state(2)
        tgt, tlp, tid, nxt, kv1, st1 = model.score_blocks(toks, kv, st, 5)
        # Two calls (1 block then 2) equal one call.
        a = model.score_blocks(toks[:, :W], kv, st, 0)
        b = model.score_blocks(toks[:, W:], a[4], a[5], 0)
    first_of_b = a[3].gather(1, toks[:, W:W + 1]).squeeze(1)
    joined = torch.cat([a[0], first_of_b.unsqueeze(1), b[0]], dim=1)
    assert torch.allclose(joined, tgt, atol=1e-5)
    assert torch.allclose(b[3], nxt, atol=1e-5)
    assert tlp.shape == (2, 3 * W, 5) and tid.dtype == torch.long
    assert torch.allclose(tlp[:, :-1].max(-1).values, tlp[:, :-1, 0])


def test_torchscript_reproduces_eager():
    W = 8
    model = make(n_layers=3, recurrent=[2], window=W)
    scripted = torch.jit.script(model)
    toks = torch.randint(0, V, (3, 2 * W))
    with torch.no_grad():
        kv, st = model.initial_state(3)
        skv, sst = scripted.initial_state(3)
        assert torch.equal(kv, skv) and torch.allclose(st, sst, atol=1e-6)
        e = model.score_blocks(toks, kv, st, 3)
        s = scripted.score_blocks(toks, kv, st, 3)
        for x, y in zip(e, s):
            assert x.shape == y.shape
            assert (x.float() - y.float()).abs().max() < 1e-5
        pos = torch.tensor([0, 5, W - 1])
        e = model.decode_step(toks[:, 0], pos, e[4], e[5])
        s = scripted.decode_step(toks[:, 0], pos, s[4], s[5])
        for x, y in zip(e, s):
            assert (x - y).abs().max() < 1e-5


def test_gradients_reach_recurrent_layer_state_ids_and_gate():
    W = 4
    model = make(n_layers=2, recurrent=[1], window=W).train()
    toks = torch.randint(0, V, (2, 3 * W))
    kv, st = model.initial_state(2)
    out, _, _ = model.forward_blocks(toks, kv, st)
    loss = torch.nn.functional.cross_entropy(out[:, :-1].reshape(-1, V), toks[:, 1:].reshape(-1))
    loss.backward()
    rec = model.layers[1]
    for name in ["s_wq", "s_wq2", "s_wk", "s_wv", "s_wo", "wq2"]:
        grad = getattr(rec, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ["state_ids", "gate_bias", "initial", "alpha2", "s_alpha", "s_alpha2"]:
        grad = getattr(rec, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_lstm_gate_gradients():
    model = make(n_layers=1, recurrent=[0], window=4, gate="lstm").train()
    toks = torch.randint(0, V, (1, 12))
    kv, st = model.initial_state(1)
    out, _, _ = model.forward_blocks(toks, kv, st)
    out.sum().backward()
    assert model.layers[0].gate_f.weight.grad.abs().sum() > 0
    assert model.layers[0].gate_i.weight.grad.abs().sum() > 0
