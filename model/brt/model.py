"""The Block-Recurrent Transformer (Hutchins et al., 2022) in PyTorch, TorchScript-compatible.

Two interfaces share one set of weights and one math (the same `attend`, `l2norm`, `RMSNorm`):

Export contract v2, "slot pools" (what the server uses; model/README.md, "Export contract"). Every
session's memory lives in preallocated pools; the methods take slot indices and read/write pool rows in
place (index_select / index_copy_), never touching rows outside `slots`:

  kv[l]: (P, 2, H, C_l, dh)  a ring per layer: keys [.,0] and values [.,1]; the token at position p is at
         ring index p % C_l. C_l = W for ordinary layers, 2W for recurrent layers (the state update reads
         the previous and the current block). A fresh document is all zeros (not masked, as in the
         reference code: first-block tokens see zero keys/values).
  state: (P, R, 3, S, D)     per recurrent layer r: [0] the state vectors S_b, [1] their keys K_s and
         [2] their values V_s (heads flattened into D).

  init_slots, copy_slots, score_slots (whole blocks), decode_slots (one token per row), finish_slots
  (the state update of rows whose block just completed).

Version 1 (training, brt/reference.py, old tests): memory as two per-batch tensors

  kv:    (B, L, 2, H, 2W, dh)  per layer, keys (index 0) and values (index 1) of 2W token slots.
         Slots [0, W) hold the previous block, slots [W, 2W) the current block. At a block boundary
         the current half is zeros. At a document start everything is zeros.
  state: (B, R, 3, S, D)       as above.

  forward_blocks / score_blocks (whole blocks), decode_step (one token per row), initial_state.

Token i of a block attends to exactly the W tokens before it (relative offsets -W..-1), never itself.
Block-parallel processing and token-by-token decoding compute the same function; tests check they
agree to fp32 rounding.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import BRTConfig



def l2norm(u: Tensor) -> Tensor:
    return u * torch.rsqrt(u.pow(2).sum(-1, keepdim=True) + 1e-6)


def relative_bucket(n: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5 causal bucket of a distance n = query position - key position (n >= 0; negatives -> 0)."""
    exact = num_buckets // 2
    n = n.clamp(min=0)
    nf = n.clamp(min=1).to(torch.float32)
    large = exact + (torch.log(nf / exact) / math.log(max_distance / exact) * (num_buckets - exact)).floor().to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return torch.where(n < exact, n, large)


def linear(x: Tensor, w: Tensor, groups: int = 1) -> Tensor:
    """x @ w.T (no bias). A single row (a one-session decode step) goes through a matrix-vector product:
    on CPU a one-row matrix product first packs the whole weight matrix and ran 4-5x slower (a 256x1024
    weight: 81 us vs 16 us, 1 thread). Same math, summed in another order (fp32 rounding).
    groups > 1: x's rows are that many equal groups, each its own product (grouped_product)."""
    if groups > 1:
        return grouped_product(x, w.t(), groups)
    if x.numel() == x.shape[-1]:
        size = list(x.shape)
        size[-1] = w.shape[0]
        return torch.mv(w, x.reshape(-1)).view(size)
    return F.linear(x, w)


def fused_weight(group: List[Tensor]) -> Tensor:
    """The weights of products that share an input, concatenated by output rows (D_out_total, D_in), detached."""
    return group[0].detach() if len(group) == 1 else torch.cat(group, dim=0).detach()


def fused_bias(bias: List[Tensor], like: Tensor) -> Tensor:
    """Their biases concatenated (detached), or an empty tensor like `like` when they have none."""
    if len(bias) > 0:
        return torch.cat(bias, dim=0).detach()
    return torch.zeros(0, dtype=like.dtype, device=like.device)


def prepack(group: List[Tensor], bias: List[Tensor]) -> torch.classes.xnnpack.LinearOpContext:
    """XNNPACK's prepacked form of x @ cat(group).T (+ cat(bias)): the weights packed once for its GEMM
    kernels, so a call does not repack them (OpenBLAS packs the whole weight matrix on every call, which
    was 40% of a 16-row decode step's matrix time here) and runs its AVX-512 kernels (~1.6x OpenBLAS's
    Haswell kernels on this project's CPU at 16-128 rows)."""
    w = fused_weight(group)
    fb = fused_bias(bias, w)
    b: Optional[Tensor] = None
    if fb.numel() > 0:
        b = fb
    return torch.ops.prepacked.linear_clamp_prepack(w.contiguous(), b)


def grouped_product(x: Tensor, wt: Tensor, groups: int) -> Tensor:
    """x (..., D_in) @ wt (D_in, D_out) with x's rows split into `groups` equal consecutive groups, one matrix
    product each (a batched product: one call). A product's rounding depends on its row count (OpenBLAS), so
    block-parallel scoring (score_slots) multiplies each block position's rows apart, as the block-by-block
    loop did: the same bits, in one call instead of N."""
    size = list(x.shape)
    size[-1] = wt.shape[1]
    x3 = x.reshape(groups, -1, x.shape[-1])
    return torch.bmm(x3, wt.unsqueeze(0).expand(groups, wt.shape[0], wt.shape[1])).view(size)


def transposed_product(x: Tensor, wt: Tensor, bias: Tensor, groups: int = 1) -> Tensor:
    """x (..., D_in) @ wt (D_in, D_out, contiguous) (+ bias when it is not empty): OpenBLAS reads wt without
    repacking it, and the result is bitwise what F.linear(x, wt.t()) gives (one thread, this project's
    OpenBLAS: benchmarks/bench_weight_layout.py), at 0.66-0.82x its time. groups > 1: grouped_product."""
    size = list(x.shape)
    size[-1] = wt.shape[1]
    if groups > 1:
        y = grouped_product(x, wt, groups)
        return y + bias if bias.numel() > 0 else y
    if x.numel() == x.shape[-1] and bias.numel() == 0:
        # One row: a matrix-vector product, as linear() does (a one-row product is slower).
        return torch.mv(wt.t(), x.reshape(-1)).view(size)
    x2 = x.reshape(-1, x.shape[-1])
    if bias.numel() > 0:
        return torch.addmm(bias, x2, wt).view(size)
    return torch.mm(x2, wt).view(size)


def take_rows(pool: Tensor, slots: Tensor) -> Tensor:
    """pool[slots] for a contiguous pool, through a 2-D view (index_select on dim 0 of a 5-D CPU tensor is
    tens of times slower than on its (P, row) view in torch 1.13)."""
    size = list(pool.shape)
    rows = pool.view(size[0], -1).index_select(0, slots)
    size[0] = slots.shape[0]
    return rows.view(size)


def put_rows(pool: Tensor, slots: Tensor, rows: Tensor) -> None:
    """pool[slots] = rows, in place, through the same 2-D view."""
    pool.view(pool.shape[0], -1).index_copy_(0, slots, rows.reshape(slots.shape[0], -1))


def rows_of(pool: Tensor, slots: Tensor, first: int) -> Tensor:
    """The rows `slots` of a pool: with first >= 0 the slots are first, first+1, ... (the caller knows it),
    and the rows are a view of the pool (no copy); otherwise a gathered copy (take_rows). A view aliases the
    pool: read it before writing those rows."""
    if first >= 0:
        return pool.narrow(0, first, slots.shape[0])
    return take_rows(pool, slots)


def set_rows(pool: Tensor, slots: Tensor, first: int, rows: Tensor) -> None:
    """pool[slots] = rows, in place (a slice copy when the slots are first, first+1, ...)."""
    if first >= 0:
        pool.narrow(0, first, slots.shape[0]).copy_(rows)
    else:
        put_rows(pool, slots, rows)


