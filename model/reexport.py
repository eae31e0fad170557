#!/usr/bin/env python3
"""Re-exports a TorchScript BRT export in the current export format, with the same weights.

Loads the old file, rebuilds the eager model from its brt_meta.json config (exactly that config, so the
fingerprint is comparable), copies the parameters by name (non-persistent buffers such as the bucket tables are
rebuilt by the constructor), checks that the eager model's score_blocks equals the old module's on some text,
and writes the new export with every other metadata key kept. The old file is replaced only after both checks (same outputs, same fingerprint).

  /usr/bin/python3 model/reexport.py --model model/artifacts/brt.pt
"""
import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brt.config import BRTConfig  # noqa: E402
from brt.export import EXPORT_FORMAT, META_FILE, export  # noqa: E402
from brt.model import BlockRecurrentTransformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="model/artifacts/brt.pt")
    ap.add_argument("--out", default="", help="default: replace --model")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    out = args.out or args.model

    files = {META_FILE: ""}
    old = torch.jit.load(args.model, map_location="cpu", _extra_files=files)
    meta = json.loads(files[META_FILE])
    cfg = BRTConfig.from_dict(meta["config"])
    model = BlockRecurrentTransformer(cfg).eval()  # eval: dropout off, the config stays as stored
    want = model.state_dict()
    got = {k: v for k, v in old.state_dict().items() if k in want}
    missing = sorted(set(want) - set(got))
    if missing:
        raise SystemExit(f"the old export lacks parameters {missing}")
    model.load_state_dict(got)

    # Same function: eager score_blocks vs the old TorchScript's, on random text and on repeated text.
    W = cfg.window
    g = torch.Generator().manual_seed(0)
    texts = [torch.randint(4, cfg.vocab_size, (2, 4 * W), generator=g),
             torch.randint(4, cfg.vocab_size, (1, W), generator=g).repeat(1, 3)]
    worst = 0.0
    with torch.no_grad():
        for toks in texts:
            toks[:, 0] = cfg.bos_id
            kv, st = old.initial_state(toks.shape[0])
            a = old.score_blocks(toks, kv, st, 5)
            b = model.score_blocks(toks, kv, st, 5)
            for x, y in zip(a, b):
                worst = max(worst, (x.float() - y.float()).abs().max().item())
    print(f"eager vs old export: max |diff| {worst:.3g} over score_blocks outputs")
    if worst > args.tol:
        raise SystemExit(f"eager model differs from the old export by {worst} > {args.tol}")

    keep = {k: v for k, v in meta.items() if k not in ("format", "contract", "name", "config", "vocab_size",
                                                      "bos_id", "eos_id", "pad_id", "unk_id", "window",
                                                      "n_state", "n_layers", "n_recurrent", "n_heads",
                                                      "head_dim", "d_model", "kv_slots", "recurrent_layers",
                                                      "dtype", "parameters", "tokenizer_sha256",
                                                      "fingerprint")}
    fd, tmp = tempfile.mkstemp(suffix=".pt", dir=os.path.dirname(os.path.abspath(out)))
    os.close(fd)
    new = export(model, cfg, meta["tokenizer_sha256"], tmp, name=meta["name"], extra=keep)
    same = new["fingerprint"] == meta["fingerprint"]
    if not same:
        os.unlink(tmp)
        raise SystemExit(f"the fingerprint changed: {meta['fingerprint']} -> {new['fingerprint']}")
    os.replace(tmp, out)
    print(json.dumps({"out": out, "format": [meta["format"], EXPORT_FORMAT],
                      "fingerprint_unchanged": same, "fingerprint": new["fingerprint"],
                      "bytes": os.path.getsize(out), "kept_keys": sorted(keep)}))


if __name__ == "__main__":
    main()
