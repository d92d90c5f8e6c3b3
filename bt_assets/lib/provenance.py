"""What made an output: code version, profile hash, seeds, hardware (recorded with every materialization)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """Git commit of the working tree (``+dirty`` when it has uncommitted changes), else ``unknown``."""
    env = os.environ.get("BT_CODE_VERSION")
    if env:
        return env
    try:
        sha = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def _git(*args: str) -> str:
    """Output of a git command in the repository (raises on failure or after 10 s)."""
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, text=True, capture_output=True, check=True, timeout=10
    )
    return done.stdout.strip()


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def software() -> str:
    import transformers

    py = platform.python_version()
    return f"torch {torch.__version__}, transformers {transformers.__version__}, python {py}"
