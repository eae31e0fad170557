"""Tests of export contract v2 ("slot pools"): init/copy/score/decode/finish_slots.

Every model here has a randomised relative-position bias (N(0,1)) and perturbed scales, norms and gates, so a
wrong bucket, mask or ring index changes the numbers. Pools start as random garbage, so a method that reads or
writes a row outside `slots` is caught, and one test breaks the decode bucket table on purpose to show that the
decode-versus-blocks comparison can fail.
"""
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "model"))

from brt.config import BRTConfig  # noqa: E402
from brt.export import CONTRACT, EXPORT_FORMAT, META_FILE, export, fingerprint, load_meta  # noqa: E402
from brt.model import BlockRecurrentTransformer, relative_bucket  # noqa: E402

torch.set_num_threads(1)
V = 61
TOL = 1e-5


def perturb(model: BlockRecurrentTransformer, seed: int) -> None:
    """Non-trivial values for parameters that initialise to constants (bias 0, scales, norm weights)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(t, scale=1.0, shift=0.0):
        t.copy_(torch.randn(t.shape, generator=g) * scale + shift)

    with torch.no_grad():
        for layer in model.layers:
            rnd(layer.rel_bias)
            rnd(layer.alpha, 0.5, 3.0)
            rnd(layer.norm1.weight, 0.1, 1.0)
            rnd(layer.norm2.weight, 0.1, 1.0)
            if layer.rec_index >= 0:
                for name in ["alpha2", "s_alpha", "s_alpha2"]:
                    rnd(getattr(layer, name), 0.5, 3.0)
                rnd(layer.state_norm.weight, 0.1, 1.0)
                rnd(layer.gate_bias)
                if layer.lstm_gate:
                    rnd(layer.gate_f.bias, 0.5)
                    rnd(layer.gate_i.bias, 0.5)
        rnd(model.final_norm.weight, 0.1, 1.0)


def make(gate="fixed", n_layers=3, recurrent=(1,), window=8, seed=0, scripted=False):
    torch.manual_seed(seed)
    cfg = BRTConfig(vocab_size=V, d_model=32, n_layers=n_layers, n_heads=2, d_ff=48, window=window, n_state=5,
                    recurrent_layers=list(recurrent), gate=gate, dropout=0.0, attn_scale_init=3.0)
    model = BlockRecurrentTransformer(cfg).eval()
    perturb(model, seed + 100)
    return torch.jit.script(model) if scripted else model


def garbage_pools(model, capacity, seed=7):
    """Pools of the model's shapes filled with random values (rows a method must not touch stay garbage)."""
    kv, state = model.allocate_slots(capacity)
    g = torch.Generator().manual_seed(seed)
    for t in kv:
        t.copy_(torch.randn(t.shape, generator=g))
    state.copy_(torch.randn(state.shape, generator=g))
    return kv, state


def clone_pools(kv, state):
    return [t.clone() for t in kv], state.clone()


def assert_untouched(kv, state, kv0, state0, used):
    P = state.shape[0]
    others = torch.tensor([p for p in range(P) if p not in set(used)], dtype=torch.long)
    for t, t0 in zip(kv, kv0):
        assert torch.equal(t[others], t0[others])
    assert torch.equal(state[others], state0[others])


def max_pool_diff(a, b, slots_a, slots_b=None):
    """Largest difference between rows slots_a of pools a and rows slots_b of pools b."""
    slots_b = slots_a if slots_b is None else slots_b
    ka, sa = a
    kb, sb = b
    d = [(x[slots_a] - y[slots_b]).abs().max().item() for x, y in zip(ka, kb)]
    return max(d + [(sa[slots_a] - sb[slots_b]).abs().max().item()] if sa.numel() else d)


def step(model, kv, state, slots, pos, tok):
    """One decode step of the rows `slots`, then the state update of the rows that completed a block."""
    lp = model.decode_slots(tok, pos, slots, kv, state)
    done = pos % model.window == model.window - 1
    if bool(done.any()):
        model.finish_slots(slots[done], kv, state)
    return lp


@torch.no_grad()
def decode_vs_blocks(model, n_blocks=6, chunks=(1, 2, 3), slots=(5, 2, 7), P=9, seed=3):
    """Feeds the same text through score_slots (chunks of whole blocks) and token by token through
    decode_slots/finish_slots. Returns the largest log-prob and pool differences (checked at every chunk end)
    and the pools (to check untouched rows)."""
    W = model.window
    B = len(slots)
    slots = torch.tensor(slots)
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (B, n_blocks * W + 1), generator=g)
    blk = garbage_pools(model, P, seed=1)
    dec = garbage_pools(model, P, seed=2)
    blk0, dec0 = clone_pools(*blk), clone_pools(*dec)
    model.init_slots(slots, *blk)
    model.init_slots(slots, *dec)
    lp_diff, mem_diff = 0.0, 0.0
    start = 0
    assert sum(chunks) == n_blocks
    for n in chunks:
        T = n * W
        tgt, top_lp, top_ids, nxt = model.score_slots(toks[:, start:start + T], torch.full((B,), start), slots,
                                                     *blk, 5)
        lps = []
        for p in range(start, start + T):
            lps.append(step(model, *dec, slots, torch.full((B,), p), toks[:, p]))
        lp = torch.stack(lps, dim=1)  # (B, T, V)
        want_tgt = lp[:, :-1].gather(2, toks[:, start + 1:start + T].unsqueeze(2)).squeeze(2)
        lp_diff = max(lp_diff, (want_tgt - tgt).abs().max().item(), (lp[:, -1] - nxt).abs().max().item(),
                      (lp.topk(5, dim=-1).values - top_lp).abs().max().item())
        mem_diff = max(mem_diff, max_pool_diff(blk, dec, slots))
        start += T
    return lp_diff, mem_diff, (blk, blk0), (dec, dec0), slots


