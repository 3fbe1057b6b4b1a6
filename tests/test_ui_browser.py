"""A real browser (Debian chromium via Playwright) on the --tiny --multi-user app: the one-click example, card reorder,
takes, a refused server path, cancel keeping outputs, a project round trip after reload, and the phone width.

Screenshots go to $AAS_SCREENSHOT_DIR (e.g. docs/screenshots to refresh the README's) or a temp folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_app import Server, media, server  # noqa: F401 - shared session fixtures (one app server per session)

CHROMIUM = Path("/usr/bin/chromium")
CARD = ".shot-card:not(.shot-card .shot-card)"
"""A card's outer frame (gradio puts the class on the group and its inner block)."""
STEP_TIMEOUT_MS = 120_000
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium")


def _open(p, url: str, width: int, height: int):
    browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(url)
    return browser, page


def _card_ids(page) -> list[str]:
    return [e.get_attribute("id").removeprefix("card-") for e in page.locator(CARD).all()]


def test_story_workflow_in_a_real_browser(server: Server, media: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """Example -> reorder -> new take -> a server path refused -> save, reload, load -> cancelled training keeps outputs
    -> search -> depth settings sent to a shot -> compare."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    shots = Path(os.environ.get("AAS_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser, page = _open(p, server.url, 1366, 768)
        expect(page.locator("#tiny-banner")).to_contain_text("Workflow preview")

        def fill(elem_id: str, text: str) -> None:
            page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)

        # 1. One click runs the example story end to end: three cards with a take each and a story video.
        page.get_by_role("tab", name="4. Story").click()
        page.locator("#story-example").click()
        page.locator("#story-final video").wait_for()
        expect(page.locator(CARD)).to_have_count(3)
        assert _card_ids(page) == ["shot-01", "shot-02", "shot-03"]
        page.screenshot(path=str(shots / "4-story.png"), full_page=True)

        # 2. Reorder: the first card moves down.
        page.locator("#card-shot-01 .card-down").first.click()
        page.wait_for_function("document.querySelector('.shot-card').id === 'card-shot-02'")
        assert _card_ids(page) == ["shot-02", "shot-01", "shot-03"]

        # 3. A new take of shot-02 is added beside its first one.
        page.locator("#story-shot input").fill("shot-02")
        page.locator("#story-shot input").press("Enter")
        page.locator("#story-new-take").click()
        expect(page.locator("#card-shot-02").first).to_contain_text("takes (2)")
        expect(page.locator("#card-shot-02").first).to_contain_text("take 2 of 2")

        # 4. A server path typed into a clip cell is refused naming only its base name; nothing is generated.
        clip_box = page.locator("#card-shot-03").first.get_by_label("clip (auto, a file name, or name@start-end)")
        clip_box.fill("/etc/hostname@0-1")
        clip_box.blur()
        page.locator("#story-shot input").fill("shot-03")
        page.locator("#story-shot input").press("Enter")
        page.locator("#story-generate").click()
        toast = page.get_by_text("hostname@").or_(page.get_by_text("hostname: not one of your uploads"))
        expect(toast.first).to_be_visible()
        assert "/etc" not in page.locator(".toast-body").first.inner_text()
        expect(page.locator("#story-final video")).to_have_count(1)  # the story video is still there
        clip_box.fill("bunny-yawns.mp4")
        clip_box.blur()

        # 5. Save the project, reload the page (a new session), load it back: title, text, settings, cards.
        page.locator("#story-settings").click()
        page.locator("#story-transition input").fill("cut")
        page.locator("#story-transition input").press("Enter")
        page.locator("#story-save").click()
        link = page.locator("#story-project-out a").first
        link.wait_for()
        with page.expect_download() as download:
            link.click()
        project = tmp_path / "project.yaml"
        download.value.save_as(project)
        assert "The bunny wakes up" in project.read_text()
        page.reload()
        page.get_by_role("tab", name="4. Story").click()
        expect(page.locator(CARD)).to_have_count(0)
        page.locator("#story-project-in input[type=file]").set_input_files(str(project))
        expect(page.locator(CARD)).to_have_count(3)
        assert _card_ids(page) == ["shot-02", "shot-01", "shot-03"]
        expect(page.locator("#story-title input, #story-title textarea").first).to_have_value("The bunny wakes up")
        assert page.locator("#story-text textarea").first.input_value().startswith("a rabbit comes out of its burrow")
        page.locator("#story-settings").click()
        expect(page.locator("#story-transition input")).to_have_value("cut")

        # 6. Characters: a short training finishes; a long one is cancelled and the saved character stays on screen.
        page.get_by_role("tab", name="3. Characters").click()
        page.locator("#char-sample").click()
        expect(page.locator("#char-name input, #char-name textarea").first).to_have_value("bunny")
        page.get_by_label("Train for best identity (TimeInv, slower)").check()
        fill("char-steps", "3")
        page.locator("#char-train").click()
        expect(page.locator("#char-status")).to_contain_text("Saved")
        expect(page.locator("#char-gallery")).to_contain_text("<bunny>")
        page.screenshot(path=str(shots / "3-characters.png"))
        fill("char-name", "longrun")
        fill("char-steps", "5000")
        page.locator("#char-train").click()
        expect(page.locator("#char-status")).to_contain_text("step")
        expect(page.locator("#char-train")).to_be_disabled()
        page.locator("#char-cancel").click()
        expect(page.get_by_text("Cancelling...").first).to_be_visible()
        expect(page.get_by_text("Cancelled - finished work kept").first).to_be_visible()
        expect(page.locator("#char-gallery")).to_contain_text("<bunny>")
        expect(page.locator("#char-train")).to_be_enabled()
        page.locator("#char-cancel").click()
        expect(page.get_by_text("Nothing is running to cancel.").first).to_be_visible()

        # 7. Clip Library, Motion Structure and Compare screenshots for the README.
        page.get_by_role("tab", name="1. Clip Library").click()
        page.locator("#library-samples").click()
        expect(page.locator("#library-summary")).to_contain_text("Indexed")
        fill("library-query", "a rabbit yawns")
        page.locator("#library-search").click()
        page.locator("#library-hits img").first.click()
        expect(page.locator("#library-chosen")).to_contain_text("Selected")
        page.screenshot(path=str(shots / "1-clip-library.png"))

        # 8. Motion Structure: depth of the picked hit, then its settings go to a shot card.
        page.get_by_role("tab", name="2. Motion Structure").click()
        page.locator("#depth-run").click()
        expect(page.locator("#depth-flicker")).to_contain_text("Flicker")
        page.locator("#depth-video video").wait_for()
        page.screenshot(path=str(shots / "2-motion-structure.png"))
        page.get_by_role("tab", name="4. Story").click()
        page.locator("#story-shot input").fill("shot-01")
        page.locator("#story-shot input").press("Enter")
        page.locator("#story-use-depth").click()
        expect(page.locator("#card-shot-01").first).to_contain_text("depth depth-anything-v2-small, crop, speed 1")
        page.get_by_role("tab", name="5. Compare").click()
        page.locator("#compare-add").click()
        expect(page.locator("#compare-setting-3")).to_be_visible()
        page.locator("#compare-run").click()
        expect(page.locator("#compare-metrics")).to_contain_text("strength 0.3")
        page.locator("#compare-video video").wait_for()
        page.screenshot(path=str(shots / "5-compare.png"))
        browser.close()


def test_phone_width_reaches_every_tab(server: Server) -> None:  # noqa: F811
    """At 390x844 every numbered tab can be opened and the story cards fit the width."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    shots = Path(os.environ.get("AAS_SCREENSHOT_DIR") or "/tmp")
    with sync_api.sync_playwright() as p:
        browser, page = _open(p, server.url, 390, 844)
        page.get_by_role("tab").first.wait_for()
        for name, probe in [("1. Clip Library", "#library-search"), ("2. Motion Structure", "#depth-run"),
                            ("3. Characters", "#char-train"), ("5. Compare", "#compare-run"), ("4. Story", "#story-draft")]:
            tab = page.get_by_role("tab", name=name)
            if tab.count() and tab.first.is_visible():
                tab.first.click()
            else:  # narrow screens fold the last tabs into gradio's overflow menu
                page.locator(".overflow-menu button").first.click()
                page.locator(".overflow-dropdown button", has_text=name).first.click()
            expect(page.locator(probe)).to_be_visible()
        page.locator("#story-text textarea").fill("a rabbit yawns | a rabbit yawns in the sun | Yawn")
        page.locator("#story-draft").click()
        expect(page.locator(CARD)).to_have_count(1)
        box = page.locator(CARD).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        if os.environ.get("AAS_SCREENSHOT_DIR"):
            page.screenshot(path=str(shots / "6-phone.png"))
        browser.close()
