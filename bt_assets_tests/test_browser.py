"""The Dagster UI in a real browser (Debian's chromium driven by Playwright; no downloaded browser build):
the asset graph, a figure asset's inline preview and its upstream lineage, the re-analysed original run's
figure with its lineage to the imported events (second code location), and a materialization launched
by clicking "Materialize" that runs to success.

Screenshots go to the test's tmp dir and to ``.test-artifacts/browser/`` (git-ignored). Without chromium the
test fails under CI (``CI`` set: ``make test`` installs it) and is skipped elsewhere."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from bt_assets_tests.conftest import ROOT, unavailable
from bt_assets_tests.server import DagsterServer

pytest_plugins = ["bt_assets_tests.server"]
pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / ".test-artifacts" / "browser"
FIGURE = "fig_logit_lens"
# upstream of the figure: logit_lens <- event_sample <- baseline_events <- phase1_generations <- prompts
# <- problems, and logit_lens <- prompts
UPSTREAM = ["logit_lens", "event_sample", "baseline_events", "phase1_generations", "prompts", "problems"]
ORIGINAL_FIGURE = "original_run/fig_accuracy_by_bt"  # the second code location's figure
ORIGINAL_UPSTREAM = ["fig_accuracy_by_bt", "metrics_corrected", "phase1_events", "problems"]
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) {
  ... on Run { status assetSelection { path } assetMaterializations { assetKey { path } } } } }"""
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000