# ---- decode token by token == whole blocks ------------------------------------------------------------------

@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@pytest.mark.parametrize("window", [8, 20])
def test_decode_slots_equals_score_slots(gate, scripted, window):
    model = make(gate=gate, window=window, scripted=scripted)
    lp_diff, mem_diff, (blk, blk0), (dec, dec0), slots = decode_vs_blocks(model)
    assert lp_diff < TOL and mem_diff < TOL, (lp_diff, mem_diff)
    assert_untouched(*blk, *blk0, slots.tolist())
    assert_untouched(*dec, *dec0, slots.tolist())


@pytest.mark.parametrize("recurrent", [(), (0, 2)], ids=["no-recurrent", "two-recurrent"])
def test_decode_slots_equals_score_slots_other_layouts(recurrent):
    model = make(gate="lstm", recurrent=recurrent, window=6)
    lp_diff, mem_diff, (blk, blk0), (dec, dec0), slots = decode_vs_blocks(model)
    assert lp_diff < TOL and mem_diff < TOL, (lp_diff, mem_diff)
    assert_untouched(*dec, *dec0, slots.tolist())


def broken_bucket(model, shift):
    """Replaces every decode bucket table by the buckets of the distance + shift."""
    for layer in model.layers:
        C = layer.C
        ring = torch.arange(C)
        d = (ring.view(C, 1) - ring.view(1, C) - 1) % C + 1
        layer.dec_bucket = relative_bucket(d + shift, layer.num_buckets, layer.max_distance)


def test_a_wrong_decode_bucket_table_is_caught():
    model = make(window=8)
    broken_bucket(model, 0)  # rebuilding the right table changes nothing
    lp_diff, mem_diff = decode_vs_blocks(model)[:2]
    assert lp_diff < TOL and mem_diff < TOL
    broken_bucket(model, 1)  # off by one
    lp_diff, mem_diff = decode_vs_blocks(model)[:2]
    assert lp_diff > 1e-2 and mem_diff > 1e-2, (lp_diff, mem_diff)


def test_a_wrong_decode_mask_is_caught():
    model = make(window=8)
    rec = model.layers[1]
    rec.dec_mask = torch.roll(rec.dec_mask, 1, dims=1)  # the window one slot off
    lp_diff, mem_diff = decode_vs_blocks(model)[:2]
    assert lp_diff > 1e-2, lp_diff


