"""Asset modules, one per stage; each exposes ``build(profile)`` returning its definitions."""

import warnings

import dagster as dg

# BackfillPolicy.single_run() on the generation assets is what makes a backfill one run; dagster marks
# the parameter beta, and the warning would repeat on every definitions load.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
