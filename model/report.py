#!/usr/bin/env python3
"""The model report: held-out bits per token and per byte, and how much the recurrent state carries.

  /usr/bin/python3 model/report.py --model model/artifacts/brt.pt --run model/runs/default \
      --out model/report.json > model/report.md

On the test split (whole documents the model never saw in training or validation):
  * bits per token and per byte, one session per document (the state and window carried from its start);
  * on the held-out novel (`--book`), the state gain three ways, plus the reset-to-initial figure:
    (a) sessions: the novel cut into pieces of at least `--piece-blocks`*W tokens (18*64 = 1,152 tokens, about
        4 KB), each cut just after the first newline at or past that many tokens (exactly `brt compare
        --reset_every=18`), each piece scored in a fresh session, against one session for the whole novel;
        compared only on the tokens at least `--warm` (256) tokens into their piece, so the attention window
        is warm in both and only what came before the piece differs;
    (b) foreign state: every `--swap-blocks` (8) blocks, the novel's recurrent state is replaced by the state
        another novel (`--donor`) has at the same position; the window (keys/values) stays the novel's own; the
        next 8 blocks are scored and compared with the true state;
    (c) stale state: the same, with the novel's own state from `--stale-tokens` (2,048) tokens earlier;
    (reset) the same, with the learned initial state: what the earlier report called "reset". A document-start
        state in the middle of a document is out of distribution, so this overstates what the state carries.
    (b), (c) and reset are measured on the same swap segments, those starting at or after `--stale-tokens`;
  * the tokens of the novel that gain most under (a), with the distance back to the previous occurrence of the
    same token, and the words that gain most in total.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt import data as brt_data  # noqa: E402
from brt.reference import load_eager  # noqa: E402
from brt.tokenizer import Tokenizer  # noqa: E402

LN2 = math.log(2)


@torch.no_grad()
def score_batch(model, seqs, seg_blocks=8):
    """NLL (nats, float64 arrays) of seqs[i][1:] for each sequence (BOS first), all rows in one batch, the
    state and window carried from each row's start. Padding after a row's end never affects its tokens."""
    W = model.window
    B = len(seqs)
    T = max(len(s) for s in seqs)
    T += (-T) % W
    x = torch.zeros(B, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
    kv, state = model.initial_state(B)
    seg = W * seg_blocks
    out = []
    for s in range(0, T, seg):
        logits, kv, state = model.forward_blocks(x[:, s:s + seg], kv, state)
        lp = torch.log_softmax(logits.float(), dim=-1)
        n = lp.shape[1]
        tgt = torch.zeros(B, n, dtype=torch.long)
        m = min(n, T - s - 1)
        tgt[:, :m] = x[:, s + 1:s + 1 + m]
        out.append(-lp.gather(2, tgt.unsqueeze(2)).squeeze(2).double())
    nll = torch.cat(out, dim=1).numpy()
    return [nll[i, :len(s) - 1].copy() for i, s in enumerate(seqs)]


def score_many(model, seqs, batch):
    """score_batch over groups of similar length."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    res = [None] * len(seqs)
    for g in range(0, len(order), batch):
        idx = order[g:g + batch]
        for i, r in zip(idx, score_batch(model, [seqs[i] for i in idx])):
            res[i] = r
    return res


def cut_at_newlines(pieces, min_tokens):
    """brt compare's CutAtNewlines over the text tokens: [start, end) segments."""
    segs, start, n = [], 0, len(pieces)
    while start < n:
        end = n
        for i in range(start + min_tokens - 1, n):
            if pieces[i].endswith(b"\n"):
                end = i + 1
                break
        segs.append((start, end))
        start = end
    return segs


@torch.no_grad()
def states_at(model, ids, every_blocks, max_blocks):
    """The recurrent state of a single document at every multiple of `every_blocks` blocks (before that block)."""
    W = model.window
    kv, state = model.initial_state(1)
    x = torch.tensor(ids[:max_blocks * W] + [0] * ((-min(len(ids), max_blocks * W)) % W)).view(1, -1)
    out = {}
    nb = x.shape[1] // W
    for b in range(0, nb, every_blocks):
        out[b] = state.clone()
        _, kv, state = model.forward_blocks(x[:, b * W:(b + every_blocks) * W], kv, state)
    return out


