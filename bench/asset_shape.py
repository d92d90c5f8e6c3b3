"""Measures the shape of the asset layer (issue 12): body length of every asset/check function (lines
after the docstring), the largest module, and imports between asset modules.

    python bench/asset_shape.py [REPO]   # default: this checkout
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
ASSETS = ROOT / "bt_assets" / "assets"


def decorated(fn: ast.FunctionDef, names: tuple[str, ...]) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr in names:
            return True
    return False


def body_lines(fn: ast.FunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring
    return (body[-1].end_lineno - body[0].lineno + 1) if body else 0


def main() -> int:
    sizes: dict[str, int] = {}
    imports: list[str] = []
    for path in sorted(ASSETS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and decorated(node, ("asset", "asset_check")):
                sizes[f"{path.stem}.{node.name}"] = body_lines(node)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bt_assets.assets"):
                names = [a.name for a in node.names]
                if node.module != "bt_assets.assets" or names != ["wiring"]:
                    imports.append(f"{path.stem}: from {node.module} import {', '.join(names)}")
    modules = {p: len(p.read_text().splitlines()) for p in (ROOT / "bt_assets").rglob("*.py")}
    largest = max(modules, key=modules.get)
    print(
        f"asset/check bodies: {len(sizes)}, median {statistics.median(sizes.values())} lines, "
        f"max {max(sizes.values())} ({max(sizes, key=sizes.get)})"
    )
    print(f"largest module: {largest.relative_to(ROOT)} ({modules[largest]} lines)")
    print("asset modules importing another asset module (other than wiring):", imports or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
