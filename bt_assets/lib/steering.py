"""Steering vectors: the residual-stream direction that separates backtracking onsets from controls.

For every probe of the event sample (``onset_analysis.event_sample``: BT events and their position-matched
non-BT controls, teacher-forced as ``teacher.Event``) the residual stream is read at ``pred_pos`` (the
position whose logits predict the onset token) at the OUTPUT of each decoder layer: exactly where the
``steer`` intervention adds its vector (``intervention_hooks``; HF's last ``hidden_states`` entry is
post-norm, so it is not used). Per layer:

- the problems are split, seeded, into a training and a held-out part (events of one problem are
  correlated, so a problem's probes stay on one side);
- v = mean(BT) - mean(control) over the training probes, normalised to unit length;
- the held-out AUC of the projection <h, v>: P(a held-out BT probe projects above a held-out control),
  ties counting 1/2 (Mann-Whitney U / (n_bt x n_control)); the training AUC beside it;
- ``act_norm_mean``: the mean L2 norm of the residual stream at that layer over all probes (BT and
  control): ``alpha`` is in these units, so alpha = 1 adds a vector as long as a typical activation.

The layer is the one with the best held-out AUC (``choose_layer``), or fixed in the profile.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import polars as pl
import torch

from bt_assets.lib.hooks import decoder_layers
from bt_assets.lib.stats import problem_of
from bt_assets.lib.teacher import Event

STEERING_SCHEMA = {
    "layer": pl.Int64,
    "auc_heldout": pl.Float64,
    "auc_train": pl.Float64,
    "n_bt_train": pl.Int64,
    "n_control_train": pl.Int64,
    "n_bt_heldout": pl.Int64,
    "n_control_heldout": pl.Int64,
    "diff_norm": pl.Float64,
    "act_norm_mean": pl.Float64,
    "vector": pl.List(pl.Float32),
}


@torch.inference_mode()
def residuals_at(model: torch.nn.Module, events: Sequence[Event], batch_size: int = 8) -> torch.Tensor:
    """(E, L, d) float32: the residual stream at each event's ``pred_pos`` after every decoder layer
    (teacher-forced ``ids[:pred_pos + 1]``, right-padded: no position <= pred_pos sees a pad)."""
    layers = decoder_layers(model)
    dev = next(model.parameters()).device
    out = torch.empty(len(events), len(layers), model.config.hidden_size)
    grabbed: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, o: grabbed.append(o[0] if isinstance(o, tuple) else o))
        for layer in layers
    ]
    try:
        for start in range(0, len(events), batch_size):
            chunk = events[start : start + batch_size]
            width = max(e.pred_pos + 1 for e in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(chunk):
                ids[i, : e.pred_pos + 1] = torch.tensor(e.ids[: e.pred_pos + 1])
                mask[i, : e.pred_pos + 1] = 1
            grabbed.clear()
            model(ids.to(dev), attention_mask=mask.to(dev), logits_to_keep=1)
            rows = torch.arange(len(chunk), device=dev)
            pos = torch.tensor([e.pred_pos for e in chunk], device=dev)
            for li, h in enumerate(grabbed):
                out[start : start + len(chunk), li] = h[rows, pos].float().cpu()
    finally:
        for h in handles:
            h.remove()
    return out


def heldout_problems(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The held-out problems: a seeded ``ceil(fraction x G)`` of the G problems of ``keys`` (at most
    G - 1, none when G < 2); ``stats.problem_of`` reads each event key's problem."""
    problems = sorted({problem_of(k) for k in keys})
    if len(problems) < 2:
        return set()
    n = min(len(problems) - 1, max(1, math.ceil(fraction * len(problems))))
    return set(random.Random(seed).sample(problems, n))


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties 1/2 (Mann-Whitney U over n_pos x n_neg);
    nan when either side is empty."""
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    diff = pos.double().view(-1, 1) - neg.double().view(1, -1)
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def diff_of_means(bt: torch.Tensor, control: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(unit vector, norm of the raw difference) of mean(bt) - mean(control) over rows (n, d)."""
    diff = bt.double().mean(0) - control.double().mean(0)
    norm = float(diff.norm())
    return (diff / norm if norm > 0 else diff).float(), norm