@torch.no_grad()
def swap_controls(model, ids, donor_states, swap_blocks, stale_blocks):
    """One session over ids (BOS first), 4 rows per swap segment: the true state, the donor's state at the same
    block, the own state `stale_blocks` earlier, the learned initial state; the window is the true one in all.
    Returns the true NLL for every token and the three control NLLs (nan where not measured)."""
    W = model.window
    n = len(ids)
    x = torch.tensor(ids + [0] * ((-n) % W)).view(1, -1)
    nb = x.shape[1] // W
    kv, state = model.initial_state(1)
    _, init = model.initial_state(1)
    own = {}
    true = np.full(n - 1, np.nan)
    ctrl = {k: np.full(n - 1, np.nan) for k in ("foreign", "stale", "initial")}
    for b in range(0, nb, swap_blocks):
        own[b] = state.clone()
        toks = x[:, b * W:(b + swap_blocks) * W]
        measured = b >= stale_blocks and b in donor_states
        if measured:
            st = torch.cat([state, donor_states[b], own[b - stale_blocks], init], dim=0)
            logits, kv4, st4 = model.forward_blocks(toks.expand(4, -1), kv.expand(4, -1, -1, -1, -1, -1), st)
            kv, state = kv4[:1].contiguous(), st4[:1].contiguous()
        else:
            logits, kv, state = model.forward_blocks(toks, kv, state)
        lp = torch.log_softmax(logits.float(), dim=-1)
        p0 = b * W  # position of the first input token; it predicts token p0+1, i.e. nll index p0
        m = min(toks.shape[1], n - 1 - p0)
        if m <= 0:
            break
        tgt = x[0, p0 + 1:p0 + 1 + m]
        nll = -lp[:, :m].gather(2, tgt.view(1, m, 1).expand(lp.shape[0], m, 1)).squeeze(2).double().numpy()
        true[p0:p0 + m] = nll[0]
        if measured:
            for r, k in enumerate(("foreign", "stale", "initial"), start=1):
                ctrl[k][p0:p0 + m] = nll[r]
    return true, ctrl


TITLES = {"Mr", "Mrs", "Miss", "Sir", "Lady", "Lord", "Dr", "Colonel", "Captain", "Chapter", "CHAPTER", "I", "I'm",
          "I'll", "I've", "I'd"}


def word_at(text_bytes, begin, end):
    """The whole word (letters, digits, apostrophes) that the token [begin, end) is part of ("" for a token
    without letters or digits), and whether it looks like a name: capitalised, not all capitals, not a title
    (Mr, Miss, ...), and not at a sentence or line start."""
    def is_word(c):
        return chr(c).isalnum() or c == 0x27 or c >= 0x80
    tokb = text_bytes[begin:end]
    alnum = [j for j, c in enumerate(tokb) if chr(c).isalnum() or c >= 0x80]
    if not alnum:
        return "", False
    a, b = begin + alnum[0], begin + alnum[-1] + 1
    while a > 0 and is_word(text_bytes[a - 1]):
        a -= 1
    while b < len(text_bytes) and is_word(text_bytes[b]):
        b += 1
    w = text_bytes[a:b].decode("utf-8", "replace")
    j = a - 1
    while j >= 0 and text_bytes[j] in b' "_(':
        j -= 1
    sentence_start = j < 0 or text_bytes[j] in b'.!?\n:;'
    if j >= 0 and text_bytes[j] == ord("."):  # "Mr. Darcy": a title's full stop is not a sentence end
        k = j
        while k > 0 and chr(text_bytes[k - 1]).isalpha():
            k -= 1
        if text_bytes[k:j].decode("utf-8", "replace") in TITLES:
            sentence_start = False
    name = w[0].isupper() and not w.isupper() and not sentence_start and w not in TITLES
    return w, name