@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@torch.no_grad()
def test_rows_at_different_offsets_in_one_batch(gate):
    """Three rows in slots [5, 2, 7] of a pool of 9, at different offsets in their blocks, each decoded in
    shared batches of the rows still active; equals each row scored alone by whole blocks."""
    W = 8
    model = make(gate=gate, window=W)
    slots = torch.tensor([5, 2, 7])
    B, T = 3, 6 * W
    g = torch.Generator().manual_seed(11)
    toks = torch.randint(0, V, (B, T + 1), generator=g)
    kv, state = garbage_pools(model, 9)
    kv0, state0 = clone_pools(kv, state)
    model.init_slots(slots, kv, state)
    lps = [[] for _ in range(B)]
    # Row r first runs alone for 3r+1 tokens, so the batched steps mix offsets.
    pos = torch.zeros(B, dtype=torch.long)
    for r in range(B):
        for _ in range(3 * r + 1):
            lps[r].append(step(model, kv, state, slots[r:r + 1], pos[r:r + 1], toks[r:r + 1, pos[r]])[0])
            pos[r] += 1
    while bool((pos < T).any()):
        act = torch.nonzero(pos < T).view(-1)
        lp = step(model, kv, state, slots[act], pos[act], toks[act, pos[act]])
        assert len(set((pos[act] % W).tolist())) > 1 or len(act) == 1
        for j, r in enumerate(act.tolist()):
            lps[r].append(lp[j])
        pos[act] += 1
    assert_untouched(kv, state, kv0, state0, slots.tolist())
    for r in range(B):
        ref = garbage_pools(model, 3, seed=5)
        one = torch.tensor([1])
        model.init_slots(one, *ref)
        tgt, _, _, nxt = model.score_slots(toks[r:r + 1, :T], torch.tensor([0]), one, *ref, 0)
        lp = torch.stack(lps[r])
        want = lp[:-1].gather(1, toks[r, 1:T].unsqueeze(1)).squeeze(1)
        assert (want - tgt[0]).abs().max() < TOL
        assert (lp[-1] - nxt[0]).abs().max() < TOL
        assert max_pool_diff((kv, state), ref, slots[r:r + 1], one) < TOL


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@torch.no_grad()
def test_mixed_decode_and_blocks_equal_all_blocks_and_v1(gate, scripted):
    """Two rows (slots 6 and 1) alternate decode and score_slots; one score_slots batch holds rows at
    different blocks (so different halves of the recurrent ring). Equals score_slots of whole texts and v1
    score_blocks, and the memory at the last common block boundary equals whole-block scoring."""
    W = 8
    model = make(gate=gate, window=W, scripted=scripted)
    slots = torch.tensor([6, 1])
    lens = [5 * W + 5, 6 * W + 5]
    g = torch.Generator().manual_seed(13)
    toks = torch.randint(0, V, (2, 7 * W), generator=g)
    kv, state = garbage_pools(model, 8)
    kv0, state0 = clone_pools(kv, state)
    model.init_slots(slots, kv, state)
    got = [[], []]  # log-prob of the token after each fed position
    pos = [0, 0]

    def decode(rows, n):
        for _ in range(n):
            sl = slots[rows]
            p = torch.tensor([pos[r] for r in rows])
            lp = step(model, kv, state, sl, p, toks[rows, p])
            for j, r in enumerate(rows):
                got[r].append(lp[j, toks[r, pos[r] + 1]].item())
                pos[r] += 1

    def blocks(n):
        T = n * W
        st = torch.tensor(pos)
        tk = torch.stack([toks[r, pos[r]:pos[r] + T] for r in range(2)])
        tgt, _, _, nxt = model.score_slots(tk, st, slots, kv, state, 0)
        for r in range(2):
            got[r].extend(tgt[r].tolist())
            got[r].append(nxt[r, toks[r, pos[r] + T]].item())
            pos[r] += T

    decode([0, 1], W)      # row 0 block 0, row 1 block 0
    decode([1], W)         # row 1 block 1
    assert pos == [W, 2 * W]
    blocks(2)              # row 0 blocks 1-2, row 1 blocks 2-3: different ring halves in one call
    decode([0, 1], W)      # row 0 block 3, row 1 block 4
    blocks(1)              # row 0 block 4, row 1 block 5
    mem_at_boundary = clone_pools(kv, state)
    decode([0, 1], 5)
    assert pos == lens
    assert_untouched(kv, state, kv0, state0, slots.tolist())
    for r in range(2):
        n = lens[r]
        T = -(-(n + 1) // W) * W
        # All blocks through score_slots, in a fresh pool.
        ref = garbage_pools(model, 2, seed=9)
        one = torch.tensor([0])
        model.init_slots(one, *ref)
        tgt, _, _, _ = model.score_slots(toks[r:r + 1, :T], torch.tensor([0]), one, *ref, 0)
        assert (torch.tensor(got[r]) - tgt[0, :n]).abs().max() < TOL
        # v1.
        kv1, st1 = model.initial_state(1)
        tgt1 = model.score_blocks(toks[r:r + 1, :T], kv1, st1, 0)[0]
        assert (torch.tensor(got[r]) - tgt1[0, :n]).abs().max() < TOL
        # Memory at the last block boundary (position n - 5) equals whole-block scoring of that prefix.
        ref = garbage_pools(model, 2, seed=9)
        model.init_slots(one, *ref)
        model.score_slots(toks[r:r + 1, :n - 5], torch.tensor([0]), one, *ref, 0)
        assert max_pool_diff(mem_at_boundary, ref, slots[r:r + 1], one) < TOL


# ---- v2 == v1 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@torch.no_grad()
def test_score_slots_equals_score_blocks(gate, scripted):
    W = 8
    model = make(gate=gate, window=W, n_layers=3, recurrent=(1,), scripted=scripted)
    B = 3
    g = torch.Generator().manual_seed(17)
    toks = torch.randint(0, V, (B, 5 * W), generator=g)
    slots = torch.tensor([3, 0, 4])
    kv, state = garbage_pools(model, 5)
    model.init_slots(slots, kv, state)
    kv1, st1 = model.initial_state(B)
    start = 0
    for n in (2, 1, 2):
        T = n * W
        v1 = model.score_blocks(toks[:, start:start + T], kv1, st1, 4)
        v2 = model.score_slots(toks[:, start:start + T], torch.full((B,), start), slots, kv, state, 4)
        for a, b in zip(v1[:4], v2):
            assert a.shape == b.shape and a.dtype == b.dtype
        for i in (0, 1, 3):
            assert (v1[i] - v2[i]).abs().max() < TOL
        kv1, st1 = v1[4], v1[5]
        start += T
        # Memory: v1's previous-block half is the ring of ordinary layers; the recurrent layer's ring holds
        # the last two blocks, the last at ring half (block index % 2).
        last_half = (start // W - 1) % 2
        for i, C in enumerate(model.kv_slots):
            ring = kv[i][slots]
            if C == W:
                assert (ring - kv1[:, i, :, :, :W]).abs().max() < TOL
            else:
                got = ring[:, :, :, last_half * W:(last_half + 1) * W]
                assert (got - kv1[:, i, :, :, :W]).abs().max() < TOL
        assert (state[slots] - st1).abs().max() < TOL
    assert v2[2].shape == (B, 2 * W, 4) and v2[2].dtype == torch.long
    empty = model.score_slots(toks[:, start - W:start], torch.full((B,), start - W), slots, *clone_pools(kv, state), 0)
    assert empty[1].shape == (B, W, 0) and empty[2].shape == (B, W, 0) and empty[2].dtype == torch.long


# ---- TorchScript == eager -------------------------------------------------------------------------------

@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@torch.no_grad()
def test_torchscript_decode_equals_eager_over_many_steps(gate):
    W = 8
    eager = make(gate=gate, window=W)
    script = torch.jit.script(eager)
    slots = torch.tensor([4, 0, 2, 5])
    B = 4
    g = torch.Generator().manual_seed(19)
    toks = torch.randint(0, V, (B, 4 * W + 8), generator=g)
    pe = garbage_pools(eager, 6)
    ps = clone_pools(*pe)
    eager.init_slots(slots, *pe)
    script.init_slots(slots, *ps)
    assert max_pool_diff(pe, ps, slots) < 1e-6
    offs = torch.tensor([0, 3, 5, 7])  # staggered rows
    for i in range(4 * W):  # four blocks' worth of steps
        pos = offs + i
        a = step(eager, *pe, slots, pos, toks[torch.arange(B), pos])
        b = step(script, *ps, slots, pos, toks[torch.arange(B), pos])
        assert (a - b).abs().max() < TOL, i
    assert max_pool_diff(pe, ps, slots) < TOL


# ---- init / copy -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@torch.no_grad()
def test_init_slots_is_a_fresh_document(scripted):
    model = make(gate="lstm", window=8, recurrent=(0, 2), scripted=scripted)
    kv, state = garbage_pools(model, 6)
    kv0, state0 = clone_pools(kv, state)
    slots = torch.tensor([4, 1])
    model.init_slots(slots, kv, state)
    assert_untouched(kv, state, kv0, state0, [4, 1])
    _, st1 = model.initial_state(2)
    for t in kv:
        assert torch.equal(t[slots], torch.zeros_like(t[slots]))
    assert (state[slots] - st1).abs().max() < 1e-6


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@torch.no_grad()
def test_a_copied_slot_continues_exactly_like_the_original(scripted):
    W = 8
    model = make(gate="fixed", window=W, scripted=scripted)
    g = torch.Generator().manual_seed(23)
    toks = torch.randint(0, V, (1, 6 * W), generator=g)
    kv, state = garbage_pools(model, 7)
    a, b = torch.tensor([4]), torch.tensor([1])
    model.init_slots(a, kv, state)
    for p in range(W + 3):  # mid-block, after one state update
        step(model, kv, state, a, torch.tensor([p]), toks[:, p])
    model.copy_slots(a, b, kv, state)
    for t in kv:
        assert torch.equal(t[1], t[4])
    assert torch.equal(state[1], state[4])
    kv0, state0 = clone_pools(kv, state)
    outs = {}
    for s in (a, b):
        seq = []
        for p in range(W + 3, 2 * W):  # through the block end
            seq.append(step(model, kv, state, s, torch.tensor([p]), toks[:, p]))
        seq.extend(model.score_slots(toks[:, 2 * W:4 * W], torch.tensor([2 * W]), s, kv, state, 3))
        for p in range(4 * W, 4 * W + 5):
            seq.append(step(model, kv, state, s, torch.tensor([p]), toks[:, p]))
        outs[int(s)] = seq
    for x, y in zip(outs[4], outs[1]):
        assert torch.equal(x, y)
    for t in kv:
        assert torch.equal(t[1], t[4])
    assert torch.equal(state[1], state[4])
    assert_untouched(kv, state, kv0, state0, [1, 4])
    # Copies of several rows at once, including a swap, behave as if simultaneous.
    before = clone_pools(kv, state)
    model.copy_slots(torch.tensor([4, 0]), torch.tensor([0, 4]), kv, state)
    assert torch.equal(kv[0][0], before[0][0][4]) and torch.equal(kv[0][4], before[0][0][0])
    assert torch.equal(state[0], before[1][4]) and torch.equal(state[4], before[1][0])


# ---- the contract's mechanics -----------------------------------------------------------------------------

@torch.no_grad()
def test_slot_methods_have_no_host_synchronisation():
    """No tensor -> Python value conversions in the scripted v2 methods (v1 decode_step has one: the control)."""
    script = make(gate="lstm", recurrent=(0, 2), scripted=True)
    syncs = ["aten::item", "aten::Bool", "aten::is_nonzero", "aten::Int(", "aten::Float(", "aten::ScalarImplicit",
             "aten::tolist", "aten::nonzero", "aten::any"]

    def found(method):
        g = getattr(script, method).graph
        torch._C._jit_pass_inline(g)
        text = str(g)
        return [s for s in syncs if s in text]

    for m in ["init_slots", "copy_slots", "score_slots", "decode_slots", "finish_slots"]:
        assert found(m) == [], m
    assert "aten::Bool" in found("decode_step")


@torch.no_grad()
def test_slot_methods_under_inference_mode():
    W = 8
    model = make(gate="fixed", window=W, scripted=True)
    slots = torch.tensor([2, 0])
    toks = torch.randint(0, V, (2, 2 * W + 1))
    kv, state = garbage_pools(model, 3)
    ref = clone_pools(kv, state)
    outs = []
    with torch.inference_mode():  # pools made outside inference mode, updated inside it
        model.init_slots(slots, kv, state)
        outs.append(model.score_slots(toks[:, :W], torch.tensor([0, 0]), slots, kv, state, 2)[3])
        for p in range(W, 2 * W):
            outs.append(step(model, kv, state, slots, torch.tensor([p, p]), toks[:, p]))
    model.init_slots(slots, *ref)
    want = [model.score_slots(toks[:, :W], torch.tensor([0, 0]), slots, *ref, 2)[3]]
    for p in range(W, 2 * W):
        want.append(step(model, *ref, slots, torch.tensor([p, p]), toks[:, p]))
    for x, y in zip(outs, want):
        assert torch.equal(x, y)
    assert max_pool_diff((kv, state), ref, slots) == 0.0


def test_allocate_slots_shapes_and_kv_slots():
    model = make(recurrent=(0, 2), window=8, n_layers=4)
    assert model.kv_slots == [16, 8, 16, 8]
    kv, state = model.allocate_slots(3)
    assert [tuple(t.shape) for t in kv] == [(3, 2, 2, C, 16) for C in model.kv_slots]
    assert tuple(state.shape) == (3, 2, 3, 5, 32)


def test_export_format_2_metadata(tmp_path):
    model = make(gate="lstm", recurrent=(0, 2), n_layers=4, window=8)
    cfg = BRTConfig.from_dict(json.loads(model.config_json))
    meta = export(model, cfg, "0" * 64, str(tmp_path / "m.pt"), name="t")
    got = load_meta(str(tmp_path / "m.pt"))
    assert got == json.loads(json.dumps(meta))
    assert got["format"] == EXPORT_FORMAT == 2 and got["contract"] == CONTRACT == "slots-v2"
    assert got["kv_slots"] == [16, 8, 16, 8] and got["recurrent_layers"] == [0, 2]
    for key in ["name", "config", "vocab_size", "bos_id", "eos_id", "pad_id", "unk_id", "window", "n_state",
                "n_layers", "n_recurrent", "n_heads", "head_dim", "d_model", "dtype", "parameters",
                "tokenizer_sha256", "fingerprint"]:
        assert key in got, key
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    for m in ["init_slots", "copy_slots", "score_slots", "decode_slots", "finish_slots"]:
        assert hasattr(loaded, m)


def test_recurrent_layers_must_be_in_layer_order():
    with pytest.raises(ValueError):
        BRTConfig(n_layers=4, recurrent_layers=[2, 0]).validate()
    with pytest.raises(ValueError):
        BRTConfig(n_layers=4, recurrent_layers=[1, 1]).validate()


@pytest.mark.parametrize("path", ["model/artifacts/brt.pt", "tests/data/tiny/brt.pt"])
@torch.no_grad()
def test_shipped_exports_are_format_2(path):
    files = {META_FILE: ""}
    script = torch.jit.load(os.path.join(ROOT, path), map_location="cpu", _extra_files=files)
    meta = json.loads(files[META_FILE])
    assert meta["format"] == 2 and meta["contract"] == "slots-v2"
    cfg = BRTConfig.from_dict(meta["config"])
    assert meta["kv_slots"] == [2 * cfg.window if i in cfg.recurrent_layers else cfg.window
                                for i in range(cfg.n_layers)]
    assert meta["recurrent_layers"] == cfg.recurrent_layers
    eager = BlockRecurrentTransformer(cfg).eval()
    want = eager.state_dict().keys()
    eager.load_state_dict({k: v for k, v in script.state_dict().items() if k in want})
    assert fingerprint(eager, cfg) == meta["fingerprint"]
    # The relative bias is not trivial (the tiny model's is randomised so bucket errors show).
    assert all(float(layer.rel_bias.std()) > 0.05 for layer in eager.layers)
    # A short decode-versus-blocks check on the exported module itself.
    W = cfg.window
    slots = torch.tensor([1])
    toks = torch.randint(0, cfg.vocab_size, (1, 2 * W))
    a = script.allocate_slots(2)
    b = script.allocate_slots(2)
    script.init_slots(slots, *a)
    script.init_slots(slots, *b)
    tgt = script.score_slots(toks, torch.tensor([0]), slots, *a, 0)[0]
    lps = [step(script, *b, slots, torch.tensor([p]), toks[:, p]) for p in range(2 * W - 1)]
    want_tgt = torch.stack(lps, 1)[0].gather(1, toks[0, 1:].unsqueeze(1)).squeeze(1)
    assert (want_tgt - tgt[0]).abs().max() < 1e-4


@pytest.mark.parametrize("scripted", [False, True])
def test_block_grouping_does_not_change_a_single_bit(scripted):
    """N blocks in one score_slots call give bit-for-bit the memory and log-probs of N calls of one block.

    The server groups a session's blocks into calls as its input arrives, so this is what makes a
    restored or forked session continue bitwise like the uninterrupted one. (A block-parallel rewrite
    that ran the linear layers over all N*W tokens at once broke it: the GEMM's rounding depends on M.)
    """
    model = make(scripted=scripted, window=8)
    W = 8
    torch.manual_seed(11)
    toks = torch.randint(4, V, (1, 6 * W))
    slots = torch.tensor([0])
    with torch.inference_mode():
        kv_a, st_a = model.allocate_slots(1)
        kv_b, st_b = model.allocate_slots(1)
        model.init_slots(slots, kv_a, st_a)
        model.init_slots(slots, kv_b, st_b)
        whole, _, _, next_a = model.score_slots(toks, torch.tensor([0]), slots, kv_a, st_a, 0)
        parts = []
        for b in range(6):
            t, _, _, next_b = model.score_slots(toks[:, b * W:(b + 1) * W], torch.tensor([b * W]), slots,
                                                kv_b, st_b, 0)
            parts.append(t)
    assert torch.equal(st_a, st_b)
    assert all(torch.equal(x, y) for x, y in zip(kv_a, kv_b))
    assert torch.equal(next_a, next_b)
    for b in range(6):  # within each block the targets agree bitwise too
        assert torch.equal(whole[:, b * W:(b + 1) * W - 1], parts[b])


def score_block_by_block(model, tokens, starts, slots, kv, state, top_k):
    """score_slots as it was written before it ran layer by layer: each block through every layer
    (block_core), the logits per block, the rings and the state written at the end."""
    W = model.window
    B, T = tokens.shape
    N = T // W
    st_rows = state[slots]
    states = [st_rows[:, r] for r in range(model.n_recurrent)]
    empty = st_rows[:, 0:0]
    prev_k, prev_v, older_k, older_v = [], [], [], []
    for i, layer in enumerate(model.layers):
        rows = layer.read_span(kv[i], slots, starts - W, W)
        prev_k.append(rows[:, 0])
        prev_v.append(rows[:, 1])
        older_k.append(rows[:, 0])
        older_v.append(rows[:, 1])
    outs = []
    for b in range(N):
        x = model.embed(tokens[:, b * W:(b + 1) * W])
        for i, layer in enumerate(model.layers):
            r = layer.rec_index
            x, k, v, st = layer.block_core(x, prev_k[i], prev_v[i], states[r] if r >= 0 else empty, model.state_scale)
            older_k[i], older_v[i], prev_k[i], prev_v[i] = prev_k[i], prev_v[i], k, v
            if r >= 0:
                states[r] = st
        outs.append(model.logits_of(x))
    last = starts + (N - 1) * W
    for i, layer in enumerate(model.layers):
        if layer.C > W and N >= 2:
            layer.write_span(kv[i], slots, last - W, torch.cat([older_k[i], prev_k[i]], dim=2),
                             torch.cat([older_v[i], prev_v[i]], dim=2))
        else:
            layer.write_span(kv[i], slots, last, prev_k[i], prev_v[i])
    if model.n_recurrent > 0:
        state[slots] = torch.stack(states, dim=1)
    return model.score_outputs(torch.cat(outs, dim=1), tokens, top_k)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("weights", ["plain", "transposed", "xnnpack"])
@pytest.mark.parametrize("gate,recurrent", [("fixed", (1,)), ("lstm", (1,)), ("fixed", (0, 2)), ("fixed", ())])
def test_layer_by_layer_scoring_is_the_block_by_block_loop_bit_for_bit(gate, recurrent, weights, rows, scripted):
    """score_slots runs its blocks through a layer a group at a time (score_group_rows = 4: groups of 4
    blocks for 1 row, 2 for 2 rows, block by block for 4), each block position's rows a matrix product of
    their own (grouped_product): every output and the pools equal, bit for bit, the block-by-block loop it
    replaced, for rows in scattered slots over calls of 1, 3, 4, 6 and 9 blocks (one group, full and partial
    groups, several groups ending in a single block), with each kind of weights. (Rows of 8 tokens: OpenBLAS
    rounds a product of 16 rows otherwise than the same rows inside a larger one.)"""
    model = make(gate=gate, recurrent=recurrent, window=8, scripted=scripted)
    # The oracle runs eagerly (the same weights): a scripted module's submodule methods called one by one
    # from Python do not round as its own compiled score_slots and the eager model do.
    ref = make(gate=gate, recurrent=recurrent, window=8)
    assert model.score_group_rows == 4
    for m in (model, ref):
        if weights == "transposed":
            assert m.pack_cpu_transposed()
        elif weights == "xnnpack":
            assert m.pack_cpu()
    W = 8
    torch.manual_seed(5)
    slots = torch.tensor([4, 0, 5, 2][:rows])
    with torch.inference_mode():
        kv_a, st_a = garbage_pools(model, 6)
        kv_b, st_b = clone_pools(kv_a, st_a)
        model.init_slots(slots, kv_a, st_a)
        ref.init_slots(slots, kv_b, st_b)
        starts = torch.zeros(rows, dtype=torch.long)
        for n in (1, 3, 4, 6, 9):
            toks = torch.randint(4, V, (rows, n * W))
            for top_k in (3, 0):
                got = model.score_slots(toks, starts, slots, kv_a, st_a, top_k)
                want = score_block_by_block(ref, toks, starts, slots, kv_b, st_b, top_k)
                for g, w in zip(got, want):
                    assert g.dtype == w.dtype and torch.equal(g, w)
                assert torch.equal(st_a, st_b)
                assert all(torch.equal(x, y) for x, y in zip(kv_a, kv_b))
                starts = starts + n * W


# ---- spans (span_slots) == token by token ------------------------------------------------------------------

@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("gate,recurrent", [("fixed", (1,)), ("lstm", (1,)), ("fixed", (0, 2)), ("fixed", ())])
@torch.no_grad()
def test_span_slots_equals_decode_slots(gate, recurrent, scripted):
    """Rows in slots [5, 2, 7] of a pool of 9 (garbage elsewhere) fed spans of random lengths (1..the end of
    their block), padded in shared batches, at different offsets; each span ending a block is followed by
    finish_slots. Equals the same text fed token by token: every target log-prob, the top-k, the next-token
    distribution and the pools, across 5 blocks; rows outside the call are untouched."""
    W = 8
    model = make(gate=gate, recurrent=recurrent, window=W, scripted=scripted)
    slots = torch.tensor([5, 2, 7])
    B, T = 3, 5 * W
    g = torch.Generator().manual_seed(21)
    toks = torch.randint(0, V, (B, T), generator=g)
    dec = garbage_pools(model, 9, seed=2)
    spn = garbage_pools(model, 9, seed=3)
    spn0 = clone_pools(*spn)
    model.init_slots(slots, *dec)
    model.init_slots(slots, *spn)
    ref = [[step(model, *dec, slots[r:r + 1], torch.tensor([p]), toks[r:r + 1, p])[0] for p in range(T)]
           for r in range(B)]
    pos = [0] * B
    worst, calls, mixed = 0.0, 0, 0
    while min(pos) < T:
        rows = [r for r in range(B) if pos[r] < T]
        lens = [int(torch.randint(1, W - pos[r] % W + 1, (1,), generator=g)) for r in rows]
        n = max(lens)
        t = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            t[i, :lens[i]] = toks[r, pos[r]:pos[r] + lens[i]]
        at = torch.tensor([pos[r] for r in rows])
        mixed += len(set(lens)) > 1 and len(set((at % W).tolist())) > 1
        tgt, top_lp, top_ids, nxt = model.span_slots(t, torch.tensor(lens), at, slots[rows], *spn, 3, True)
        for i, r in enumerate(rows):
            lp = torch.stack(ref[r][pos[r]:pos[r] + lens[i]])  # (len, V)
            want = lp[:-1].gather(1, toks[r, pos[r] + 1:pos[r] + lens[i]].unsqueeze(1)).squeeze(1)
            worst = max(worst, (nxt[i] - lp[-1]).abs().max().item(),
                        (top_lp[i, :lens[i]] - lp.topk(3, dim=-1).values).abs().max().item())
            if lens[i] > 1:
                worst = max(worst, (tgt[i, :lens[i] - 1] - want).abs().max().item())
        done = [r for i, r in enumerate(rows) if (pos[r] + lens[i]) % W == 0]
        for i, r in enumerate(rows):
            pos[r] += lens[i]
        if done:
            model.finish_slots(slots[done], *spn)
        calls += 1
    assert worst < TOL, worst
    assert mixed > 0  # some calls padded rows of different lengths at different offsets
    assert max_pool_diff(dec, spn, slots) < TOL
    assert_untouched(*spn, *spn0, slots.tolist())


@torch.no_grad()
def test_span_slots_prompt_form_returns_the_same_next_distribution():
    """all_positions=False (a prompt) returns only the next-token distribution, bitwise the full form's, and
    leaves the same memory behind."""
    W = 8
    model = make(window=W)
    slots = torch.tensor([1, 0])
    a = garbage_pools(model, 3, seed=4)
    b = clone_pools(*a)
    model.init_slots(slots, *a)
    model.init_slots(slots, *b)
    t = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(5))
    lens, at = torch.tensor([6, 4]), torch.tensor([0, 0])
    full = model.span_slots(t, lens, at, slots, *a, 0, True)
    short = model.span_slots(t, lens, at, slots, *b, 0, False)
    assert short[0].numel() == 0 and short[1].numel() == 0
    assert torch.equal(full[3], short[3])  # bitwise: a rewind replays without scores, a first reading with
    assert max_pool_diff(a, b, slots) == 0.0


# ---- pack_cpu: XNNPACK products with prepacked weights ----------------------------------------------------

def run_everything(model, seed=5):
    """score_slots, decode_slots (with finish_slots), span_slots in both forms, on 3 rows of a garbage pool of
    9 across 4 blocks. Returns every output and the used pool rows, in order."""
    W = model.window
    slots = torch.tensor([5, 2, 7])
    B = 3
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (B, 4 * W), generator=g)
    kv, state = garbage_pools(model, 9, seed=1)
    model.init_slots(slots, kv, state)
    outs = list(model.score_slots(toks[:, :2 * W], torch.zeros(B, dtype=torch.long), slots, kv, state, 3))
    for p in range(2 * W, 3 * W):
        outs.append(step(model, kv, state, slots, torch.full((B,), p), toks[:, p]))
    lens = torch.tensor([W, 3, 1])
    outs += list(model.span_slots(toks[:, 3 * W:], lens, torch.full((B,), 3 * W), slots, kv, state, 3, True))
    outs.append(model.span_slots(toks[:, 3 * W + 3:3 * W + 5], torch.tensor([2, 2, 2]),
                                 torch.tensor([4 * W, 3 * W + 3, 3 * W + 1]), slots, kv, state, 0, False)[3])
    model.finish_slots(slots[:1], kv, state)
    return outs + [t[slots] for t in kv] + [state[slots]]


