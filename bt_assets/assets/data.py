"""Data stage: the problem set and the exact prompt text per (variant, problem)."""

import dagster as dg
import polars as pl

from bt_assets.assets.common import provenance_metadata, table_md
from bt_assets.config import Profile, resolve_path
from bt_assets.lib import problems as problems_lib
from bt_assets.lib.prompts import PromptStyle, Variant, identical_variant_pairs, prompt_table
from bt_assets.resources import HookedModel


def build(profile: Profile) -> list:
    ds = profile.dataset

    @dg.asset(group_name="data", kinds={"polars"}, io_manager_key="io_manager")
    def problems(context: dg.AssetExecutionContext) -> pl.DataFrame:
        """Problem set (id, question, rationale, gold answer): synthetic, a local JSONL, or HF datasets."""
        if ds.source == "synthetic":
            df = problems_lib.synthetic_problems(ds.n, ds.seed)
        elif ds.source == "jsonl":
            df = problems_lib.load_jsonl(resolve_path(ds.path)).head(ds.n)
        else:
            df = problems_lib.load_hf(ds.hf_id, ds.hf_config, ds.split, ds.n, ds.shuffle, ds.seed)
        context.add_output_metadata(
            provenance_metadata(
                profile, source=ds.source, n=df.height, preview=table_md(df.select("id", "answer_value"), 10)
            )
        )
        return df

    @dg.asset(
        group_name="data",
        kinds={"polars"},
        io_manager_key="io_manager",
        check_specs=[dg.AssetCheckSpec("variants_distinct", asset="prompts")],
    )
    def prompts(context: dg.AssetExecutionContext, model: HookedModel, problems: pl.DataFrame):
        """Exact prompt text per (variant, problem) with its token count and hash."""
        p = profile.prompting
        style = PromptStyle(
            template=p.template, system_prompt=p.system_prompt, chat_template=p.chat_template, mode=p.mode
        )
        variants = [Variant(v.name, v.think_open, v.think_close, tuple(v.drop_lines)) for v in p.variants]
        df = prompt_table(
            problems, variants, style, model.tokenizer, add_special_tokens=profile.model.add_bos
        )
        same = identical_variant_pairs(df)
        tokens = df.group_by("variant", maintain_order=True).agg(
            pl.col("prompt_tokens").mean().alias("mean_tokens")
        )
        yield dg.Output(
            df,
            metadata=provenance_metadata(
                profile,
                rows=df.height,
                prompt_mode=p.mode,
                chat_template=p.chat_template,
                tokens_by_variant=table_md(tokens),
                example=dg.MetadataValue.md(f"```\n{df['prompt'][0]}\n```"),
            ),
        )
        yield dg.AssetCheckResult(
            check_name="variants_distinct",
            passed=not same,
            metadata={"identical_pairs": str(same) if same else "none"},
            description="two variants render byte-identical prompts (B10)" if same else "all variants differ",
        )

    return [problems, prompts]
