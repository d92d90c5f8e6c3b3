"""Which events and layers the analysis looks at: random event samples, top-k and random layer sets."""

from __future__ import annotations

import random
from collections.abc import Sequence

import polars as pl


def sample_events(bt_rows: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A uniform random sample of BT events across ALL problems (the original took the first 120 in file
    order, all from problems 0-29: B19). Rows are keyed by (variant, example_id, sample_id), so events
    of several variants can be pooled. Sorted by those keys for stable output."""
    cols = ["variant", "example_id", "sample_id"]
    rows = list(zip(*(bt_rows[c].to_list() for c in cols), strict=True)) if bt_rows.height else []
    chosen = set(random.Random(seed).sample(sorted(rows), min(n, len(rows))))
    mask = pl.Series([r in chosen for r in rows], dtype=pl.Boolean)
    return bt_rows.filter(mask).sort(cols)


def match_controls(events: pl.DataFrame, non_bt: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Position-matched controls: for each event with onset offset k (tokens into the completion), an
    unused random non-BT completion whose TRUE length exceeds k (B7), probed at the same offset and
    scored on the event's own onset token (B8). Columns: the control row + event keys + pred_pos/target."""
    pool = non_bt.sample(fraction=1.0, shuffle=True, seed=seed) if non_bt.height else non_bt
    used: set[int] = set()
    lengths = pool["completion_tokens"].to_list() if pool.height else []
    out = []
    for ev in events.iter_rows(named=True):
        k = ev["onset_token_in_completion"]
        for j, length in enumerate(lengths):
            if j not in used and k > 0 and length > k:
                used.add(j)
                ctl = pool.row(j, named=True)
                out.append(
                    {
                        "control_variant": ctl["variant"],
                        "control_example_id": ctl["example_id"],
                        "control_sample_id": ctl["sample_id"],
                        "event_variant": ev["variant"],
                        "event_example_id": ev["example_id"],
                        "event_sample_id": ev["sample_id"],
                        "offset": k,
                        "pred_pos": ctl["prompt_tokens"] + k - 1,
                        "target": ev["onset_token_id"],
                    }
                )
                break
    schema = {
        "control_variant": pl.String,
        "control_example_id": pl.Int64,
        "control_sample_id": pl.Int64,
        "event_variant": pl.String,
        "event_example_id": pl.Int64,
        "event_sample_id": pl.Int64,
        "offset": pl.Int64,
        "pred_pos": pl.Int64,
        "target": pl.Int64,
    }
    return pl.DataFrame(out, schema=schema)


def select_layers(
    scan: pl.DataFrame, components: Sequence[str], k: int, statistic: str, require_negative: bool
) -> dict[str, list[int]]:
    """Top-k layers per component by the mean of ``statistic`` (most negative first = ablating it
    lowers the onset token most); optionally only layers whose mean effect is negative."""
    col = f"{statistic}_mean"
    out = {}
    for comp in components:
        rows = scan.filter(pl.col("component") == comp).sort(col, "layer")
        if require_negative:
            rows = rows.filter(pl.col(col) < 0)
        out[comp] = [int(x) for x in rows["layer"].head(k)]
    return out


def random_layers(selected: dict[str, list[int]], n_layers: int, seeds: Sequence[int]) -> dict[str, dict]:
    """Shape-matched random controls per seed: for each component as many layers as selected, drawn
    from the layers NOT selected for any component (as the original), without replacement within a
    seed. Every seed's draw is returned (the original never saved its random layers).

    ``n_layers`` is the model's layer count, not the number of scanned layers: with ``analysis.layers``
    a subset, the controls still come from every layer the selection did not take."""
    taken = {layer for layers in selected.values() for layer in layers}
    if any(not 0 <= layer < n_layers for layer in taken):
        raise ValueError(f"selected layers {sorted(taken)} outside a {n_layers}-layer model")
    candidates = [layer for layer in range(n_layers) if layer not in taken]
    out = {}
    for seed in seeds:
        rng = random.Random(seed)
        pool = candidates[:]
        rng.shuffle(pool)
        draw, i = {}, 0
        for comp, layers in selected.items():
            need = len(layers)
            if need > len(pool) - i:
                pool, i = candidates[:], 0  # not enough disjoint layers: allow reuse across components
                rng.shuffle(pool)
            draw[comp] = sorted(pool[i : i + need])
            i += need
        out[str(seed)] = draw
    return out


def sample_note(counts: dict, seed: int, variant: str) -> str:
    """One line on what the event sample holds (or why the analysis stages will be empty)."""
    if not counts["bt_available"]:
        return (
            f"no BT events in the baseline of variant {variant} ({counts['n_completions']} completions): "
            "analysis stages will be empty"
        )
    return (
        f"{counts['n_bt']} of {counts['bt_available']} BT events sampled (seed {seed}), "
        f"{counts['n_control']} controls"
    )