def rows_part(t: Tensor, first: int, b: int, n: int) -> Tensor:
    """Rows first..first+b*n-1 of t (1,M,F) as (b,n,F)."""
    return t[0, first:first + b * n].reshape(b, n, t.shape[2])


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor, alpha: Tensor,
           use_bias: bool, use_mask: bool) -> Tensor:
    """q (B,H,Tq,dh), k/v (B,H,Tk,dh), bias broadcastable to (B,H,Tq,Tk), mask bool likewise, alpha (H,).

    One query per row (Tq == 1, token decoding) multiplies and sums instead of a batched matrix product:
    on CPU, bmm of (1, dh) matrices loops over B*H small products and is several times slower. Same math,
    summed in another order (fp32 rounding)."""
    one = q.shape[2] == 1
    if one:
        logits = (q * k).sum(-1).unsqueeze(2)
    else:
        logits = torch.matmul(q, k.transpose(-1, -2))
    if use_bias:
        logits = logits + bias
    logits = logits * alpha.view(1, -1, 1, 1)
    if use_mask:
        logits = logits.masked_fill(torch.logical_not(mask), -1e9)
    p = torch.softmax(logits.float(), dim=-1).to(v.dtype)
    if one:
        return (p.transpose(-1, -2) * v).sum(-2, keepdim=True)
    return torch.matmul(p, v)


