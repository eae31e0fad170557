"""TorchScript export with self-describing metadata (see model/README.md, "Export contract")."""
from __future__ import annotations

import hashlib
import json
from typing import Dict

import torch

from .config import BRTConfig
from .model import BlockRecurrentTransformer

EXPORT_FORMAT = 2
CONTRACT = "slots-v2"  # the server's methods: init/copy/score/decode/finish_slots over slot pools
META_FILE = "brt_meta.json"


def fingerprint(model: BlockRecurrentTransformer, cfg: BRTConfig) -> str:
    """sha256 over the config and every weight (names, shapes, dtypes, bytes), in name order."""
    h = hashlib.sha256()
    h.update(cfg.to_json().encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def metadata(model: BlockRecurrentTransformer, cfg: BRTConfig, tokenizer_sha256: str, name: str,
             extra: Dict[str, str] | None = None) -> dict:
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meta = {
        "format": EXPORT_FORMAT,
        "contract": CONTRACT,
        "name": name,
        "config": cfg.to_dict(),
        "vocab_size": cfg.vocab_size,
        "bos_id": cfg.bos_id, "eos_id": cfg.eos_id, "pad_id": cfg.pad_id, "unk_id": cfg.unk_id,
        "window": cfg.window, "n_state": cfg.n_state, "n_layers": cfg.n_layers,
        "n_recurrent": len(cfg.recurrent_layers), "n_heads": cfg.n_heads, "head_dim": cfg.head_dim,
        "d_model": cfg.d_model,
        "kv_slots": list(model.kv_slots),
        "recurrent_layers": list(cfg.recurrent_layers),
        "dtype": "float32",
        "parameters": n_params,
        "tokenizer_sha256": tokenizer_sha256,
        "fingerprint": fingerprint(model, cfg),
    }
    if extra:
        meta.update(extra)
    return meta


def export(model: BlockRecurrentTransformer, cfg: BRTConfig, tokenizer_sha256: str, path: str,
           name: str = "brt", extra: Dict[str, str] | None = None) -> dict:
    model = model.to("cpu", torch.float32).eval()
    meta = metadata(model, cfg, tokenizer_sha256, name, extra)
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, path, _extra_files={META_FILE: json.dumps(meta, indent=1, sort_keys=True)})
    return meta


def load_meta(path: str) -> dict:
    files = {META_FILE: ""}
    torch.jit.load(path, map_location="cpu", _extra_files=files)
    return json.loads(files[META_FILE])