def steering_table(
    bt: torch.Tensor,
    control: torch.Tensor,
    bt_keys: Sequence[str],
    control_keys: Sequence[str],
    heldout_fraction: float,
    seed: int,
) -> pl.DataFrame:
    """One row per layer (``STEERING_SCHEMA``) from residuals ``bt`` (n, L, d) and ``control`` (m, L, d)
    (``residuals_at``) and the probes' event keys: the unit difference-of-means vector fit on the
    training problems, its training and held-out AUC, and the layer's mean activation norm."""
    held = heldout_problems([*bt_keys, *control_keys], heldout_fraction, seed)
    bt_test = torch.tensor([problem_of(k) in held for k in bt_keys], dtype=torch.bool)
    ctl_test = torch.tensor([problem_of(k) in held for k in control_keys], dtype=torch.bool)
    if not (~bt_test).any() or not (~ctl_test).any():
        raise ValueError(
            f"steering needs BT and control probes outside the held-out problems ({bt.shape[0]} BT, "
            f"{control.shape[0]} control probes; held out {sorted(held)})"
        )
    norms = torch.cat([bt, control]).double().norm(dim=-1).mean(0)  # (L,)
    rows = []
    for layer in range(bt.shape[1]):
        v, raw = diff_of_means(bt[~bt_test, layer], control[~ctl_test, layer])
        proj_bt, proj_ctl = bt[:, layer] @ v, control[:, layer] @ v
        rows.append(
            {
                "layer": layer,
                "auc_heldout": auc(proj_bt[bt_test], proj_ctl[ctl_test]),
                "auc_train": auc(proj_bt[~bt_test], proj_ctl[~ctl_test]),
                "n_bt_train": int((~bt_test).sum()),
                "n_control_train": int((~ctl_test).sum()),
                "n_bt_heldout": int(bt_test.sum()),
                "n_control_heldout": int(ctl_test.sum()),
                "diff_norm": raw,
                "act_norm_mean": float(norms[layer]),
                "vector": v.tolist(),
            }
        )
    return pl.DataFrame(rows, schema=STEERING_SCHEMA)


def steering_vectors(
    model: torch.nn.Module,
    bt: Sequence[Event],
    control: Sequence[Event],
    heldout_fraction: float,
    seed: int,
    batch_size: int = 8,
) -> pl.DataFrame:
    """``steering_table`` of the model's residuals at the BT and control probes (the asset's body)."""
    return steering_table(
        residuals_at(model, bt, batch_size),
        residuals_at(model, control, batch_size),
        [e.key for e in bt],
        [e.key for e in control],
        heldout_fraction,
        seed,
    )


def choose_layer(table: pl.DataFrame, layer: int | str, where: str) -> int:
    """``layer`` when fixed (it must be a row of ``table``); for "auto" the layer of the best held-out
    AUC (ties: the lower layer). Fails naming ``where`` when there is no such layer or no held-out AUC."""
    layers = table["layer"].to_list()
    if layer != "auto":
        if int(layer) not in layers:
            raise ValueError(
                f"{where}: layer {layer} has no steering vector (layers {min(layers)}..{max(layers)})"
            )
        return int(layer)
    scored = table.filter(pl.col("auc_heldout").is_not_nan() & pl.col("auc_heldout").is_not_null())
    if scored.height == 0:
        raise ValueError(
            f"{where}: 'auto' needs a held-out AUC, and the held-out problems lack BT or control probes; "
            "fix the layer in the profile"
        )
    return int(scored.sort(["auc_heldout", "layer"], descending=[True, False])["layer"][0])
