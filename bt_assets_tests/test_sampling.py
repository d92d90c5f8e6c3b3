"""Counter-based uniforms (exact splitmix64, row independence) and the inverse-CDF nucleus sampler."""

from __future__ import annotations

import torch

from bt_assets.lib.sampling import _topk_sorted, sample_logits, stable_key, uniforms

M64 = (1 << 64) - 1


def ref_mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def ref_uniform(seed: int, key: int, sample: int, step: int) -> float:
    h = ref_mix(seed & M64)
    for v in (key, sample, step):
        h = ref_mix(h ^ (v & M64))
    return (h >> 11) / 2.0**53


def test_uniforms_match_python_splitmix64():
    keys = [0, 1, stable_key("gsm8k-17"), (1 << 63) - 1, 12345678901234567]
    samples = [0, 3, 1, 7, 2]
    for seed, step in [(0, 0), (42, 5), (2**40 + 3, 127)]:
        got = uniforms(seed, torch.tensor(keys), torch.tensor(samples), step)
        assert got.dtype == torch.float64
        assert got.tolist() == [ref_uniform(seed, k, s, step) for k, s in zip(keys, samples, strict=True)]


def test_uniforms_are_per_row():
    keys, samples = torch.arange(50) * 7919, torch.arange(50) % 4
    u = uniforms(3, keys, samples, 9)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(uniforms(3, keys[perm], samples[perm], 9), u[perm])
    assert torch.equal(uniforms(3, keys[:1], samples[:1], 9), u[:1])
    assert torch.equal(uniforms(3, keys, samples, torch.full((50,), 9)), u)
    assert torch.equal(uniforms(3, keys.tolist(), samples.tolist(), 9), u)
    for other in (
        uniforms(4, keys, samples, 9),
        uniforms(3, keys + 1, samples, 9),
        uniforms(3, keys, samples + 1, 9),
        uniforms(3, keys, samples, 10),
    ):
        assert not torch.isclose(other, u).any()


def test_uniforms_look_uniform():
    u = uniforms(7, torch.arange(20000), torch.zeros(20000, dtype=torch.long), 0)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert ((counts - 2000).abs() < 200).all()


def test_stable_key():
    assert stable_key("a") == stable_key("a") != stable_key("b")
    assert stable_key(17) == stable_key("17")
    assert all(0 <= stable_key(i) < 2**63 for i in range(100))


def test_greedy_and_degenerate_filters():
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    u = torch.rand(5, dtype=torch.float64)
    best = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, u, 0.0, 0.9, 64), best)
    assert torch.equal(sample_logits(logits, u, 1.0, 1.0, 1), best)
    assert torch.equal(sample_logits(logits, u, 1.0, 1e-9, 0), best)
    assert torch.equal(sample_logits(logits.half(), u, 0.0, 1.0, 0), logits.half().float().argmax(-1))


def test_inverse_cdf_frequencies_match_nucleus():
    logits = torch.tensor([[2.0, 0.5, 1.0, -1.0, 1.5, 0.0]])
    n = 4000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # a grid: exact quantiles
    picks = sample_logits(logits.expand(n, -1), u, 1.0, 0.8, 5)
    p = torch.softmax(logits[0], -1)
    order = p.argsort(descending=True)
    nucleus = order[: int(((p[order].cumsum(0) - p[order]) < 0.8).sum())]  # [0, 4, 2]
    assert sorted(nucleus.tolist()) == [0, 2, 4]
    freq = torch.bincount(picks, minlength=6).double() / n
    want = torch.zeros(6, dtype=torch.float64)
    want[nucleus] = (p[nucleus] / p[nucleus].sum()).double()
    assert (freq - want).abs().max() < 1e-3
    # the CDF runs over the nucleus in token-id order: small u -> smallest id
    assert picks[0] == 0 and picks[-1] == 4


def test_temperature_flattens():
    logits = torch.tensor([[3.0, 0.0]])
    u = torch.tensor([0.9], dtype=torch.float64)
    assert sample_logits(logits, u, 1.0, 1.0, 0).item() == 0  # p0 = 0.95 > 0.9
    assert sample_logits(logits, u, 10.0, 1.0, 0).item() == 1  # p0 = 0.57


def test_ties_and_edges_are_deterministic():
    flat = torch.zeros(2, 100)
    u = torch.tensor([0.0, 0.95], dtype=torch.float64)
    assert sample_logits(flat, u, 1.0, 1.0, 10).tolist() == [0, 9]  # tied top-k = lowest ids
    assert sample_logits(flat, u, 1.0, 0.345, 0).tolist() == [0, 33]  # nucleus: the 35 lowest ids
    ones_minus = torch.tensor([1 - 2.0**-53], dtype=torch.float64)
    logits = torch.tensor([[0.0, 5.0, 0.0, 4.0, -9.0]])
    assert sample_logits(logits, ones_minus, 1.0, 0.9, 0).item() == 3  # last nucleus token, never beyond
    assert sample_logits(logits, torch.zeros(1, dtype=torch.float64), 1.0, 0.9, 0).item() == 1


def test_rows_are_independent():
    logits = torch.randn(8, 1000, generator=torch.Generator().manual_seed(1))
    u = torch.rand(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    batch = sample_logits(logits, u, 0.7, 0.95, 64)
    single = torch.cat([sample_logits(logits[i : i + 1], u[i : i + 1], 0.7, 0.95, 64) for i in range(8)])
    assert torch.equal(batch, single)


def reference_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: float32 logits / T stably sorted by value (ties: ascending id), first k."""
    vals, ids = torch.sort(logits.float() / temperature, dim=-1, descending=True, stable=True)
    return vals[:, :k], ids[:, :k]


def test_topk_candidates_equal_a_full_sort_under_ties():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 700, generator=g) * 4
    zeros = torch.randn(6, 700, generator=g)
    zeros[:, ::3], zeros[:, 1::7] = 0.0, -0.0  # +0 and -0 tie
    cases = {
        "bf16": base.bfloat16(),  # few distinct values: many ties at the k-th
        "half": base.half(),
        "coarse": (base * 2).round() / 2,  # >2k tokens tie at the k-th: full-vocabulary fallback
        "zeros": zeros,
        "scaled_ties": base * 1e-4 + 100.0,  # distinct raw values that tie after / T
    }
    for name, logits in cases.items():
        for k in (1, 5, 64, 351, 700):
            for temperature in (0.3, 0.7, 1.0, 1.7):
                vals, ids = _topk_sorted(logits, k, temperature)
                want_vals, want_ids = reference_topk(logits, k, temperature)
                assert torch.equal(ids, want_ids), (name, k, temperature)
                assert torch.equal(vals, want_vals), (name, k, temperature)
