"""A real browser (Debian chromium via Playwright) walks the story flow of the --tiny app and saves screenshots.

Screenshots go to $AAS_SCREENSHOT_DIR (e.g. docs/screenshots to refresh the README's) or a temp folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.test_app import Server, media, server  # noqa: F401 - shared session fixtures (one app server per session)

CHROMIUM = Path("/usr/bin/chromium")
STEP_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium chromium-driver")


def test_story_flow_in_a_real_browser(server: Server, media: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """Photos -> cancelled and finished training -> sample clips -> search -> pick -> depth -> two shots -> stitch -> a playable <video> -> new seed -> compare."""
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("AAS_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(STEP_TIMEOUT_MS)
        expect = sync_api.expect
        expect.set_options(timeout=STEP_TIMEOUT_MS)
        page.goto(server.url)
        expect(page.locator("#tiny-banner")).to_contain_text("Workflow preview")

        def tab(name: str) -> None:
            page.get_by_role("tab", name=name).click()

        def fill(elem_id: str, text: str) -> None:
            page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)

        # 1. Characters: upload photos; a long training is cancelled, then a short one finishes.
        page.locator("#char-photos input[type=file]").set_input_files([str(p) for p in media["photos"]])
        fill("char-name", "hero")
        fill("char-class", "boy")
        fill("char-steps", "5000")
        page.locator("#char-train").click()
        expect(page.locator("#char-status")).to_contain_text("step")
        page.get_by_role("button", name="Cancel").first.click()
        expect(page.get_by_text("stopped at step").first).to_be_visible()
        page.locator(".toast-close").first.click()  # keep the screenshots clean
        fill("char-steps", "4")
        page.locator("#char-train").click()
        expect(page.locator("#char-status")).to_contain_text("Saved")
        expect(page.locator("#char-gallery")).to_contain_text("<hero>")
        page.screenshot(path=str(shots / "1-characters.png"), full_page=True)

        # 2. Clip Library: index the sample clips, search, pick a hit.
        tab("Clip Library")
        page.locator("#library-samples").click()
        expect(page.locator("#library-summary")).to_contain_text("shots")
        fill("library-query", "a red ball rolling to the right")
        page.locator("#library-search").click()
        first_hit = page.locator("#library-hits img").first
        first_hit.wait_for()
        first_hit.click()
        expect(page.locator("#library-chosen")).to_contain_text("Selected")
        page.screenshot(path=str(shots / "2-clip-library.png"), full_page=True)

        # 3. Motion Structure: depth of the picked hit.
        tab("Motion Structure")
        expect(page.locator("#depth-source")).to_contain_text("Source:")
        page.locator("#depth-run").click()
        expect(page.locator("#depth-flicker")).to_contain_text("Flicker")
        page.locator("#depth-video video").wait_for()
        page.screenshot(path=str(shots / "3-motion-structure.png"), full_page=True)

        # 4. Story: draft two shots, generate both, stitch.
        tab("Story")
        fill("story-title", "The kite")
        fill("story-text", "a red ball rolling | <hero> kicks a red ball | Kick-off\na kite drifting left | a kite over the hills | Away")
        page.locator("#story-draft").click()
        expect(page.locator("#story-table")).to_contain_text("shot-02")
        page.get_by_role("button", name="Find candidate clips").click()
        page.locator("#story-candidates img").first.click()
        expect(page.locator("#story-table tr", has_text="shot-01")).to_contain_text(".mp4@")
        page.locator("#story-generate-all").click()
        expect(page.locator("#story-status tr", has_text="shot-02")).to_contain_text("generated")
        page.locator("#story-stitch").click()
        expect(page.locator("#story-status tr", has_text="shot-02")).to_contain_text("cached")
        video = page.locator("#story-final video")
        video.wait_for()
        src = video.get_attribute("src")
        assert src and ".mp4" in src
        page.wait_for_function("document.querySelector('#story-final video').readyState >= 1", timeout=30_000)
        duration = page.evaluate("document.querySelector('#story-final video').duration")
        assert duration > 1.0
        response = page.request.get(src if src.startswith("http") else server.url.rstrip("/") + src)
        assert response.status == 200 and len(response.body()) > 1000
        page.screenshot(path=str(shots / "4-story.png"), full_page=True)

        # 5. Regenerate shot-01 with a new seed: its seed cell changes and it is generated again.
        page.get_by_role("button", name="Regenerate with a new seed").click()
        expect(page.locator("#story-table tr", has_text="shot-01")).to_contain_text("1")
        expect(page.locator("#story-status tr", has_text="shot-01")).to_contain_text("generated")

        # 6. Compare: the picked clip under two strengths, one grid video and a metrics row each.
        tab("Compare")
        expect(page.locator("#compare-source")).to_contain_text("Clip:")
        page.locator("#compare-run").click()
        expect(page.locator("#compare-metrics")).to_contain_text("strength 0.3")
        page.locator("#compare-video video").wait_for()
        page.screenshot(path=str(shots / "5-compare.png"), full_page=True)
        sessions_root = server.scratch / "tmp" / "aas-sessions"
        before = {p.name for p in sessions_root.glob("run-*/*")}
        browser.close()
    # Closing the tab unloads the session: its private folder goes away.
    deadline = time.monotonic() + 30
    while {p.name for p in sessions_root.glob("run-*/*")} == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len({p.name for p in sessions_root.glob("run-*/*")}) == len(before) - 1