def find_chromium() -> str | None:
    """``BT_CHROMIUM`` if set (a path), else ``chromium`` (Debian) or ``chromium-browser`` on PATH."""
    explicit = os.environ.get("BT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system chromium's path; checked before the (slow) server starts."""
    path = find_chromium()
    if not path:
        unavailable("no system chromium (neither BT_CHROMIUM nor `chromium` on PATH); `sudo make test-deps`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    return path


@pytest.fixture
def page(chromium, tmp_path):
    """A headless chromium page; its screenshots land in ``tmp_path/screenshots`` and, at the end, in
    ``.test-artifacts/browser/``."""
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        # Dagster's "Join the Dagster community" dialog covers the page on a first visit: dismiss it
        # whenever it shows up before an action or assertion
        page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda loc: loc.click())
        page.shots = shots  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            for png in shots.glob("*.png"):
                shutil.copy(png, ARTIFACTS / png.name)
            context.close()
            browser.close()


def snap(page, name: str) -> Path:
    path = page.shots / f"{name}.png"
    page.screenshot(path=path)
    return path


# the box of the graph's visible area: the nearest ancestor of the graph's <svg> that clips it
VISIBLE_FRAME_JS = """svg => {
  let n = svg.parentElement;
  while (n && getComputedStyle(n).overflow !== "hidden") n = n.parentElement;
  const r = (n || document.documentElement).getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height};
}"""


def inside(locator, frame: dict) -> bool:
    """Whether ``locator``'s element is rendered within the box ``frame`` (x, y, width, height)."""
    box = locator.bounding_box() if locator.count() else None
    return bool(
        box
        and box["x"] >= frame["x"]
        and box["y"] >= frame["y"]
        and box["x"] + box["width"] <= frame["x"] + frame["width"]
        and box["y"] + box["height"] <= frame["y"] + frame["height"]
    )


def settle(page, locators, timeout_ms: int = 10_000) -> None:
    """Wait until the elements stop moving (the graph animates pans and zooms)."""
    last = None
    for _ in range(timeout_ms // 300):
        now = [loc.bounding_box() if loc.count() else None for loc in locators]
        if now == last:
            return
        last = now
        page.wait_for_timeout(300)


def test_ui_graph_preview_lineage_and_materialize(chromium, bt_server: DagsterServer, page):
    try:
        check_ui(bt_server, page)
    except BaseException:
        snap(page, "99_failure")
        raise


def check_ui(bt_server: DagsterServer, page) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    # 1. the asset graph: every group of the location is drawn
    page.goto(f"{bt_server.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    with contextlib.suppress(PlaywrightTimeout):  # the first-visit dialog: gone before the screenshot
        nux = page.get_by_role("button", name="Skip", exact=True)
        nux.wait_for(state="visible", timeout=10_000)
        nux.click()
    graph = page.locator("foreignObject")  # the graph's nodes
    for group in ("data", "generation", "events", "analysis", "phase2", "reports"):
        expect(graph.get_by_text(group, exact=True).first, f"group {group}").to_be_visible()
    snap(page, "01_asset_graph")

    # 2. a figure asset: its "preview" metadata renders the PNG (base64 <img>) from the markdown
    page.goto(f"{bt_server.url}/assets/{FIGURE}")
    expect(page.get_by_text(FIGURE, exact=True).first).to_be_visible()
    expect(page.get_by_text("preview", exact=True)).to_be_visible()
    page.get_by_text("[Show Markdown]").click()
    img = page.locator('img[src^="data:image/png;base64,"]')
    expect(img).to_have_count(1)
    expect(img).to_be_visible()
    expect(img).to_have_attribute("alt", FIGURE)
    width, height = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert width > 200 and height > 100, (width, height)  # a decoded picture, not a broken image
    snap(page, "02_figure_preview")
    page.keyboard.press("Escape")
    expect(img).to_have_count(0)

    # 3. its upstream lineage, all levels: the figure's data back to the problem set
    page.goto(f"{bt_server.url}/assets/{FIGURE}?view=lineage")
    page.get_by_role("button", name="Upstream").click()
    page.get_by_role("button", name="All", exact=True).click()
    expect(page).to_have_url(re.compile(r"lineageScope=upstream"))
    graph = page.locator("foreignObject")  # the lineage graph's nodes (not the page header)
    nodes = {
        key: graph.get_by_text(key, exact=True).filter(visible=True).first for key in [FIGURE, *UPSTREAM]
    }
    expect(nodes["logit_lens"]).to_be_visible()
    frame = page.locator("svg:has(foreignObject)").evaluate(VISIBLE_FRAME_JS)
    zoom_out = page.get_by_role("button", name="zoom_out")
    for _ in range(15):  # zoom out until the whole upstream graph is on screen, then once more (margin)
        settle(page, nodes.values())
        done = all(inside(n, frame) for n in nodes.values())
        zoom_out.click()
        if done:
            break
    settle(page, nodes.values())
    for key, node in nodes.items():
        expect(node, f"lineage node {key}").to_be_visible()
        assert inside(node, frame), f"lineage node {key} is off screen"
    snap(page, "03_upstream_lineage")

    # 4. the second code location: an original-run figure's upstream lineage back to the imported events
    page.goto(f"{bt_server.url}/assets/{ORIGINAL_FIGURE}?view=lineage")
    page.get_by_role("button", name="Upstream").click()
    page.get_by_role("button", name="All", exact=True).click()
    graph = page.locator("foreignObject")
    for key in ORIGINAL_UPSTREAM:  # a node shows its key (``original_run/<name>``) or just the name
        node = graph.get_by_text(re.compile(rf"(^|/){key}$")).filter(visible=True).first
        expect(node, f"original run: {key}").to_be_visible()
    snap(page, "04_original_run_lineage")

    # 5. "Materialize" on a small asset launches a run (queued, then run by the daemon) that succeeds
    page.goto(f"{bt_server.url}/assets/problems")
    materialize = page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize\s*$"))
    expect(materialize).to_be_enabled()
    materialize.click()
    toast = page.get_by_text(re.compile(r"Launched run"))
    expect(toast).to_be_visible()
    snap(page, "05_materialize_launched")
    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(status).to_have_text("Success")
    snap(page, "06_run_success")

    run = bt_server.gql(RUN_STATUS, {"id": run_id})["runOrError"]
    assert run["status"] == "SUCCESS", run
    assert run["assetSelection"] == [{"path": ["problems"]}]
    assert {"problems"} == {"/".join(m["assetKey"]["path"]) for m in run["assetMaterializations"]}
