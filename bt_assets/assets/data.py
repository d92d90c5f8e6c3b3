"""Data stage: the problem set and the exact prompt text per (variant, problem)."""

import dagster as dg
import polars as pl

from bt_assets.assets import wiring as w
from bt_assets.config import Profile, resolve_path
from bt_assets.lib import problems as problems_lib
from bt_assets.lib.prompts import identical_variant_pairs, prompt_table, tokens_by_variant
from bt_assets.lib.synthetic import synthetic_problems


def build(profile: Profile) -> list:
    ds, p = profile.dataset, profile.prompting

    @dg.asset(**w.cpu_asset("data"))
    def problems() -> dg.MaterializeResult[pl.DataFrame]:
        """Problem set (id, question, rationale, gold answer): synthetic, a local JSONL, or HF datasets."""
        if ds.source == "synthetic":
            df = synthetic_problems(ds.n, ds.seed)
        elif ds.source == "jsonl":
            df = problems_lib.load_jsonl(resolve_path(ds.path)).head(ds.n)
        else:
            df = problems_lib.load_hf(ds.hf_id, ds.hf_config, ds.split, ds.n, ds.shuffle, ds.seed)
        preview = w.table_md(df.select("id", "answer_value"), 10)
        return w.materialized(profile, df, source=ds.source, n=df.height, preview=preview)

    @dg.asset(**w.cpu_asset("data"))
    def prompts(model: w.HookedModel, problems: pl.DataFrame) -> dg.MaterializeResult[pl.DataFrame]:
        """Exact prompt text per (variant, problem) with its token count and hash."""
        df = prompt_table(
            problems, w.variants(profile), w.prompt_style(profile), model.tokenizer, profile.model.add_bos
        )
        return w.materialized(
            profile,
            df,
            rows=df.height,
            prompt_mode=p.mode,
            chat_template=p.chat_template,
            tokens_by_variant=w.table_md(tokens_by_variant(df)),
            example=dg.MetadataValue.md(f"```\n{df['prompt'][0]}\n```"),
        )

    @dg.asset_check(asset=prompts)
    def variants_distinct(prompts: pl.DataFrame) -> dg.AssetCheckResult:
        """No two variants render byte-identical prompts for every problem (B10)."""
        same = identical_variant_pairs(prompts)
        return dg.AssetCheckResult(
            passed=not same,
            metadata={"identical_pairs": str(same) if same else "none"},
            description="two variants render byte-identical prompts (B10)" if same else "all variants differ",
        )

    if profile.phase1.import_dir is not None:  # an imported run brings its own completions' events
        return [problems]
    return [problems, prompts, variants_distinct]