class FeedForward(nn.Module):
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(d, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.grouped(x, 1)

    def grouped(self, x: Tensor, groups: int) -> Tensor:
        """forward, with each of `groups` equal row groups multiplied apart (linear)."""
        return self.drop(linear(self.drop(F.relu(linear(x, self.w1.weight, groups))), self.w2.weight, groups))


class BRTLayer(nn.Module):
    """One pre-norm sliding-window layer; recurrent when `rec_index >= 0`.

    Both kinds share one signature so a TorchScript ModuleList loop can call them alike.
    """

    pack_src: List[List[Tensor]]
    pack_bias: List[List[Tensor]]
    packs: List[torch.classes.xnnpack.LinearOpContext]
    tpacks: List[Tensor]
    tbias: List[Tensor]

    def __init__(self, cfg: BRTConfig, rec_index: int):
        super().__init__()
        d, h = cfg.d_model, cfg.n_heads
        self.d = d
        self.h = h
        self.dh = cfg.head_dim
        self.W = cfg.window
        self.S = cfg.n_state
        self.rec_index = rec_index
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.lstm_gate = cfg.gate == "lstm"
        self.norm1 = RMSNorm(d)
        self.norm2 = RMSNorm(d)
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.alpha = nn.Parameter(torch.full((h,), cfg.attn_scale_init))
        self.rel_bias = nn.Parameter(torch.zeros(h, cfg.num_buckets))
        self.ffn = FeedForward(d, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        recurrent = rec_index >= 0
        # Vertical direction: tokens also read the state (query Q2_x); Wo maps both halves.
        self.wo = nn.Linear(2 * d if recurrent else d, d, bias=False)
        # Block-mode relative distances: query i (concatenated position W+i) to key slot j.
        W = cfg.window
        qpos = torch.arange(W).view(W, 1) + W
        kpos = torch.arange(2 * W).view(1, 2 * W)
        dist = qpos - kpos
        self.register_buffer("block_bucket", relative_bucket(dist, cfg.num_buckets, cfg.max_distance), persistent=False)
        self.register_buffer("block_mask", (dist >= 1) & (dist <= W), persistent=False)
        # Slot pools (contract v2): a ring of C slots per layer; the token at position p sits at p % C.
        # For a query at position p, ring slot j holds the position p - d with d in 1..C (the newest one
        # written before p): d = (p % C - j - 1) mod C + 1. Only d <= W is in the window (always true for
        # ordinary layers, where C = W). Tables indexed [p % C, j], so no log() runs per step.
        C = 2 * W if recurrent else W
        self.C = C
        ring = torch.arange(C)
        ddist = (ring.view(C, 1) - ring.view(1, C) - 1) % C + 1
        self.register_buffer("dec_bucket", relative_bucket(ddist, cfg.num_buckets, cfg.max_distance), persistent=False)
        self.register_buffer("dec_mask", ddist <= W, persistent=False)
        # Spans (span_slots): raw ring distances, and the bucket of every distance a span can see
        # (a ring slot's distance plus the query's offset in the span: at most C + W - 1).
        self.register_buffer("dec_dist", ddist, persistent=False)
        self.register_buffer("dist_bucket", relative_bucket(torch.arange(C + W), cfg.num_buckets, cfg.max_distance),
                             persistent=False)
        self.register_buffer("ring_all", ring, persistent=False)
        # Row of (kv, head) inside one slot of the pool viewed as (P*2*H*C, dh): (slot*2H + j)*C + ring.
        self.register_buffer("ring_rows", torch.arange(2 * h), persistent=False)
        if recurrent:
            s = cfg.n_state
            self.wq2 = nn.Linear(d, d, bias=False)
            self.alpha2 = nn.Parameter(torch.full((h,), cfg.attn_scale_init))
            self.state_norm = RMSNorm(d)
            self.state_ids = nn.Parameter(torch.randn(s, d))
            self.s_wq = nn.Linear(d, d, bias=False)
            self.s_wq2 = nn.Linear(d, d, bias=False)
            self.s_wk = nn.Linear(d, d, bias=False)
            self.s_wv = nn.Linear(d, d, bias=False)
            self.s_alpha = nn.Parameter(torch.full((h,), cfg.attn_scale_init))
            self.s_alpha2 = nn.Parameter(torch.full((h,), cfg.attn_scale_init))
            self.s_wo = nn.Linear(2 * d, d, bias=False)
            self.gate_bias = nn.Parameter(torch.randn(d) * 0.1)
            self.initial = nn.Parameter(torch.randn(s, d) * 0.1)
            if self.lstm_gate:
                self.gate_f = nn.Linear(d, d, bias=True)
                self.gate_i = nn.Linear(d, d, bias=True)
            else:
                self.gate_f = nn.Identity()
                self.gate_i = nn.Identity()
        else:
            # Placeholders keep attribute types uniform for TorchScript; never used.
            self.wq2 = nn.Identity()
            self.alpha2 = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.state_norm = nn.Identity()
            self.state_ids = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.s_wq = nn.Identity()
            self.s_wq2 = nn.Identity()
            self.s_wk = nn.Identity()
            self.s_wv = nn.Identity()
            self.s_alpha = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.s_alpha2 = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.s_wo = nn.Identity()
            self.gate_bias = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.initial = nn.Parameter(torch.zeros(0), requires_grad=False)
            self.gate_f = nn.Identity()
            self.gate_i = nn.Identity()
        # CPU inference (pack(), via the model's pack_cpu): the layer's matrix products through XNNPACK with
        # prepacked weights; products that share an input are fused into one. Pack i is made from the
        # weights pack_src[i] (concatenated by output rows) and biases pack_bias[i]: 0 [q, k, v(, q2)],
        # 1 the output projection, 2 and 3 the FFN's; recurrent layers also 4 [state q, state q2],
        # 5 the state's output projection, 6 [state k, state v], and with the LSTM gate 7 [gate f, gate i].
        # The lists hold the parameters themselves (no copies; an export stores each tensor once).
        src: List[List[Tensor]] = [[self.wq.weight, self.wk.weight, self.wv.weight], [self.wo.weight],
                                   [self.ffn.w1.weight], [self.ffn.w2.weight]]
        bias: List[List[Tensor]] = [[], [], [], []]
        if recurrent:
            src[0].append(self.wq2.weight)
            src += [[self.s_wq.weight, self.s_wq2.weight], [self.s_wo.weight], [self.s_wk.weight, self.s_wv.weight]]
            bias += [[], [], []]
            if self.lstm_gate:
                src.append([self.gate_f.weight, self.gate_i.weight])
                bias.append([self.gate_f.bias, self.gate_i.bias])
        self.pack_src = src
        self.pack_bias = bias
        self.packs = []
        # Or (pack_transposed, via the model's pack_cpu_transposed): the same fused products through
        # OpenBLAS with each group's weights concatenated and transposed once, (D_in, D_out) contiguous,
        # and its bias (empty when none): x @ tpacks[i] is bitwise F.linear's product, without the
        # per-call repacking of the weights that F.linear's layout costs OpenBLAS.
        self.tpacks = []
        self.tbias = []

    # ---- helpers -------------------------------------------------------------------------------
    def pack(self) -> None:
        packs: List[torch.classes.xnnpack.LinearOpContext] = []
        for i in range(len(self.pack_src)):
            packs.append(prepack(self.pack_src[i], self.pack_bias[i]))
        self.packs = packs

    def pack_transposed(self) -> None:
        tpacks: List[Tensor] = []
        tbias: List[Tensor] = []
        for i in range(len(self.pack_src)):
            w = fused_weight(self.pack_src[i])
            tpacks.append(w.t().contiguous())
            tbias.append(fused_bias(self.pack_bias[i], w))
        self.tpacks = tpacks
        self.tbias = tbias

    def unpack(self) -> None:
        none: List[torch.classes.xnnpack.LinearOpContext] = []
        self.packs = none
        empty: List[Tensor] = []
        self.tpacks = empty
        self.tbias = empty

    def is_packed(self) -> bool:
        return len(self.packs) > 0 or len(self.tpacks) > 0

    def packed(self, x: Tensor, i: int, groups: int = 1) -> Tensor:
        """x @ pack i (inference only: XNNPACK refuses inputs that require grad, such as the learned
        initial state's). groups > 1: each of that many equal row groups multiplied apart (grouped_product;
        XNNPACK's rows do not depend on their batch, so it takes them all at once)."""
        if len(self.tpacks) > 0:
            return transposed_product(x.detach(), self.tpacks[i], self.tbias[i], groups)
        return torch.ops.prepacked.linear_clamp_run(x.detach(), self.packs[i])

    def project(self, xn: Tensor, groups: int = 1) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The raw query, key and value projections of xn (..., D), and the state query q2 (empty for an
        ordinary layer): one fused product when packed. groups: as in packed()."""
        d = self.d
        if self.is_packed():
            y = self.packed(xn, 0, groups)
            q2 = y[..., 3 * d:] if self.rec_index >= 0 else y[..., 0:0]
            return y[..., :d], y[..., d:2 * d], y[..., 2 * d:3 * d], q2
        q2 = xn[..., 0:0]
        if self.rec_index >= 0:
            q2 = self.wq2(xn) if groups == 1 else self.grouped_q2(xn, groups)
        return (linear(xn, self.wq.weight, groups), linear(xn, self.wk.weight, groups),
                linear(xn, self.wv.weight, groups), q2)

    def grouped_q2(self, xn: Tensor, groups: int) -> Tensor:
        """The state queries' raw projection of xn, row groups apart (linear); empty for an ordinary layer,
        whose wq2 is an Identity (TorchScript settles hasattr when it compiles each layer)."""
        if hasattr(self.wq2, "weight"):
            return linear(xn, self.wq2.weight, groups)
        return xn[..., 0:0]

    def heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.dh).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        B, H, T, dh = x.shape
        return x.transpose(1, 2).reshape(B, T, H * dh)

    def state_kv(self, s: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys (l2-normalised per head) and values of state vectors s (B,S,D), heads flattened."""
        sh = self.state_norm(s) + self.state_ids
        if self.is_packed():
            y = self.packed(sh, 6)
            k_raw, vs = y[..., :self.d], y[..., self.d:]
        else:
            k_raw, vs = self.s_wk(sh), self.s_wv(sh)
        ks = self.merge(l2norm(self.heads(k_raw)))
        return ks, vs.contiguous()

    def initial_state(self, batch: int) -> Tensor:
        """(B, 3, S, D): the learned initial state with its keys and values."""
        s0 = self.initial.unsqueeze(0).expand(batch, -1, -1)
        ks, vs = self.state_kv(s0)
        return torch.stack([s0, ks, vs], dim=1)

    def update_state(self, st: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Horizontal direction: next state from st (B,3,S,D) and the 2W token keys/values (B,H,2W,dh)."""
        s, ks, vs = st[:, 0], st[:, 1], st[:, 2]
        sh = self.state_norm(s) + self.state_ids
        if self.is_packed():
            y = self.packed(sh, 4)
            qs_raw, q2s_raw = y[..., :self.d], y[..., self.d:]
        else:
            qs_raw, q2s_raw = self.s_wq(sh), self.s_wq2(sh)
        qs = l2norm(self.heads(qs_raw))
        q2s = l2norm(self.heads(q2s_raw))
        empty = torch.zeros(0, dtype=s.dtype, device=s.device)
        b1 = attend(qs, self.heads(ks), self.heads(vs), empty, empty.to(torch.bool), self.s_alpha, False, False)
        b2 = attend(q2s, keys, values, empty, empty.to(torch.bool), self.s_alpha2, False, False)
        both = torch.cat([self.merge(b1), self.merge(b2)], dim=-1)
        hh = self.packed(both, 5) if self.is_packed() else self.s_wo(both)
        if self.lstm_gate:
            if self.is_packed():
                g = self.packed(hh, 7)
                gf, gi = g[..., :self.d], g[..., self.d:]
            else:
                gf, gi = self.gate_f(hh), self.gate_i(hh)
            f = torch.sigmoid(gf + 1.0)
            i = torch.sigmoid(gi - 1.0)
            s_new = f * s + i * hh
        else:
            g = torch.sigmoid(self.gate_bias)
            s_new = g * s + (1.0 - g) * hh
        ks_new, vs_new = self.state_kv(s_new)
        return torch.stack([s_new, ks_new, vs_new], dim=1)

    def mix(self, x: Tensor, a1: Tensor, q2: Tensor, st: Tensor, state_scale: float, groups: int = 1) -> Tensor:
        """Residual attention output (plus the state read for a recurrent layer) and the FFN."""
        return self.out(x, self.state_read(a1, q2, st, state_scale), groups)

    def state_read(self, a1: Tensor, q2: Tensor, st: Tensor, state_scale: float) -> Tensor:
        """The attention output a1 (B,H,T,dh) with heads merged, and for a recurrent layer the read of the
        state st (B,3,S,D) by the state queries q2 beside it: (B,T,D) or (B,T,2D), the output projection's
        input."""
        if self.rec_index >= 0:
            empty = torch.zeros(0, dtype=a1.dtype, device=a1.device)
            a2 = attend(q2, self.heads(st[:, 1]), self.heads(st[:, 2]), empty, empty.to(torch.bool), self.alpha2, False, False)
            return torch.cat([self.merge(a1), self.merge(a2) * state_scale], dim=-1)
        return self.merge(a1)

    def out(self, x: Tensor, att: Tensor, groups: int = 1) -> Tensor:
        """x plus the output projection of att, then plus the FFN of that (row by row). groups: as in
        packed()."""
        if self.is_packed():
            y = x + self.packed(att, 1, groups)
            return y + self.packed(F.relu(self.packed(self.norm2(y), 2, groups)), 3, groups)
        y = x + self.drop(linear(att, self.wo.weight, groups))
        return y + self.ffn.grouped(self.norm2(y), groups)

    # ---- block-parallel ------------------------------------------------------------------------
    def block_core(self, x: Tensor, prev_k: Tensor, prev_v: Tensor, st: Tensor, state_scale: float
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B,W,D) one full block; prev_k/prev_v (B,H,W,dh) the previous block's keys/values in position
        order; st (B,3,S,D) or empty. Returns the output, this block's keys and values, the next state."""
        W = self.W
        xn = self.norm1(x)
        q_raw, k_raw, v_raw, q2_raw = self.project(xn)
        q = l2norm(self.heads(q_raw))
        k = l2norm(self.heads(k_raw))
        v = self.heads(v_raw)
        keys = torch.cat([prev_k, k], dim=2)
        values = torch.cat([prev_v, v], dim=2)
        bias = self.rel_bias[:, self.block_bucket].unsqueeze(0)  # (1,H,W,2W)
        a1 = attend(q, keys, values, bias, self.block_mask.view(1, 1, W, 2 * W), self.alpha, True, True)
        q2 = torch.zeros(0, dtype=x.dtype, device=x.device)
        if self.rec_index >= 0:
            q2 = l2norm(self.heads(q2_raw))
        y = self.mix(x, a1, q2, st, state_scale)
        new_st = st
        if self.rec_index >= 0:
            new_st = self.update_state(st, keys, values)
        return y, k, v, new_st

    def blocks_layer(self, x: Tensor, N: int, prev_k: Tensor, prev_v: Tensor, st: Tensor, state_scale: float
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """N whole blocks of B rows through this layer at once, bitwise what N block_core calls in order
        compute. x (N*B,W,D): block n of row b at n*B+b. Every matrix product runs once over all blocks as
        one batched call, each block position's B*W rows a product of their own (the row count a
        block_core call gives its products, so the same rounding); the token attention and every other
        operation run over all N*B blocks at once; only a recurrent layer's state chain (an update after
        each block, on S rows) runs block after block. Scoring one session's 16 blocks ran 1.45-1.6x
        faster than block by block (benchmarks/README.md). prev_k/prev_v (B,H,W,dh): the block before
        the first; st (B,3,S,D) or empty. Returns the output (N*B,W,D), the last block's keys and values,
        the keys and values of the block before it (prev_k/prev_v when N == 1), the next state."""
        W = self.W
        NB = x.shape[0]
        B = NB // N
        D = x.shape[2]
        H = self.h
        dh = self.dh
        q_raw, k_raw, v_raw, q2_raw = self.project(self.norm1(x), N)
        q = l2norm(self.heads(q_raw))
        k = l2norm(self.heads(k_raw))  # (N*B,H,W,dh)
        v = self.heads(v_raw)
        k5 = k.view(N, B, H, W, dh)
        v5 = v.view(N, B, H, W, dh)
        # Block n attends to block n-1 (the block before the first: prev_k/prev_v) and to itself.
        k_prev = torch.cat([prev_k.unsqueeze(0), k5[:N - 1]], dim=0).view(NB, H, W, dh)
        v_prev = torch.cat([prev_v.unsqueeze(0), v5[:N - 1]], dim=0).view(NB, H, W, dh)
        keys = torch.cat([k_prev, k], dim=2)
        values = torch.cat([v_prev, v], dim=2)
        bias = self.rel_bias[:, self.block_bucket].unsqueeze(0)  # (1,H,W,2W)
        a1 = attend(q, keys, values, bias, self.block_mask.view(1, 1, W, 2 * W), self.alpha, True, True)
        q2 = torch.zeros(0, dtype=x.dtype, device=x.device)
        st_all = st
        new_st = st
        if self.rec_index >= 0:
            q2 = l2norm(self.heads(q2_raw))
            # The state each block reads is the one before its own update: st, then one update per block.
            keys5 = keys.view(N, B, H, 2 * W, dh)
            values5 = values.view(N, B, H, 2 * W, dh)
            before: List[Tensor] = []
            for n in range(N):
                before.append(new_st)
                new_st = self.update_state(new_st, keys5[n], values5[n])
            st_all = torch.stack(before, dim=0).view(NB, 3, self.S, D)
        y = self.mix(x, a1, q2, st_all, state_scale, N)
        k_before = k5[N - 2] if N >= 2 else prev_k
        v_before = v5[N - 2] if N >= 2 else prev_v
        return y, k5[N - 1], v5[N - 1], k_before, v_before, new_st

    def block(self, x: Tensor, kv: Tensor, st: Tensor, state_scale: float) -> Tuple[Tensor, Tensor, Tensor]:
        """x (B,W,D) one full block; kv (B,2,H,2W,dh) at a block boundary; st (B,3,S,D) or empty.

        Returns the output, the cache for the next block boundary and the next state.
        """
        W = self.W
        y, k, v, new_st = self.block_core(x, kv[:, 0, :, :W], kv[:, 1, :, :W], st, state_scale)
        new_kv = torch.stack([torch.cat([k, torch.zeros_like(k)], dim=2),
                              torch.cat([v, torch.zeros_like(v)], dim=2)], dim=1)
        return y, new_kv, new_st

    # ---- token-by-token ------------------------------------------------------------------------
    def step(self, x: Tensor, kv: Tensor, st: Tensor, t: Tensor, state_scale: float) -> Tuple[Tensor, Tensor]:
        """x (B,1,D) one token per row at block offset t (B,); writes its key/value into slot W+t.

        Returns the output and the updated cache; the state update happens in `finish_block`.
        """
        W = self.W
        B = x.shape[0]
        xn = self.norm1(x)
        q = l2norm(self.heads(self.wq(xn)))
        k = l2norm(self.heads(self.wk(xn)))
        v = self.heads(self.wv(xn))
        slots = torch.arange(2 * W, device=x.device).view(1, 2 * W)
        tpos = t.view(B, 1) + W
        write = (slots == tpos).view(B, 1, 2 * W, 1)
        keys = torch.where(write, k, kv[:, 0])
        values = torch.where(write, v, kv[:, 1])
        dist = tpos - slots  # (B, 2W)
        bucket = relative_bucket(dist, self.num_buckets, self.max_distance)
        bias = self.rel_bias[:, bucket].permute(1, 0, 2).unsqueeze(2)  # (B,H,1,2W)
        mask = ((dist >= 1) & (dist <= W)).view(B, 1, 1, 2 * W)
        a1 = attend(q, keys, values, bias, mask, self.alpha, True, True)
        q2 = torch.zeros(0, dtype=x.dtype, device=x.device)
        if self.rec_index >= 0:
            q2 = l2norm(self.heads(self.wq2(xn)))
        y = self.mix(x, a1, q2, st, state_scale)
        return y, torch.stack([keys, values], dim=1)

    def finish_block(self, kv: Tensor, st: Tensor) -> Tensor:
        """Next state once the current block (slots [W,2W)) is complete."""
        if self.rec_index < 0:
            return st
        return self.update_state(st, kv[:, 0], kv[:, 1])

    # ---- slot pools (contract v2) ----------------------------------------------------------------
    def ring_index(self, slots: Tensor, ring: Tensor) -> Tensor:
        """Rows of the pool viewed as (P*2*H*C, dh) for slots (B,) and ring indices (B,n): (B, 2H, n)."""
        B = slots.shape[0]
        base = (slots.view(B, 1) * (2 * self.h) + self.ring_rows.view(1, 2 * self.h)) * self.C
        return base.unsqueeze(2) + ring.unsqueeze(1)

    def read_span(self, pool: Tensor, slots: Tensor, first: Tensor, n: int) -> Tensor:
        """Keys/values of positions first..first+n-1 (n <= C) of each row, in position order: (B,2,H,n,dh)."""
        B = slots.shape[0]
        if n == self.C and self.C == self.W:
            # Ordinary layer, whole block from a block boundary: the ring is already in position order.
            return take_rows(pool, slots)
        ring = (first.view(B, 1) + self.ring_all[:n].view(1, n)) % self.C
        idx = self.ring_index(slots, ring).reshape(-1)
        return pool.view(-1, self.dh).index_select(0, idx).view(B, 2, self.h, n, self.dh)

    def write_span(self, pool: Tensor, slots: Tensor, first: Tensor, k: Tensor, v: Tensor) -> None:
        """Writes k/v (B,H,n,dh) of positions first..first+n-1 (n <= C) into their ring slots, in place."""
        B = slots.shape[0]
        n = k.shape[2]
        src = torch.stack([k, v], dim=1)  # (B,2,H,n,dh): row order (b, kv, head, n) = ring_index order
        if n == self.C and self.C == self.W:
            put_rows(pool, slots, src)
        else:
            ring = (first.view(B, 1) + self.ring_all[:n].view(1, n)) % self.C
            idx = self.ring_index(slots, ring).reshape(-1)
            pool.view(-1, self.dh).index_copy_(0, idx, src.reshape(-1, self.dh))

    def project_and_read(self, x: Tensor, pool: Tensor, slots: Tensor, first: int = -1
                         ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The input's state queries (empty for an ordinary layer), queries, keys and values (B,H,n,dh), and
        the rows' ring keys and values (B,H,C,dh): rows 2*slot and 2*slot+1 of the pool viewed as
        (P*2, H*C*dh), each contiguous. The ring rows are a copy, so a later write of the pool does not alias
        them; with first >= 0 (slots first, first+1, ...) they are views of the pool instead, read before the
        caller writes the ring."""
        q_raw, k_raw, v_raw, q2_raw = self.project(self.norm1(x))
        q2, q, k, v = self.split_heads(q_raw, k_raw, v_raw, q2_raw)
        keys, values = self.read_ring(pool, slots, first)
        return (q2, q, k, v, keys, values)

    def split_heads(self, q_raw: Tensor, k_raw: Tensor, v_raw: Tensor, q2_raw: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Raw projections (B,T,D) into heads (B,H,T,dh), queries and keys l2-normalised."""
        q = l2norm(self.heads(q_raw))
        k = l2norm(self.heads(k_raw))
        v = self.heads(v_raw)
        q2 = l2norm(self.heads(q2_raw)) if self.rec_index >= 0 else q2_raw
        return q2, q, k, v

    def read_ring(self, pool: Tensor, slots: Tensor, first: int) -> Tuple[Tensor, Tensor]:
        """The ring keys and values (B,H,C,dh) of `slots`: a copy, or with first >= 0 (the slots are first,
        first+1, ...) views of the pool, to be read before the caller writes those rows."""
        B = slots.shape[0]
        C = self.C
        if first >= 0:
            rows = pool.narrow(0, first, B)
            return rows[:, 0], rows[:, 1]
        kv_rows = pool.view(-1, self.h * C * self.dh).index_select(0, torch.cat([slots * 2, slots * 2 + 1]))
        return kv_rows[:B].view(B, self.h, C, self.dh), kv_rows[B:].view(B, self.h, C, self.dh)

    def step_slots(self, x: Tensor, pool: Tensor, slots: Tensor, pos: Tensor, st: Tensor, state_scale: float,
                   first: int = -1) -> Tensor:
        """x (B,1,D) one token per row at positions pos (B,); reads the ring rows of `slots`, attends to the
        positions pos-W..pos-1, then writes the token's key/value at ring index pos % C. Returns the output.
        first >= 0: the slots are first, first+1, ... and the ring is read in place (no copy)."""
        B = x.shape[0]
        C = self.C
        q2, q, k, v, keys, values = self.project_and_read(x, pool, slots, first)
        a1 = self.step_attention(q, keys, values, pos)
        y = self.mix(x, a1, q2, st, state_scale)
        self.write_span(pool, slots, pos, k, v)
        return y

    def step_attention(self, q: Tensor, keys: Tensor, values: Tensor, pos: Tensor) -> Tensor:
        """One query per row (B,H,1,dh) at positions pos (B,) against its ring (B,H,C,dh): (B,H,1,dh)."""
        B = q.shape[0]
        C = self.C
        pp = pos % C
        bucket = self.dec_bucket.index_select(0, pp)  # (B,C)
        bias = self.rel_bias[:, bucket].permute(1, 0, 2).unsqueeze(2)  # (B,H,1,C)
        if self.rec_index >= 0:
            mask = self.dec_mask.index_select(0, pp).view(B, 1, 1, C)
            return attend(q, keys, values, bias, mask, self.alpha, True, True)
        # C == W: every ring slot is in the window.
        empty = torch.zeros(0, dtype=q.dtype, device=q.device)
        return attend(q, keys, values, bias, empty.to(torch.bool), self.alpha, True, False)


    def span_slots_layer(self, x: Tensor, pool: Tensor, slots: Tensor, pos: Tensor, valid: Tensor, st: Tensor,
                         state_scale: float) -> Tensor:
        """x (B,n,D): n tokens per row at positions pos..pos+n-1 inside one block; valid (B,n) marks each row's
        real tokens (a prefix; the rest is padding). Like n step_slots calls at once: token i attends to the
        positions pos+i-W..pos+i-1, from the ring and from the span itself. Writes the valid tokens'
        keys/values at their ring indices. Returns the output (B,n,D)."""
        q2, q, k, v, ring_k, ring_v = self.project_and_read(x, pool, slots)
        a1 = self.span_attention(q, k, v, ring_k, ring_v, pos)
        y = self.mix(x, a1, q2, st, state_scale)
        self.write_valid(pool, slots, pos, valid, k, v)
        return y

    def span_attention(self, q: Tensor, k: Tensor, v: Tensor, ring_k: Tensor, ring_v: Tensor, pos: Tensor
                       ) -> Tensor:
        """n queries per row (B,H,n,dh) at positions pos..pos+n-1 against the ring and the span's own
        keys/values (k, v): (B,H,n,dh)."""
        B = q.shape[0]
        n = q.shape[2]
        C = self.C
        keys = torch.cat([ring_k, k], dim=2)  # (B,H,C+n,dh)
        values = torch.cat([ring_v, v], dim=2)
        offs = self.ring_all[:n]  # 0..n-1 (n <= W <= C)
        ring_d = self.dec_dist.index_select(0, pos % C)  # (B,C): distance of each ring slot from pos
        d_ring = ring_d.view(B, 1, C) + offs.view(1, n, 1)  # (B,n,C)
        d_new = (offs.view(n, 1) - offs.view(1, n)).view(1, n, n).expand(B, n, n)
        dist = torch.cat([d_ring, d_new], dim=2)  # (B,n,C+n)
        mask = ((dist >= 1) & (dist <= self.W)).view(B, 1, n, C + n)
        bucket = self.dist_bucket.index_select(0, dist.clamp(0, C + self.W - 1).reshape(-1)).view(B, n, C + n)
        bias = self.rel_bias[:, bucket].permute(1, 0, 2, 3)  # (B,H,n,C+n)
        return attend(q, keys, values, bias, mask, self.alpha, True, True)

    def write_valid(self, pool: Tensor, slots: Tensor, pos: Tensor, valid: Tensor, k: Tensor, v: Tensor) -> None:
        """The valid tokens' keys/values (B,H,n,dh) at positions pos.. into their ring slots, in place."""
        B = k.shape[0]
        n = k.shape[2]
        C = self.C
        offs = self.ring_all[:n]
        ring = (pos.view(B, 1) + offs.view(1, n)) % C
        idx = self.ring_index(slots, ring)  # (B,2H,n)
        keep = valid.view(B, 1, n).expand(B, 2 * self.h, n)
        src = torch.stack([k, v], dim=1).reshape(B, 2 * self.h, n, self.dh)
        pool.view(-1, self.dh).index_copy_(0, idx[keep], src[keep])

    def mixed_layer(self, xd: Tensor, xs: Tensor, pool: Tensor, d_slots: Tensor, d_pos: Tensor, d_st: Tensor,
                    d_first: int, s_slots: Tensor, s_pos: Tensor, s_valid: Tensor, s_st: Tensor,
                    state_scale: float) -> Tuple[Tensor, Tensor]:
        """step_slots of xd (B1,1,D) and span_slots_layer of xs (B2,n,D) in one pass: their rows share
        every matrix product (one read of the weights for both), each keeps its own attention. The slots of
        the two sets are distinct. Returns both outputs."""
        B1 = xd.shape[0]
        B2 = xs.shape[0]
        n = xs.shape[1]
        D = self.d
        flat = torch.cat([xd.reshape(B1, D), xs.reshape(B2 * n, D)], dim=0).unsqueeze(0)  # (1,M,D)
        q_raw, k_raw, v_raw, q2_raw = self.project(self.norm1(flat))
        q2d, qd, kd, vd = self.split_heads(rows_part(q_raw, 0, B1, 1), rows_part(k_raw, 0, B1, 1),
                                           rows_part(v_raw, 0, B1, 1), rows_part(q2_raw, 0, B1, 1))
        q2s, qs, ks, vs = self.split_heads(rows_part(q_raw, B1, B2, n), rows_part(k_raw, B1, B2, n),
                                           rows_part(v_raw, B1, B2, n), rows_part(q2_raw, B1, B2, n))
        keys_d, values_d = self.read_ring(pool, d_slots, d_first)
        ring_k, ring_v = self.read_ring(pool, s_slots, -1)
        att_d = self.state_read(self.step_attention(qd, keys_d, values_d, d_pos), q2d, d_st, state_scale)
        att_s = self.state_read(self.span_attention(qs, ks, vs, ring_k, ring_v, s_pos), q2s, s_st, state_scale)
        A = att_d.shape[2]
        y = self.out(flat, torch.cat([att_d.reshape(B1, A), att_s.reshape(B2 * n, A)], dim=0).unsqueeze(0))
        # Both rings were read (views of the pool too) before anything is written.
        self.write_span(pool, d_slots, d_pos, kd, vd)
        self.write_valid(pool, s_slots, s_pos, s_valid, ks, vs)
        return rows_part(y, 0, B1, 1), rows_part(y, B1, B2, n)


class BlockRecurrentTransformer(nn.Module):
    packs: List[torch.classes.xnnpack.LinearOpContext]
    tpacks: List[Tensor]

    def __init__(self, cfg: BRTConfig):
        super().__init__()
        cfg.validate()
        self.config_json = cfg.to_json()
        self.vocab_size = cfg.vocab_size
        self.d_model = cfg.d_model
        self.n_layers = cfg.n_layers
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.window = cfg.window
        self.n_state = cfg.n_state
        self.n_recurrent = len(cfg.recurrent_layers)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=1.0)
        rec = list(cfg.recurrent_layers)
        self.layers = nn.ModuleList([BRTLayer(cfg, rec.index(i) if i in rec else -1) for i in range(cfg.n_layers)])
        # Contract v2: ring length per layer (W, or 2W for recurrent layers).
        self.kv_slots: List[int] = [2 * cfg.window if i in rec else cfg.window for i in range(cfg.n_layers)]
        self.final_norm = RMSNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.logit_scale = 1.0 / math.sqrt(cfg.d_model)
        # 1.0 normally; 0.0 removes every read of the state (tests use it to show the state's effect).
        self.state_scale = 1.0
        # score_slots runs its blocks layer by layer, in groups of max(1, score_group_rows // B) blocks for
        # B rows: a few rows gain from fewer, larger operations; many rows already have them, and then
        # gain from a block's activations staying in cache (block by block). The temporaries are a
        # group's, not a whole call's.
        self.score_group_rows = 4
        # pack_cpu(): the logits' product through XNNPACK (see BRTLayer.pack_src); pack_cpu_transposed():
        # the embedding transposed, (D, V) contiguous.
        self.packs = []
        self.tpacks = []
        for name, p in self.named_parameters():
            if p.dim() == 2 and name.endswith("weight") and "embed" not in name:
                nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[1]))

    # ---- memory --------------------------------------------------------------------------------
    @torch.jit.export
    def initial_state(self, batch: int) -> Tuple[Tensor, Tensor]:
        p = self.embed.weight
        kv = torch.zeros(batch, self.n_layers, 2, self.n_heads, 2 * self.window, self.head_dim,
                         dtype=p.dtype, device=p.device)
        states: List[Tensor] = []
        for layer in self.layers:
            if layer.rec_index >= 0:
                states.append(layer.initial_state(batch))
        if len(states) == 0:
            state = torch.zeros(batch, 0, 3, self.n_state, self.d_model, dtype=p.dtype, device=p.device)
        else:
            state = torch.stack(states, dim=1)
        return kv, state

    @torch.jit.export
    def pack_cpu(self) -> bool:
        """Prepacks every matrix product's weights for XNNPACK (CPU, float32 only; a no-op returning False
        otherwise). Afterwards every method computes the same function through the packed products, summed
        in another order (fp32 rounding); the module's parameters are unchanged and still used by nothing
        else. About doubles the weights' memory (the packed copies). unpack_cpu() undoes it."""
        p = self.embed.weight
        if p.device.type != "cpu" or p.dtype != torch.float32:
            return False
        for layer in self.layers:
            layer.pack()
        self.packs = [prepack([self.embed.weight], [])]
        return True

    @torch.jit.export
    def pack_cpu_transposed(self) -> bool:
        """Keeps every matrix product's weights also transposed, (D_in, D_out) contiguous, and runs the
        products as x @ those (CPU, float32 only; a no-op returning False otherwise): OpenBLAS then reads
        the weights as they are instead of repacking them on every call, and every result is bitwise what
        the unpacked model computes with the same products fused (one thread; benchmarks/README.md).
        Adds one copy of the weights' memory. unpack_cpu() undoes it."""
        p = self.embed.weight
        if p.device.type != "cpu" or p.dtype != torch.float32:
            return False
        for layer in self.layers:
            layer.pack_transposed()
        self.tpacks = [self.embed.weight.detach().t().contiguous()]
        return True

    @torch.jit.export
    def unpack_cpu(self) -> None:
        for layer in self.layers:
            layer.unpack()
        none: List[torch.classes.xnnpack.LinearOpContext] = []
        self.packs = none
        empty: List[Tensor] = []
        self.tpacks = empty

    def logits_of(self, h: Tensor, groups: int = 1) -> Tensor:
        """Logits of h (..., D); groups > 1: each of that many equal row groups multiplied apart (linear)."""
        if len(self.tpacks) > 0:
            empty = torch.zeros(0, dtype=h.dtype, device=h.device)
            return transposed_product(self.final_norm(h).detach(), self.tpacks[0], empty, groups) * self.logit_scale
        if len(self.packs) > 0:
            return torch.ops.prepacked.linear_clamp_run(self.final_norm(h).detach(), self.packs[0]) * self.logit_scale
        return linear(self.final_norm(h), self.embed.weight, groups) * self.logit_scale

    # ---- block-parallel ------------------------------------------------------------------------
    def forward_blocks(self, tokens: Tensor, kv: Tensor, state: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """tokens (B, N*W) from a block boundary. Returns logits (B, N*W, V), next kv and state."""
        W = self.window
        B, T = tokens.shape
        if T % W != 0:
            raise ValueError("forward_blocks needs a whole number of blocks")
        outs: List[Tensor] = []
        for b in range(T // W):
            x = self.drop(self.embed(tokens[:, b * W:(b + 1) * W]))
            new_kv: List[Tensor] = []
            new_states: List[Tensor] = []
            for i, layer in enumerate(self.layers):
                r = layer.rec_index
                st = state[:, r] if r >= 0 else state[:, 0:0]
                x, lkv, st = layer.block(x, kv[:, i], st, self.state_scale)
                new_kv.append(lkv)
                if r >= 0:
                    new_states.append(st)
            kv = torch.stack(new_kv, dim=1)
            if len(new_states) > 0:
                state = torch.stack(new_states, dim=1)
            outs.append(self.logits_of(x))
        return torch.cat(outs, dim=1), kv, state

    def score_outputs(self, logits: Tensor, tokens: Tensor, top_k: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """target_logprobs, topk_logprobs, topk_ids, next_logprobs of logits (B,T,V) for tokens (B,T)."""
        return self.outputs_for(logits, tokens[:, 1:], top_k)

    def outputs_for(self, logits: Tensor, nxt: Tensor, top_k: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """score_outputs of logits (B,T,V) whose positions are followed by the tokens nxt (B,T) or, when the
        last position's follower is not known yet, (B,T-1): targets (B, nxt's length)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        target = logp[:, :nxt.shape[1]].gather(2, nxt.unsqueeze(2)).squeeze(2)
        if top_k > 0:
            top_lp, top_ids = torch.topk(logp, top_k, dim=-1)
        else:
            top_lp = torch.zeros(logp.shape[0], logp.shape[1], 0, dtype=logp.dtype, device=logp.device)
            top_ids = torch.zeros(logp.shape[0], logp.shape[1], 0, dtype=torch.long, device=logp.device)
        return target, top_lp, top_ids, logp[:, -1].contiguous()

    @torch.jit.export
    def score_blocks(self, tokens: Tensor, kv: Tensor, state: Tensor, top_k: int
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Scores whole blocks (contract v1, kept for training and tests)."""
        logits, kv, state = self.forward_blocks(tokens, kv, state)
        target, top_lp, top_ids, nxt = self.score_outputs(logits, tokens, top_k)
        return target, top_lp, top_ids, nxt, kv, state

    # ---- token-by-token ------------------------------------------------------------------------
    @torch.jit.export
    def decode_step(self, tokens: Tensor, positions: Tensor, kv: Tensor, state: Tensor
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        """One token per row at per-row positions. Returns log-probs (B,V) of the next token, kv, state."""
        W = self.window
        B = tokens.shape[0]
        t = positions % W
        x = self.embed(tokens).unsqueeze(1)
        new_kv: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            r = layer.rec_index
            st = state[:, r] if r >= 0 else state[:, 0:0]
            x, lkv = layer.step(x, kv[:, i], st, t, self.state_scale)
            new_kv.append(lkv)
        kv = torch.stack(new_kv, dim=1)
        logp = torch.log_softmax(self.logits_of(x)[:, 0].float(), dim=-1)
        done = t == (W - 1)
        if bool(done.any()):
            new_states: List[Tensor] = []
            for j, rlayer in enumerate(self.layers):
                r = rlayer.rec_index
                if r >= 0:
                    st = state[:, r]
                    upd = rlayer.finish_block(kv[:, j], st)
                    new_states.append(torch.where(done.view(B, 1, 1, 1), upd, st))
            if len(new_states) > 0:
                state = torch.stack(new_states, dim=1)
            shifted = torch.cat([kv[..., W:, :], torch.zeros_like(kv[..., W:, :])], dim=-2)
            kv = torch.where(done.view(B, 1, 1, 1, 1, 1), shifted, kv)
        return logp, kv, state

    # ---- slot pools (export contract v2) -------------------------------------------------------
    # The caller owns the pools (contiguous, the module's device and dtype) and guarantees: the slots of
    # one call are distinct; positions follow each slot's document (see model/README.md).

    @torch.jit.export
    def allocate_slots(self, capacity: int) -> Tuple[List[Tensor], Tensor]:
        """Zero pools for `capacity` slots (a convenience; callers may allocate them themselves)."""
        p = self.embed.weight
        kv: List[Tensor] = []
        for layer in self.layers:
            kv.append(torch.zeros(capacity, 2, self.n_heads, layer.C, self.head_dim, dtype=p.dtype, device=p.device))
        state = torch.zeros(capacity, self.n_recurrent, 3, self.n_state, self.d_model, dtype=p.dtype, device=p.device)
        return kv, state

    @torch.jit.export
    def init_slots(self, slots: Tensor, kv: List[Tensor], state: Tensor) -> None:
        """Rows `slots` (long (B,)) become a fresh document: zero rings, the learned initial state."""
        for pool in kv:
            pool.view(pool.shape[0], -1).index_fill_(0, slots, 0.0)
        if self.n_recurrent > 0:
            B = slots.shape[0]
            init: List[Tensor] = []
            for r in range(self.n_recurrent):
                init.append(torch.zeros(0))
            for layer in self.layers:
                if layer.rec_index >= 0:
                    init[layer.rec_index] = layer.initial_state(1)[0]
            src = torch.stack(init, dim=0).unsqueeze(0).to(state.dtype)
            put_rows(state, slots, src.expand(B, -1, -1, -1, -1))

    @torch.jit.export
    def copy_slots(self, src: Tensor, dst: Tensor, kv: List[Tensor], state: Tensor) -> None:
        """Row src[i] -> row dst[i] of every pool (as if all at once)."""
        for pool in kv:
            put_rows(pool, dst, take_rows(pool, src))
        put_rows(state, dst, take_rows(state, src))

    @torch.jit.export
    def score_slots(self, tokens: Tensor, starts: Tensor, slots: Tensor, kv: List[Tensor], state: Tensor,
                    top_k: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scores N whole blocks per row (tokens (B, N*W), starts (B,) with start % W == 0) like score_blocks
        and writes the memory after them into the pools, in place."""
        W = self.window
        B, T = tokens.shape
        if T == 0 or T % W != 0:
            raise ValueError("score_slots needs a whole number of blocks")
        N = T // W
        st_rows = take_rows(state, slots)
        states: List[Tensor] = []
        for r in range(self.n_recurrent):
            states.append(st_rows[:, r])
        empty = st_rows[:, 0:0]
        last = starts + (N - 1) * W
        # Layer by layer over groups of blocks (score_group_rows) (BRTLayer.blocks_layer); every ring
        # is read before any is written.
        prev_k: List[Tensor] = []
        prev_v: List[Tensor] = []
        older_k: List[Tensor] = []
        older_v: List[Tensor] = []
        for i, rlayer in enumerate(self.layers):
            rows = rlayer.read_span(kv[i], slots, starts - W, W)
            prev_k.append(rows[:, 0])
            prev_v.append(rows[:, 1])
            older_k.append(rows[:, 0])
            older_v.append(rows[:, 1])
        G = max(1, self.score_group_rows // B)
        targets: List[Tensor] = []
        top_lps: List[Tensor] = []
        top_ids: List[Tensor] = []
        last_lp = empty
        g = 0
        while g < N:
            # Whole groups, then any remaining blocks one at a time: two sizes of temporaries per row count,
            # whatever N is (with groups of every size up to G, the heap fragmented: +8 MB over 4 requests).
            n = G if N - g >= G else 1
            # Block-major rows: block j of the group, row b at j*B+b (blocks_layer).
            grp = tokens[:, g * W:(g + n) * W].reshape(B, n, W).transpose(0, 1).reshape(n * B, W)
            x = self.drop(self.embed(grp))
            for i, layer in enumerate(self.layers):
                r = layer.rec_index
                st = states[r] if r >= 0 else empty
                x, k, v, k_before, v_before, st = layer.blocks_layer(x, n, prev_k[i], prev_v[i], st,
                                                                     self.state_scale)
                if r >= 0:
                    states[r] = st
                older_k[i] = k_before
                older_v[i] = v_before
                prev_k[i] = k
                prev_v[i] = v
            lg = self.logits_of(x, n)  # (n*B,W,V), each block position's rows a product of their own
            V = lg.shape[2]
            # The group's outputs now, so only one group's logits are ever alive (16 blocks' would be 16 MB).
            # The last group has no next token for its last position.
            target, tl, ti, last_lp = self.outputs_for(lg.view(n, B, W, V).transpose(0, 1).reshape(B, n * W, V),
                                                       tokens[:, g * W + 1:(g + n) * W + 1], top_k)
            targets.append(target)
            top_lps.append(tl)
            top_ids.append(ti)
            g += n
        for i, wlayer in enumerate(self.layers):
            if wlayer.C > W and N >= 2:
                # The ring holds the last two blocks: one write of all 2W slots.
                wlayer.write_span(kv[i], slots, last - W, torch.cat([older_k[i], prev_k[i]], dim=2),
                                  torch.cat([older_v[i], prev_v[i]], dim=2))
            else:
                wlayer.write_span(kv[i], slots, last, prev_k[i], prev_v[i])
        if self.n_recurrent > 0:
            put_rows(state, slots, torch.stack(states, dim=1))
        return torch.cat(targets, dim=1), torch.cat(top_lps, dim=1), torch.cat(top_ids, dim=1), last_lp

    @torch.jit.export
    def decode_slots(self, tokens: Tensor, positions: Tensor, slots: Tensor, kv: List[Tensor], state: Tensor
                     ) -> Tensor:
        """One token per row at per-row positions; writes its keys/values into the rings (not the state).
        Returns float32 log-probs (B,V) of the next token. Rows that complete a block then need finish_slots."""
        return self.decode_rows(tokens, positions, slots, -1, kv, state)

    @torch.jit.export
    def decode_range(self, tokens: Tensor, positions: Tensor, first: int, kv: List[Tensor], state: Tensor
                     ) -> Tensor:
        """decode_slots for the slots first, first+1, ..., first+B-1, bitwise the same: the rings and the
        state are read in place instead of being gathered (a decode step's memory traffic is mostly that)."""
        slots = torch.arange(first, first + tokens.shape[0], device=tokens.device)
        return self.decode_rows(tokens, positions, slots, first, kv, state)

    def decode_rows(self, tokens: Tensor, positions: Tensor, slots: Tensor, first: int, kv: List[Tensor],
                    state: Tensor) -> Tensor:
        # A decode step reads only the state's keys and values (indices 1 and 2), never the state itself.
        st_rows = rows_of(state, slots, first)
        empty = st_rows[:, 0:0]
        x = self.embed(tokens).unsqueeze(1)
        for i, layer in enumerate(self.layers):
            r = layer.rec_index
            st = st_rows[:, r] if r >= 0 else empty
            x = layer.step_slots(x, kv[i], slots, positions, st, self.state_scale, first)
        return torch.log_softmax(self.logits_of(x)[:, 0].float(), dim=-1)

    @torch.jit.export
    def span_slots(self, tokens: Tensor, lengths: Tensor, positions: Tensor, slots: Tensor, kv: List[Tensor],
                   state: Tensor, top_k: int, all_positions: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Feeds lengths[b] >= 1 tokens (tokens (B,n), padded after them) per row at positions[b].., all inside
        one block (positions[b] % W + lengths[b] <= W), like that many decode_slots calls; writes their
        keys/values into the rings (not the state: a row whose span completes its block then needs
        finish_slots). Returns target_logprobs (B,n-1) (of tokens[:, i+1] after tokens[:, ..i]), top-k
        log-probs and ids (B,n,top_k), and the log-probs (B,V) of the token after each row's last one (computed
        alike in both forms: bitwise the same). With all_positions false only that last distribution is computed
        (a prompt); the others are empty."""
        B = tokens.shape[0]
        n = tokens.shape[1]
        offs = torch.arange(n, device=tokens.device)
        valid = offs.view(1, n) < lengths.view(B, 1)
        st_rows = take_rows(state, slots)
        empty = st_rows[:, 0:0]
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            r = layer.rec_index
            st = st_rows[:, r] if r >= 0 else empty
            x = layer.span_slots_layer(x, kv[i], slots, positions, valid, st, self.state_scale)
        # The next-token distribution is computed the same way in both forms, so that a session's memory and
        # its next distribution do not depend (in their bits) on whether its tokens were scored or not.
        last = (lengths - 1).view(B, 1, 1).expand(B, 1, x.shape[2])
        nxt = torch.log_softmax(self.logits_of(x.gather(1, last))[:, 0].float(), dim=-1)
        return self.span_outputs(x, tokens, nxt, top_k, all_positions)

    def span_outputs(self, x: Tensor, tokens: Tensor, nxt: Tensor, top_k: int, all_positions: bool
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """span_slots' outputs from the last layer's x (B,n,D) and the next-token log-probs nxt (B,V)."""
        B = tokens.shape[0]
        n = tokens.shape[1]
        if not all_positions:
            none = torch.zeros(B, 0, dtype=nxt.dtype, device=nxt.device)
            return none, none.view(B, 0, 0), none.view(B, 0, 0).to(torch.long), nxt
        logp = torch.log_softmax(self.logits_of(x).float(), dim=-1)  # (B,n,V)
        target = logp[:, :-1].gather(2, tokens[:, 1:].unsqueeze(2)).squeeze(2)
        if top_k > 0:
            top_lp, top_ids = torch.topk(logp, top_k, dim=-1)
        else:
            top_lp = torch.zeros(B, n, 0, dtype=logp.dtype, device=logp.device)
            top_ids = torch.zeros(B, n, 0, dtype=torch.long, device=logp.device)
        return target, top_lp, top_ids, nxt

    @torch.jit.export
    def mixed_slots(self, d_tokens: Tensor, d_positions: Tensor, d_slots: Tensor, d_first: int, s_tokens: Tensor,
                    s_lengths: Tensor, s_positions: Tensor, s_slots: Tensor, kv: List[Tensor], state: Tensor,
                    top_k: int, all_positions: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """decode_slots of the rows d_* (B1 >= 1; with d_first >= 0 they are the slots d_first, d_first+1, ...,
        read in place as decode_range does) and span_slots of the rows s_* (B2 >= 1) in one call, on distinct
        slots: every matrix product runs once over all B1 + B2*n token rows, so the weights are read once for
        both (on a CPU whose caches do not hold them, a call's fixed cost). Returns the decode rows' log-probs
        (B1,V), then span_slots' four outputs. Equal to the two calls to fp32 rounding (the products' rounding
        may depend on their row count); like them it writes the rings, not the state (finish_slots)."""
        B1 = d_tokens.shape[0]
        B2 = s_tokens.shape[0]
        n = s_tokens.shape[1]
        offs = torch.arange(n, device=s_tokens.device)
        valid = offs.view(1, n) < s_lengths.view(B2, 1)
        d_st_rows = rows_of(state, d_slots, d_first)
        s_st_rows = take_rows(state, s_slots)
        empty = s_st_rows[:, 0:0]
        xd = self.embed(d_tokens).unsqueeze(1)
        xs = self.embed(s_tokens)
        for i, layer in enumerate(self.layers):
            r = layer.rec_index
            d_st = d_st_rows[:, r] if r >= 0 else empty
            s_st = s_st_rows[:, r] if r >= 0 else empty
            xd, xs = layer.mixed_layer(xd, xs, kv[i], d_slots, d_positions, d_st, d_first, s_slots, s_positions,
                                       valid, s_st, self.state_scale)
        # One product for the decode rows' logits and the spans' next-token ones (span_slots computes the
        # latter alone, so its bits may differ: the pair is equal to fp32 rounding, as above).
        last = (s_lengths - 1).view(B2, 1, 1).expand(B2, 1, xs.shape[2])
        both = torch.cat([xd[:, 0], xs.gather(1, last)[:, 0]], dim=0).unsqueeze(0)
        logp = torch.log_softmax(self.logits_of(both)[0].float(), dim=-1)
        target, top_lp, top_ids, nxt = self.span_outputs(xs, s_tokens, logp[B1:], top_k, all_positions)
        return logp[:B1], target, top_lp, top_ids, nxt

    @torch.jit.export
    def finish_slots(self, slots: Tensor, kv: List[Tensor], state: Tensor) -> None:
        """The state update of rows whose last fed token completed a block (position % W == W-1): the new
        state from the old one and the 2W keys/values of the recurrent layer's ring, written in place."""
        self.finish_rows(slots, -1, kv, state)

    @torch.jit.export
    def finish_range(self, first: int, count: int, kv: List[Tensor], state: Tensor) -> None:
        """finish_slots for the slots first, ..., first+count-1, bitwise the same, reading in place."""
        slots = torch.arange(first, first + count, device=state.device)
        self.finish_rows(slots, first, kv, state)

    def finish_rows(self, slots: Tensor, first: int, kv: List[Tensor], state: Tensor) -> None:
        if self.n_recurrent > 0:
            st_rows = rows_of(state, slots, first)
            states: List[Tensor] = []
            for r in range(self.n_recurrent):
                states.append(st_rows[:, r])
            for i, layer in enumerate(self.layers):
                r = layer.rec_index
                if r >= 0:
                    ring = rows_of(kv[i], slots, first)
                    states[r] = layer.update_state(st_rows[:, r], ring[:, 0], ring[:, 1])
            # Every new state is computed (a new tensor) before any is written.
            set_rows(state, slots, first, torch.stack(states, dim=1))

    def forward(self, tokens: Tensor, kv: Tensor, state: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return self.forward_blocks(tokens, kv, state)
