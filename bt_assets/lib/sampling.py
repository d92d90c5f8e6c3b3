"""Counter-based sampling: a row's random number is a hash of (seed, problem, sample, step).

So a completion does not depend on batch size, batch order or which other rows share its batch, and
every condition of the same (problem, sample) sees the same random numbers (paired comparisons;
a scale-1.0 condition reproduces the baseline token for token).
"""

from __future__ import annotations

import hashlib

import torch

MASK63 = (1 << 63) - 1


def stable_key(x: str | int) -> int:
    """A deterministic 63-bit key for a problem id (blake2b of its text form)."""
    return int.from_bytes(hashlib.blake2b(str(x).encode(), digest_size=8).digest(), "little") & MASK63


def _mix(x: int) -> int:
    """splitmix64 finaliser on Python ints (exact 64-bit arithmetic)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def uniform(seed: int, problem_key: int, sample_id: int, step: int) -> float:
    """U[0,1) from (seed, problem, sample, step): 53 bits of a chained splitmix64 hash."""
    h = _mix(seed & 0xFFFFFFFFFFFFFFFF)
    for v in (problem_key, sample_id, step):
        h = _mix(h ^ (v & 0xFFFFFFFFFFFFFFFF))
    return (h >> 11) / float(1 << 53)


def uniforms(seed: int, problem_keys: list[int], sample_ids: list[int], step: int) -> torch.Tensor:
    """(B,) float64 uniforms for one decode step (B is a few hundred rows: Python ints are cheap)."""
    return torch.tensor([uniform(seed, p, s, step) for p, s in zip(problem_keys, sample_ids, strict=True)],
                        dtype=torch.float64)


def sample_logits(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float,
                  top_k: int) -> torch.Tensor:
    """Next token per row by inverse CDF over the nucleus.

    logits (B, V) -> float32 / temperature; top-k prefilter (``top_k`` = 0: whole vocabulary); sort by
    probability (ties by token id); keep the smallest prefix whose mass reaches ``top_p`` (at least one
    token); renormalise; pick the first token whose cumulative mass exceeds ``u``. temperature 0 = argmax.
    """
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    k = logits.shape[-1] if top_k <= 0 else min(top_k, logits.shape[-1])
    vals, idx = torch.topk(logits, k, dim=-1, sorted=True)  # (B, k), descending
    # deterministic tie order: equal logits sorted by token id
    order = torch.argsort(idx, dim=-1, stable=True)
    vals, idx = vals.gather(-1, order), idx.gather(-1, order)
    order = torch.argsort(-vals, dim=-1, stable=True)
    vals, idx = vals.gather(-1, order), idx.gather(-1, order)
    probs = torch.softmax(vals, dim=-1)
    cum = probs.cumsum(-1)
    keep = (cum - probs) < top_p  # mass before this token is below top_p
    keep[:, 0] = True
    probs = probs * keep
    cum = (probs / probs.sum(-1, keepdim=True)).cumsum(-1).double()
    pick = torch.searchsorted(cum, u.to(cum.device, torch.float64).unsqueeze(-1)).clamp(max=k - 1)
    return idx.gather(-1, pick).squeeze(-1)