def pack(model, how):
    """Packs a scripted model's products: "xnnpack" (pack_cpu) or "transposed" (pack_cpu_transposed)."""
    return model.pack_cpu() if how == "xnnpack" else model.pack_cpu_transposed()


@torch.no_grad()
@pytest.mark.parametrize("how", ["xnnpack", "transposed"])
@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@pytest.mark.parametrize("recurrent", [(1,), (), (0, 2)], ids=["one-recurrent", "no-recurrent", "two-recurrent"])
def test_packed_products_compute_the_same_function(gate, recurrent, how):
    """pack_cpu and pack_cpu_transposed (what brt-server calls on a CPU float32 model, by the CPU) change how
    the products are summed, not what they compute: every method's outputs and the pools equal the unpacked
    module's to fp32 rounding; decode still equals block scoring; unpack_cpu gives back the unpacked module bit
    for bit."""
    model = make(gate=gate, recurrent=recurrent, scripted=True)
    plain = run_everything(model)
    assert pack(model, how)
    packed = run_everything(model)
    worst = max((a.float() - b.float()).abs().max().item() for a, b in zip(plain, packed) if a.numel())
    assert worst < TOL, worst
    assert any(not torch.equal(a, b) for a, b in zip(plain, packed))  # the packed products did run
    lp_diff, mem_diff, *_ = decode_vs_blocks(model)
    assert lp_diff < TOL and mem_diff < TOL, (lp_diff, mem_diff)
    model.unpack_cpu()
    again = run_everything(model)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))