def from_compare(path, tok, warm_tokens, W):
    """(a) from `brt compare --json` output (the server's numbers): all tokens, after the first piece, and the
    tokens at least `warm_tokens` into their piece, with the pieces recomputed exactly as brt compare cuts them."""
    j = json.load(open(path))
    per = j["per_token"]
    ids = per["token_id"]
    carried = np.array(per["nll_carried"], dtype=np.float64)
    reset = np.array(per["nll_reset"], dtype=np.float64)
    segs = cut_at_newlines([tok.piece_bytes(t) for t in ids], j["segment_min_tokens"])
    if len(segs) != j["segments"]:
        sys.exit(f"{len(segs)} pieces here, {j['segments']} in {path}")
    into = np.concatenate([np.arange(b - a) for a, b in segs])
    out = {"file": j["file"], "tokens": len(ids), "bytes": j["bytes"], "pieces": len(segs),
           "carried_bits_per_token": float(carried.sum()) / len(ids) / LN2,
           "carried_bits_per_byte": float(carried.sum()) / j["bytes"] / LN2}
    for name, mask in (("all_tokens", np.ones(len(ids), bool)), ("after_first_piece", np.arange(len(ids)) >= segs[0][1]),
                       ("warm", into >= warm_tokens)):
        b, n = float(reset[mask].sum()), float(carried[mask].sum())
        out[name] = {"tokens": int(mask.sum()), "bits_per_token_without": b / mask.sum() / LN2,
                     "bits_per_token_with": n / mask.sum() / LN2, "gain_percent": 100.0 * (b - n) / b}
    print(json.dumps(out, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--tokenizer", default=None, help="default: tokenizer.model beside --model")
    ap.add_argument("--run", default="model/runs/default", help="training run (its train_log.jsonl), if present")
    ap.add_argument("--data", default="model/data")
    ap.add_argument("--book", default="austen/pride_and_prejudice", help="held-out novel (test split)")
    ap.add_argument("--donor", default="austen/emma", help="novel whose states are swapped in for control (b)")
    ap.add_argument("--piece-blocks", type=int, default=18, help="(a): pieces of at least this many blocks")
    ap.add_argument("--warm", type=int, default=256, help="(a): count tokens at least this far into their piece")
    ap.add_argument("--swap-blocks", type=int, default=8, help="(b)/(c): swap every this many blocks")
    ap.add_argument("--stale-tokens", type=int, default=2048, help="(c): age of the stale state")
    ap.add_argument("--max-book-tokens", type=int, default=0, help="truncate the novel (quick checks only)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="model/report.json")
    ap.add_argument("--render", default=None, metavar="JSON", help="only print the markdown of a report.json")
    ap.add_argument("--from-compare", default=None, metavar="JSON",
                    help="only recompute (a) from `brt compare --json` output (the server's numbers) and print it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.render:
        r = json.load(open(args.render))
        return print_markdown(r, r["config"]["window"])
    if args.from_compare:
        tok = Tokenizer(args.tokenizer or os.path.join(os.path.dirname(args.model), "tokenizer.model"))
        return from_compare(args.from_compare, tok, args.warm, 64)
    t_start = time.time()
    model, meta = load_eager(args.model)
    tok = Tokenizer(args.tokenizer or os.path.join(os.path.dirname(args.model), "tokenizer.model"))
    if tok.sha256 != meta["tokenizer_sha256"]:
        sys.exit("tokenizer does not match the model")
    W = meta["window"]
    docs = brt_data.load_split_texts(args.data, "test")
    if args.max_book_tokens:
        docs = [(n, t) for n, t in docs if n == args.book]
    names = [n for n, _ in docs]
    if args.book not in names:
        sys.exit(f"{args.book} is not in the test split")
    seqs = [[tok.bos_id] + tok.encode(t) for _, t in docs]
    bi = names.index(args.book)
    if args.max_book_tokens:
        # cut at a newline so byte counts stay exact
        ids = seqs[bi][:args.max_book_tokens + 1]
        while tok.piece_bytes(ids[-1]) != b"\n":
            ids.pop()
        seqs[bi] = ids
        docs[bi] = (args.book, tok.decode(ids[1:]))

    # 1. Held-out bits per token and per byte, one session per document. The novel's come from the control run.
    swap = args.swap_blocks
    stale_blocks = args.stale_tokens // W
    donor_text = dict(brt_data.load_split_texts(args.data, "train") + brt_data.load_split_texts(args.data, "valid"))
    donor_ids = [tok.bos_id] + tok.encode(donor_text[args.donor])
    book_blocks = -(-len(seqs[bi]) // W)
    t0 = time.time()
    donor_states = states_at(model, donor_ids, swap, book_blocks)
    true, ctrl = swap_controls(model, seqs[bi], donor_states, swap, stale_blocks)
    t_ctrl = time.time() - t0
    others = [i for i in range(len(seqs)) if i != bi]
    nlls = {bi: true}
    for i, r in zip(others, score_many(model, [seqs[i] for i in others], args.batch)):
        nlls[i] = r
    by_kind = {}
    for i, (name, text) in enumerate(docs):
        k = by_kind.setdefault(name.split("/")[0], {"documents": 0, "tokens": 0, "bytes": 0, "nats": 0.0})
        k["documents"] += 1
        k["tokens"] += len(nlls[i])
        k["bytes"] += len(text.encode())
        k["nats"] += float(nlls[i].sum())
    split = {}
    for k, v in list(by_kind.items()) + [("all", {key: sum(d[key] for d in by_kind.values())
                                                  for key in ("documents", "tokens", "bytes", "nats")})]:
        split[k] = {"documents": v["documents"], "tokens": v["tokens"], "bytes": v["bytes"],
                    "bits_per_token": v["nats"] / v["tokens"] / LN2, "bits_per_byte": v["nats"] / v["bytes"] / LN2}

    # 2a. Sessions: one session for the novel vs a fresh session per piece.
    book_ids = seqs[bi]
    book_text = docs[bi][1].encode()
    text_ids = book_ids[1:]
    piece_b = [tok.piece_bytes(t) for t in text_ids]
    ends = np.cumsum([len(p) for p in piece_b])
    begins = ends - np.array([len(p) for p in piece_b])
    assert ends[-1] == len(book_text)
    segs = cut_at_newlines(piece_b, args.piece_blocks * W)
    t0 = time.time()
    fresh = np.concatenate(score_many(model, [[tok.bos_id] + text_ids[a:b] for a, b in segs], args.batch))
    t_pieces = time.time() - t0
    into = np.concatenate([np.arange(b - a) for a, b in segs])
    seg_start = np.concatenate([np.full(b - a, a) for a, b in segs])
    warm = into >= args.warm
    first_end = segs[0][1]

    def gain(base, new, mask):
        b, n = float(base[mask].sum()), float(new[mask].sum())
        return {"tokens": int(mask.sum()), "bits_per_token_without": b / mask.sum() / LN2,
                "bits_per_token_with": n / mask.sum() / LN2, "gain_bits_per_token": (b - n) / mask.sum() / LN2,
                "gain_percent": 100.0 * (b - n) / b}

    after_first = np.arange(len(text_ids)) >= first_end
    sessions = {"piece_min_tokens": args.piece_blocks * W, "pieces": len(segs),
                "mean_piece_bytes": len(book_text) / len(segs), "warm_tokens": args.warm,
                "warm": gain(fresh, true, warm), "all_tokens": gain(fresh, true, np.ones(len(true), bool)),
                "after_first_piece": gain(fresh, true, after_first),
                "brt_compare": f"brt compare --reset_every={args.piece_blocks} --json BOOK.txt"}
    meas = ~np.isnan(ctrl["foreign"])
    controls = {"swap_every_tokens": swap * W, "stale_tokens": stale_blocks * W, "donor": args.donor,
                "measured_tokens": int(meas.sum()),
                "foreign": gain(ctrl["foreign"], true, meas), "stale": gain(ctrl["stale"], true, meas),
                "initial": gain(ctrl["initial"], true, meas)}

    # 3. Which tokens gain most under (a)?
    prev, last = [None] * len(text_ids), {}
    for i, t in enumerate(text_ids):
        prev[i] = i - last[t] if t in last else None
        last[t] = i
    g = fresh - true
    cand = np.nonzero(warm)[0]
    top_idx = cand[np.argsort(-g[cand], kind="stable")[:args.top]]
    rows = []
    for i in top_idx:
        i = int(i)
        w, is_name = word_at(book_text, int(begins[i]), int(ends[i]))
        since = int(i - seg_start[i])
        a, b = int(begins[i]), int(ends[i])
        ex = (book_text[max(0, a - 50):a].decode("utf-8", "replace") + "[" + book_text[a:b].decode("utf-8", "replace")
              + "]" + book_text[b:b + 20].decode("utf-8", "replace")).replace("\n", " / ")
        rows.append({"index": i, "token": piece_b[i].decode("utf-8", "replace"), "word": w.replace("\n", " "),
                     "name": is_name,
                     "nll_session": round(float(true[i]), 3), "nll_fresh": round(float(fresh[i]), 3),
                     "gain_bits": round(float(g[i]) / LN2, 3), "distance_back": prev[i], "since_piece_start": since,
                     "previous_outside_piece": prev[i] is None or prev[i] > since, "excerpt": ex})
    words = {}
    for i in cand:
        i = int(i)
        w, is_name = word_at(book_text, int(begins[i]), int(ends[i]))
        if not w:
            continue
        d = words.setdefault(w, {"word": w, "name": is_name, "tokens": 0, "gain_bits": 0.0, "dist": []})
        d["name"] = d["name"] or is_name
        d["tokens"] += 1
        d["gain_bits"] += float(g[i]) / LN2
        if prev[i] is not None:
            d["dist"].append(prev[i])
    top_words = sorted(words.values(), key=lambda d: -d["gain_bits"])[:args.top]
    for d in top_words:
        d["median_distance_back"] = statistics.median(d["dist"]) if d["dist"] else None
        d["gain_bits"] = round(d["gain_bits"], 1)
        del d["dist"]
    is_name = np.array([word_at(book_text, int(begins[i]), int(ends[i]))[1] for i in cand], dtype=bool)
    gc = g[cand] / LN2
    verdict = {
        "top_tokens": len(rows),
        "names": sum(r["name"] for r in rows),
        "distance_back_over_window": sum(1 for r in rows if r["distance_back"] is None or r["distance_back"] > W),
        "previous_outside_piece": sum(r["previous_outside_piece"] for r in rows),
        "name_tokens": int(is_name.sum()), "name_mean_gain_bits": float(gc[is_name].mean()) if is_name.any() else None,
        "other_tokens": int((~is_name).sum()), "other_mean_gain_bits": float(gc[~is_name].mean()),
        "top_words_names": sum(d["name"] for d in top_words),
    }

    # 4. Training curve.
    curve = []
    log_path = os.path.join(args.run, "train_log.jsonl")
    if os.path.exists(log_path):
        train_recent = None
        for line in open(log_path):
            r = json.loads(line)
            if "loss" in r:
                train_recent = r
            if "valid" in r:
                curve.append({"step": r["step"], "tokens": train_recent["tokens"] if train_recent else None,
                              "train_bits_per_token": train_recent["bits_per_token"] if train_recent else None,
                              "gate_mean": train_recent.get("gate_mean") if train_recent else None,
                              **{f"valid_{k}": v for k, v in r["valid"].items()}})
    gates = [torch.sigmoid(l.gate_bias).tolist() for l in model.layers if l.rec_index >= 0 and not l.lstm_gate]

    result = {
        "model": meta["name"], "fingerprint": meta["fingerprint"], "parameters": meta["parameters"],
        "export_bytes": os.path.getsize(args.model), "config": meta["config"], "training": meta.get("training"),
        "test_split": split, "book": {"name": args.book, "tokens": len(true), "bytes": len(book_text),
                                      "bits_per_token": float(true.sum()) / len(true) / LN2,
                                      "bits_per_byte": float(true.sum()) / len(book_text) / LN2},
        "gain_a_sessions": sessions, "controls": controls, "top_tokens": rows, "top_words": top_words,
        "verdict": verdict, "training_curve": curve,
        "gate": {"mean": float(np.mean(gates)) if gates else None,
                 "quantiles_10_50_90": [float(np.quantile(gates, q)) for q in (0.1, 0.5, 0.9)] if gates else None},
        "seconds": {"controls": round(t_ctrl, 1), "pieces": round(t_pieces, 1), "total": round(time.time() - t_start, 1)},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    print_markdown(result, W)


def print_markdown(r, W):
    p = print
    tr = r["training"] or {}
    c = r["config"]
    p(f"- Model `{r['model']}`: {r['parameters']:,} parameters, export {r['export_bytes'] / 1e6:.1f} MB; L={c['n_layers']} "
      f"D={c['d_model']} H={c['n_heads']} W={c['window']} S={c['n_state']} recurrent={c['recurrent_layers']} "
      f"gate={c['gate']} vocab={c['vocab_size']}; fingerprint `{r['fingerprint'][:16]}`")
    if tr:
        p(f"- Training: {tr['steps']} steps, {tr['tokens']:,} tokens, {tr['seconds'] / 60:.1f} min "
          f"({tr['tokens_per_s']:.0f} tokens/s, {tr['threads']} thread(s), {tr.get('device', 'cpu')}, batch "
          f"{tr['batch']} x {tr['segment_tokens']} tokens); exported weights of step {tr.get('best_step')} "
          f"(best validation)")
    if r["gate"]["mean"] is not None:
        q = r["gate"]["quantiles_10_50_90"]
        p(f"- Fixed gate g = sigmoid(b) after training: mean {r['gate']['mean']:.3f} (10/50/90%: "
          f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f})")
    p("\n**Held-out test split** (one session per document; bits per byte = bits over the UTF-8 bytes of the text):\n")
    p("| documents | kind | tokens | bytes | bits/token | bits/byte |")
    p("|---:|---|---:|---:|---:|---:|")
    for k, v in r["test_split"].items():
        p(f"| {v['documents']} | {k} | {v['tokens']:,} | {v['bytes']:,} | {v['bits_per_token']:.4f} | "
          f"{v['bits_per_byte']:.4f} |")
    b = r["book"]
    p(f"\n**Held-out novel `{b['name']}`**: {b['tokens']:,} tokens, {b['bytes']:,} bytes, one session: "
      f"**{b['bits_per_token']:.4f} bits/token, {b['bits_per_byte']:.4f} bits/byte**.\n")
    s = r["gain_a_sessions"]
    co = r["controls"]
    p("| state gain | tokens | without (bits/token) | with (bits/token) | gain (bits/token) | gain |")
    p("|---|---:|---:|---:|---:|---:|")

    def row(label, g):
        p(f"| {label} | {g['tokens']:,} | {g['bits_per_token_without']:.4f} | {g['bits_per_token_with']:.4f} | "
          f"{g['gain_bits_per_token']:.4f} | **{g['gain_percent']:.2f}%** |")
    row(f"(a) one session vs a fresh session per piece (>= {s['piece_min_tokens']} tokens, cut at a newline, "
        f"{s['pieces']} pieces, {s['mean_piece_bytes']:.0f} bytes on average), tokens >= {s['warm_tokens']} "
        f"into their piece", s["warm"])
    row("(a) same, all tokens (as `brt compare` prints)", s["all_tokens"])
    row("(a) same, tokens after the first piece (as `brt compare` prints)", s["after_first_piece"])
    row(f"(b) foreign state: true state vs `{co['donor']}`'s state at the same position, swapped in every "
        f"{co['swap_every_tokens']} tokens (window kept)", co["foreign"])
    row(f"(c) stale state: true state vs the same novel's state {co['stale_tokens']} tokens earlier", co["stale"])
    row("(reset) true state vs the learned document-start state mid-document (overstates the state's content)",
        co["initial"])
    v = r["verdict"]
    p(f"\nThe {v['top_tokens']} tokens that gain most under (a) (tokens >= {s['warm_tokens']} into their piece; "
      f"`distance back`: tokens back to the previous occurrence of the same token; `since start`: tokens since "
      f"the piece start, so a previous occurrence further back than that was outside the fresh session):\n")
    p("| index | token | word | name? | NLL session | NLL fresh | gain (bits) | distance back | since start | excerpt |")
    p("|---:|---|---|---|---:|---:|---:|---:|---:|---|")
    for t in r["top_tokens"]:
        ex = t["excerpt"].replace("|", "\\|")
        p(f"| {t['index']} | `{t['token'].strip() or repr(t['token'])}` | {t['word']} | {'yes' if t['name'] else ''} | "
          f"{t['nll_session']} | {t['nll_fresh']} | {t['gain_bits']} | {t['distance_back']} | "
          f"{t['since_piece_start']} | {ex} |")
    p(f"\nWords with the largest total gain under (a) (over warm tokens):\n")
    p("| word | name? (any occurrence) | tokens | total gain (bits) | median distance back |")
    p("|---|---|---:|---:|---:|")
    for d in r["top_words"]:
        p(f"| {d['word']} | {'yes' if d['name'] else ''} | {d['tokens']} | {d['gain_bits']} | "
          f"{d['median_distance_back']} |")
    p(f"\nOf the top {v['top_tokens']} tokens, {v['names']} are in names (capitalised words not at a sentence "
      f"start, titles such as Mr excluded), {v['distance_back_over_window']} have their previous occurrence beyond "
      f"the W={W} window and {v['previous_outside_piece']} before the start of their fresh session. "
      f"{v['top_words_names']} of the top {len(r['top_words'])} words by total gain are names. Mean gain over the "
      f"warm tokens: {v['name_mean_gain_bits'] or 0:.4f} bits on the {v['name_tokens']:,} name tokens, "
      f"{v['other_mean_gain_bits']:.4f} bits on the {v['other_tokens']:,} others.")
    if r["training_curve"]:
        p("\nTraining curve (validation: the first tokens of each validation document, state carried):\n")
        p("| step | tokens | train bits/token | valid bits/token | valid austen | valid kjv | valid py | gate mean |")
        p("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cr in r["training_curve"]:
            p(f"| {cr['step']} | {cr['tokens']:,} | {cr['train_bits_per_token']} | {cr['valid_bits_per_token']} | "
              f"{cr.get('valid_austen')} | {cr.get('valid_kjv')} | {cr.get('valid_py')} | "
              f"{(cr.get('gate_mean') or [None])[0]} |")


if __name__ == "__main__":
    main()
