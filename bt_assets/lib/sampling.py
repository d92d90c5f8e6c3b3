"""Counter-based sampling: a row's random number is a hash of (seed, problem, sample, step).

So a completion does not depend on batch size, batch order or which other rows share its batch, and
every condition of the same (problem, sample) sees the same random numbers: conditions are paired, and a
scale-1.0 condition reproduces the baseline token for token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

MASK64 = (1 << 64) - 1
MASK63 = (1 << 63) - 1


def stable_key(x: str | int) -> int:
    """A deterministic 63-bit key for a problem id (blake2b of its text form; 5 and "5" agree)."""
    return int.from_bytes(hashlib.blake2b(str(x).encode(), digest_size=8).digest(), "little") & MASK63


def _i64(v: int) -> int:
    """A Python int taken modulo 2**64, as the int64 with the same bits."""
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def as_int64(values: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
    """int64 tensor of ``values``; Python ints are wrapped to 64 bits first (keys up to 2**64 are fine)."""
    if isinstance(values, torch.Tensor):
        return values.long()
    if isinstance(values, int):
        return torch.tensor(_i64(values), dtype=torch.long)
    return torch.tensor([_i64(int(v)) for v in values], dtype=torch.long)


GOLDEN, MIX1, MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: mask off the sign copies)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 bit patterns (add/multiply wrap modulo 2**64 in torch)."""
    x = x + GOLDEN
    x = (x ^ _shr(x, 30)) * MIX1
    x = (x ^ _shr(x, 27)) * MIX2
    return x ^ _shr(x, 31)


def uniforms(
    seed: int,
    problem_keys: torch.Tensor | Sequence[int],
    sample_ids: torch.Tensor | Sequence[int],
    step: int | torch.Tensor,
) -> torch.Tensor:
    """(B,) float64 uniforms in [0, 1) for (seed, problem, sample, step), one per row.

    h = mix(mix(mix(mix(seed) ^ problem) ^ sample) ^ step) with mix = splitmix64, computed in vectorised
    int64 ops on the keys' device; the top 53 bits of h give the uniform exactly. Each row depends only on
    its own counters, never on its batch neighbours."""
    keys, samples = as_int64(problem_keys), as_int64(sample_ids)
    h = splitmix64(as_int64(seed).to(keys.device).expand_as(keys))
    for v in (keys, samples.to(keys.device), as_int64(step).to(keys.device)):
        h = splitmix64(h ^ v)
    return _shr(h, 11).double() * 2.0**-53


def _order_keys(vals: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """int64 keys, unique per row, whose descending order is (-value, id): float32 bits made monotone
    (sign-magnitude to two's complement; -0.0 folded onto +0.0) in the high half, ~id in the low half."""
    bits = (vals.float() + 0.0).view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (bits.long() << 32) + (0xFFFFFFFF - ids.long())


def _by_key(vals: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of (vals, ids) per row in (-value, id) order (ids = each value's token id)."""
    keys = _order_keys(vals, ids)
    if k == keys.shape[-1]:
        order = keys.sort(dim=-1, descending=True).indices
    else:
        order = keys.topk(k, dim=-1).indices
    return vals.gather(-1, order), ids.gather(-1, order)


def _topk_sorted(logits: torch.Tensor, k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, ids) of float32 ``logits / temperature`` per row, ordered by (-value, id): ties at
    the k-th value are resolved by id.

    Scaling is monotone, so a ``topk`` of 2k candidates on the raw logits (any float dtype; no copy of the
    vocabulary) holds every token whose scaled value reaches the k-th one, unless the 2k-th candidate
    reaches it too (then that row is ranked over the whole vocabulary). Candidates are ranked exactly by
    integer keys, so even heavily tied bf16 logits never need a sort of the vocabulary."""
    vocab = logits.shape[-1]
    if 2 * k >= vocab:
        scaled = logits.float() / temperature
        return _by_key(scaled, torch.arange(vocab, device=logits.device).expand_as(scaled), k)
    cand_vals, cand_ids = torch.topk(logits, 2 * k, dim=-1)  # sorted, descending
    cand_vals = cand_vals.float() / temperature
    vals, idx = _by_key(cand_vals, cand_ids, k)
    crowded = cand_vals[:, -1] >= vals[:, -1]  # the 2k-th candidate ties the k-th: tokens may be missing
    if bool(crowded.any()):
        rows = crowded.nonzero().squeeze(1)
        scaled = logits[rows].float() / temperature
        ids = torch.arange(vocab, device=logits.device).expand_as(scaled)
        vals[rows], idx[rows] = _by_key(scaled, ids, k)
    return vals, idx


def sample_logits(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 64
) -> torch.Tensor:
    """(B,) next-token ids from (B, V) logits by inverse CDF with the row's uniform ``u`` (B,).

    temperature 0 = argmax (first id on ties). Otherwise: float32 logits / temperature; top-k prefilter
    (``top_k`` 0 = the whole vocabulary); softmax; the nucleus is the shortest prefix of the tokens sorted
    by (-probability, id) whose mass reaches ``top_p`` (at least one token); renormalise; the pick is the
    first nucleus token, in TOKEN-ID order, whose cumulative mass exceeds u. Ordering the CDF by id rather
    than by probability means that two nearly tied tokens swapping rank under rounding noise (another
    batch size, another kernel) changes nothing; only u landing within rounding of a boundary could.
    """
    if temperature <= 0:
        return logits.float().argmax(-1)
    vocab = logits.shape[-1]
    k = vocab if top_k <= 0 else min(top_k, vocab)
    vals, idx = _topk_sorted(logits, k, temperature)  # (B, k) by (-prob, id)
    probs = torch.softmax(vals, dim=-1)
    keep = (probs.cumsum(-1) - probs) < top_p  # the mass before this token is still short of top_p
    keep[:, 0] = True
    if k > 256:  # drop the columns after every row's last nucleus token (they only sort behind it)
        width = int((keep * torch.arange(1, k + 1, device=keep.device)).max())  # a host sync: large k only
        keep, idx, probs = keep[:, :width], idx[:, :width], probs[:, :width]
    ids, order = torch.where(keep, idx, idx + vocab).sort(-1)  # nucleus first, in id order
    cum = torch.where(keep, probs, 0.0).gather(-1, order).double().cumsum(-1)
    target = u.to(cum.device, torch.float64) * cum[:, -1]  # renormalised: u scaled by the nucleus mass
    pick = torch.searchsorted(cum, target.unsqueeze(-1), right=True)
    pick = torch.minimum(pick, keep.sum(-1, keepdim=True) - 1)  # u * mass rounding up onto the total
    return ids.gather(-1, pick).squeeze(-1)