@torch.no_grad()
def test_packed_rows_do_not_depend_on_their_batch():
    """With packed products a row's results are bitwise the same alone and in a batch of 5 (the GEMM kernels
    sum each output in one order whatever the number of rows), so a session's scores do not depend on which
    other sessions the server batched it with."""
    model = make(scripted=True)
    assert model.pack_cpu()
    W = model.window
    g = torch.Generator().manual_seed(9)
    toks = torch.randint(0, V, (5, 2 * W + 3), generator=g)
    kv, state = garbage_pools(model, 12, seed=1)
    together = torch.arange(5)
    alone = torch.tensor([7])
    model.init_slots(torch.cat([together, alone]), kv, state)
    a = model.score_slots(toks[:, :2 * W], torch.zeros(5, dtype=torch.long), together, kv, state, 2)
    b = model.score_slots(toks[2:3, :2 * W], torch.zeros(1, dtype=torch.long), alone, kv, state, 2)
    for x, y in zip(a, b):
        assert torch.equal(x[2:3], y)
    for p in range(2 * W, 2 * W + 3):
        x = step(model, kv, state, together, torch.full((5,), p), toks[:, p])
        y = step(model, kv, state, alone, torch.tensor([p]), toks[2:3, p])
        assert torch.equal(x[2:3], y)
    assert all(torch.equal(t[2], t[7]) for t in kv) and torch.equal(state[2], state[7])


