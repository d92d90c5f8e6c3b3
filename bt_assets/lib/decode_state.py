"""The live state of one batch's decode loop (``engine._decode_steps``), and its three per-step moves:
sample the next token of every live row, drop the rows that finished, run the model one step.

Per-row tensors hold the rows still decoding (``alive`` maps them to batch rows); ``tokens`` and
``stop_at`` hold every batch row and stay on the device until the loop ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bt_assets.lib.hooks import HookState
from bt_assets.lib.sampling import as_int64, sample_logits, uniforms

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

    from bt_assets.lib.engine import Request, SamplingConfig


@dataclass
class DecodeState:
    """Everything the decode loop reads and updates. ``hooks.row_condition`` is the condition index of
    each live row (the ablation hooks read it); dropping rows updates it with the other per-row tensors."""

    cache: Cache  # KV cache of the live rows (slab or shared-prefix)
    hooks: HookState  # row_condition (b,): condition of each live row
    logits: torch.Tensor  # (b, V) next-token logits of the live rows
    keys: torch.Tensor  # (n,) problem key of every batch row (counter of the uniforms)
    samples: torch.Tensor  # (n,) sample id of every batch row
    eos: torch.Tensor  # (E,) stop ids, sorted; empty = no EOS
    attend: torch.Tensor  # (b, 1, 1, width + steps) attention mask: prompt padding, then ones
    positions: torch.Tensor  # (b, 1) position id of each live row's last token
    width: int  # prompt width (columns of the prompt part of ``attend``)
    steps: int  # max_new_tokens
    shared_kw: dict[str, Any] = field(default_factory=dict)  # model kwargs of the shared-prefix path
    alive: torch.Tensor = field(init=False)  # (b,) batch row of each live row
    ids: torch.Tensor = field(init=False)  # (b,) token sampled last for each live row
    tokens: torch.Tensor = field(init=False)  # (n, steps) sampled ids; -1 = not sampled
    stop_at: torch.Tensor = field(init=False)  # (n,) step of the row's first EOS; steps = none yet

    def __post_init__(self) -> None:
        """Every batch row live, nothing sampled yet."""
        n, dev = len(self.keys), self.logits.device
        self.alive = torch.arange(n, device=dev)
        self.ids = torch.empty(n, dtype=torch.long, device=dev)
        self.tokens = torch.full((n, self.steps), -1, dtype=torch.long, device=dev)
        self.stop_at = torch.full((n,), self.steps, dtype=torch.long, device=dev)

    @classmethod
    def start(
        cls,
        batch: Sequence[Request],
        *,
        cache: Cache,
        hooks: HookState,
        logits: torch.Tensor,
        eos_ids: Sequence[int],
        prompt_mask: torch.Tensor,
        positions: torch.Tensor,
        steps: int,
        shared: bool,
    ) -> DecodeState:
        """The state after the prefill: every row of ``batch`` live, ``logits`` (n, V) its first-token
        logits, ``prompt_mask`` (n, W) its prompt's padding mask, ``positions`` (n, 1) its last position."""
        n, width, dev = len(batch), prompt_mask.shape[1], logits.device
        # (n, 1, 1, W + steps) attention mask handed to the model as is: the prompt's padding, then ones
        attend = torch.ones(n, 1, 1, width + steps, dtype=torch.bool, device=dev)
        attend[:, 0, 0, :width] = prompt_mask.bool()
        return cls(
            cache=cache,
            hooks=hooks,
            logits=logits,
            keys=as_int64([r.problem_key for r in batch]).to(dev),
            samples=torch.tensor([r.sample_id for r in batch], device=dev),
            eos=torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=dev),
            attend=attend,
            positions=positions,
            width=width,
            steps=steps,
            shared_kw={"bt_shared_prefix": cache} if shared else {},
        )

    @property
    def shared(self) -> bool:
        """True on the shared-prefix attention path."""
        return bool(self.shared_kw)

    def sample(self, sampling: SamplingConfig, t: int) -> None:
        """Sample step ``t``'s token of every live row from ``logits``; record it and each row's first EOS."""
        u = uniforms(
            sampling.seed, self.keys[self.alive], self.samples[self.alive], t
        )  # shared by conditions
        nxt = sample_logits(self.logits, u, sampling.temperature, sampling.top_p, sampling.top_k)  # (b,)
        self.tokens[self.alive, t] = nxt
        if self.eos.numel():
            first = self.stop_at[self.alive]
            self.stop_at[self.alive] = torch.where(
                (first == self.steps) & torch.isin(nxt, self.eos), t, first
            )
        self.ids = nxt

    def drop_finished(self, min_rows: int) -> bool:
        """Drop rows that have stopped from every per-row tensor and the cache, keeping at least
        ``min_rows`` rows (finished ones stay as padding; the batch starts with at least that many).
        False when no row is live any more (the loop ends); one host sync."""
        live = self.stop_at[self.alive] == self.steps
        if not bool(live.any()):
            return False
        keep = live.nonzero().squeeze(1)
        if keep.numel() < min_rows:
            pad = (~live).nonzero().squeeze(1)[: min_rows - keep.numel()]
            keep = torch.cat([keep, pad]).sort().values
        if keep.numel() < self.alive.numel():
            self.alive, self.ids = self.alive[keep], self.ids[keep]
            self.attend, self.positions = self.attend[keep], self.positions[keep]
            self.cache.batch_select_indices(keep)
            self.hooks.row_condition = self.hooks.row_condition[keep]  # a new tensor: hooks cache by identity
        return True

    def forward(self, model: nn.Module, t: int) -> None:
        """Feed step ``t``'s tokens through the model (K/V appended to the cache); set the next logits."""
        self.positions = self.positions + 1
        out = model(
            input_ids=self.ids.unsqueeze(1),
            attention_mask=None if self.shared_kw else self.attend[..., : self.width + t + 1],
            position_ids=self.positions,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **self.shared_kw,
        )
        self.logits = out.logits[:, -1]
