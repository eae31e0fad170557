"""Model configuration: every size of the network is a value here, stored with the model."""
from __future__ import annotations

import dataclasses
import json
from typing import List


@dataclasses.dataclass
class BRTConfig:
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    window: int = 64          # W: block length and attention window, in tokens
    n_state: int = 64         # S: number of recurrent state vectors
    recurrent_layers: List[int] = dataclasses.field(default_factory=lambda: [2])
    gate: str = "fixed"       # "fixed" (fixed:skip, the paper's best) or "lstm"
    num_buckets: int = 32     # T5 relative position buckets
    max_distance: int = 128   # T5 relative position max distance
    dropout: float = 0.05
    attn_scale_init: float = 10.0  # initial value of the learned per-head logit scale
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 3
    unk_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        for r in self.recurrent_layers:
            if not 0 <= r < self.n_layers:
                raise ValueError(f"recurrent layer {r} outside 0..{self.n_layers - 1}")
        if list(self.recurrent_layers) != sorted(set(self.recurrent_layers)):
            # state row r belongs to recurrent_layers[r]; keep them in layer order, each once
            raise ValueError(f"recurrent_layers must be strictly increasing, got {self.recurrent_layers}")
        if self.gate not in ("fixed", "lstm"):
            raise ValueError(f"gate must be 'fixed' or 'lstm', got {self.gate!r}")
        if self.window < 1 or self.n_state < 1:
            raise ValueError("window and n_state must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "BRTConfig":
        fields = {f.name for f in dataclasses.fields(BRTConfig)}
        return BRTConfig(**{k: v for k, v in d.items() if k in fields})