@pytest.mark.parametrize("packed", [False, "xnnpack", "transposed"], ids=["aten", "packed", "transposed"])
@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@torch.no_grad()
def test_range_methods_are_the_slot_methods_read_in_place(gate, packed):
    """decode_range / finish_range (the slots first, first+1, ... read as a slice of the pools, no gather)
    give bitwise the results and pools of decode_slots / finish_slots over a block and a half (so state
    updates happen), and touch no other row."""
    model = make(gate=gate, scripted=True)
    if packed:
        assert pack(model, packed)
    W = model.window
    g = torch.Generator().manual_seed(11)
    toks = torch.randint(0, V, (4, 2 * W), generator=g)
    kv, state = garbage_pools(model, 12, seed=2)
    slots = torch.arange(3, 7)
    model.init_slots(slots, kv, state)
    kv2, state2 = clone_pools(kv, state)
    kv0, state0 = clone_pools(kv, state)
    for p in range(W + W // 2):
        pos = torch.full((4,), p)
        a = model.decode_slots(toks[:, p], pos, slots, kv, state)
        b = model.decode_range(toks[:, p], pos, 3, kv2, state2)
        assert torch.equal(a, b), p
        if p % W == W - 1:
            model.finish_slots(slots, kv, state)
            model.finish_range(3, 4, kv2, state2)
        assert all(torch.equal(x, y) for x, y in zip(kv, kv2)) and torch.equal(state, state2), p
    assert_untouched(kv2, state2, kv0, state0, used=range(3, 7))
    # A row's state update alone, in place, equals its update among the others.
    model.finish_range(5, 1, kv2, state2)
    model.finish_slots(torch.tensor([5]), kv, state)
    assert torch.equal(state, state2)


# ---- mixed calls (mixed_slots) == a decode call and a span call -------------------------------------------------

@pytest.mark.parametrize("packed", [False, "xnnpack", "transposed"], ids=["aten", "packed", "transposed"])
@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("gate,recurrent", [("fixed", (1,)), ("lstm", (1,)), ("fixed", (0, 2)), ("fixed", ())])
@torch.no_grad()
def test_mixed_slots_equal_a_decode_call_and_a_span_call(gate, recurrent, scripted, packed):
    """Two decode rows (in turn gathered slots [5, 2] and the consecutive slots [3, 4] read in place) and two
    span rows (slots [7, 0], random lengths to the end of their block, padded together) over 4 blocks: one
    mixed_slots call per round gives the decode log-probs and every span output of decode_slots + span_slots
    on a copy of the pools, and the same pools (state updates included, by finish_slots after each round);
    rows outside the calls are untouched. With packed products (a row's sums do not depend on the row count)
    it is bitwise the same."""
    if packed and not scripted:
        pytest.skip("packing is for the scripted module (the server's)")
    W = 8
    model = make(gate=gate, recurrent=recurrent, window=W, scripted=scripted)
    if packed:
        assert pack(model, packed)
    bitwise = packed == "xnnpack"  # XNNPACK's sums do not depend on the row count; OpenBLAS's may
    g = torch.Generator().manual_seed(33)
    T = 4 * W
    mix = garbage_pools(model, 9, seed=4)
    sep = clone_pools(*mix)
    mix0 = clone_pools(*mix)
    span_slots = torch.tensor([7, 0])
    gathered, in_place = torch.tensor([5, 2]), torch.tensor([3, 4])
    used = [7, 0, 5, 2, 3, 4]
    for pools in (mix, sep):
        model.init_slots(torch.tensor(used), *pools)
    toks = torch.randint(0, V, (9, T + W), generator=g)
    pos = {s: 0 for s in used}
    worst, rounds = 0.0, 0
    while min(pos[s] for s in (7, 0)) < T - W:
        for dec, first in ((gathered, -1), (in_place, 3)):
            d_pos = torch.tensor([pos[int(s)] for s in dec])
            d_tok = torch.stack([toks[int(s), pos[int(s)]] for s in dec])
            lens = [int(torch.randint(1, W - pos[int(s)] % W + 1, (1,), generator=g)) for s in span_slots]
            n = max(lens)
            s_tok = torch.zeros(2, n, dtype=torch.long)
            for i, s in enumerate(span_slots.tolist()):
                s_tok[i, :lens[i]] = toks[s, pos[s]:pos[s] + lens[i]]
            s_pos = torch.tensor([pos[int(s)] for s in span_slots])
            got = model.mixed_slots(d_tok, d_pos, dec, first, s_tok, torch.tensor(lens), s_pos, span_slots, *mix, 3,
                                    True)
            want = [model.decode_slots(d_tok, d_pos, dec, *sep)]
            want += list(model.span_slots(s_tok, torch.tensor(lens), s_pos, span_slots, *sep, 3, True))
            for k, (x, y) in enumerate(zip(got, want)):
                assert x.shape == y.shape, k
                if bitwise:
                    assert torch.equal(x, y), k
                if x.is_floating_point() and x.numel():
                    worst = max(worst, (x - y).abs().max().item())
            done = [int(s) for s in dec if pos[int(s)] % W == W - 1]
            done += [s for i, s in enumerate(span_slots.tolist()) if (pos[s] + lens[i]) % W == 0]
            for s in dec.tolist():
                pos[s] += 1
            for i, s in enumerate(span_slots.tolist()):
                pos[s] += lens[i]
            if done:
                for pools in (mix, sep):
                    model.finish_slots(torch.tensor(done), *pools)
            rounds += 1
    assert rounds >= 8
    assert worst < TOL, worst
    assert max_pool_diff(mix, sep, torch.tensor(used)) < TOL
    if bitwise:
        assert all(torch.equal(a, b) for a, b in zip(mix[0], sep[0])) and torch.equal(mix[1], sep[1])
    assert_untouched(*mix, *mix0, used)
