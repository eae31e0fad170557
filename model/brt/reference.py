"""The reference scorer: eager PyTorch, one document at a time, no batching tricks.

Tests use it as the ground truth for the server's numbers. Convention: a document is BOS followed by the
text's tokens; every text token is scored (its NLL given BOS and everything before it).
"""
from __future__ import annotations

import json
from typing import List, Optional, Tuple

import torch

from .config import BRTConfig
from .export import META_FILE
from .model import BlockRecurrentTransformer


def load_eager(path: str) -> Tuple[BlockRecurrentTransformer, dict]:
    """Rebuilds the eager module from a TorchScript export (its metadata and weights)."""
    files = {META_FILE: ""}
    scripted = torch.jit.load(path, map_location="cpu", _extra_files=files)
    meta = json.loads(files[META_FILE])
    cfg = BRTConfig.from_dict(meta["config"])
    cfg.dropout = 0.0
    model = BlockRecurrentTransformer(cfg)
    want = model.state_dict().keys()  # the export also lists non-persistent buffers; skip those
    model.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in want})
    return model.eval(), meta


@torch.no_grad()
def score_tokens(model: BlockRecurrentTransformer, ids: List[int], reset_every_blocks: Optional[int] = None
                 ) -> List[float]:
    """NLL (nats) of ids[1:] given the prefix; ids[0] is BOS. With `reset_every_blocks` the recurrent state
    (not the attention window) is reset to the initial state at every segment of that many blocks."""
    W = model.window
    n = len(ids)
    # Pad the last block; attention is causal, so padding never changes earlier positions.
    padded = ids + [0] * ((-n) % W)
    tokens = torch.tensor(padded, dtype=torch.long).unsqueeze(0)
    kv, state = model.initial_state(1)
    _, init_state = model.initial_state(1)
    logps = []
    for b in range(tokens.shape[1] // W):
        if reset_every_blocks and b > 0 and b % reset_every_blocks == 0:
            state = init_state
        logits, kv, state = model.forward_blocks(tokens[:, b * W:(b + 1) * W], kv, state)
        logps.append(torch.log_softmax(logits.float(), dim=-1))
    logp = torch.cat(logps, dim=1)[0]
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    return (-logp[:n - 1].gather(1, tgt.unsqueeze(1)).squeeze(1)).tolist()


@torch.no_grad()
def greedy(model: BlockRecurrentTransformer, ids: List[int], max_tokens: int, eos_id: int = -1) -> List[int]:
    """Greedy continuation of ids (BOS first), token by token with decode_step."""
    kv, state = model.initial_state(1)
    logp = torch.zeros(0)
    for p, t in enumerate(ids):
        logp, kv, state = model.decode_step(torch.tensor([t]), torch.tensor([p]), kv, state)
    out: List[int] = []
    pos = len(ids)
    for _ in range(max_tokens):
        nxt = int(torch.argmax(logp[0]))
        out.append(nxt)
        if nxt == eos_id:
            break
        logp, kv, state = model.decode_step(torch.tensor([nxt]), torch.tensor([pos]), kv, state)
        pos += 1
    return out
