"""The web page (services/faceanalysis/image_input/web/) in a real headless browser against the real local stack.

Debian's chromium (/usr/bin/chromium, .ci/apt-packages.txt) driven by Playwright: never `playwright install`,
which downloads a browser. The page is served by image-input's HTTP port (`local_stack.http_url`) and talks
to the JSON API there, so these tests cover the page, the HTTP layer and the whole pipeline behind it.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.integration.edge import api_key_file, spare_image_input
from tests.support import ROOT, image

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "output" / "test-artifacts" / "web.png"
OBAMA = "face_recognition/obama.jpg"
T1 = "misc/t1.jpg"  # shared/images/README.md: 6 faces
ANALYSIS_MS = 300_000  # two photos through the models on a busy 2-core machine
# t1.jpg's six faces have shorter box sides of about 94 to 113 px: this drops some of them, not all.
MIN_FACE = 100
PAGE_SIZE = 20  # app.js asks for this many stored analyses at a time


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/apt-packages.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("dialog", lambda dialog: dialog.accept())  # the "Delete stored analysis?" confirmation
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def upload(page, *photos: Path, drop: bool = False) -> None:
    """Choose `photos` in the file picker (or drop them on the page) and wait until every one has an answer."""
    expected = page.locator("[data-testid=photo]").count() + len(photos)
    if drop:
        # What a drag from the desktop delivers: a DataTransfer holding File objects.
        files = [[base64.b64encode(p.read_bytes()).decode(), p.name] for p in photos]
        transfer = page.evaluate_handle(
            """(files) => {
                const transfer = new DataTransfer();
                for (const [data, name] of files) {
                    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                    transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
                }
                return transfer;
            }""", files)
        page.dispatch_event("[data-testid=drop-zone]", "drop", {"dataTransfer": transfer})
    else:
        page.set_input_files("[data-testid=file-input]", [str(p) for p in photos])
    page.wait_for_function(
        """(n) => document.querySelectorAll('[data-testid=photo]').length === n
                 && !document.querySelector('[data-testid=photo][data-state=pending]')""",
        arg=expected, timeout=ANALYSIS_MS)


def card(page, name: str):
    return page.locator(f"[data-testid=photo][data-name='{name}']")


def stored_item(page, analysis_id: str):
    return page.locator(f"[data-testid=stored-item][data-id='{analysis_id}']")


def canvas_pixel(page, name: str, x: int, y: int) -> str:
    """The colour at photo pixel (x, y) of `name`'s canvas, as #rrggbb."""
    return page.eval_on_selector(
        f"[data-testid=photo][data-name='{name}'] canvas",
        """(canvas, [x, y]) => '#' + [...canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)]
               .map((v) => v.toString(16).padStart(2, '0')).join('')""",
        [x, y])


def assert_boxes_drawn(page, name: str, faces: int) -> None:
    """Each face's box is on the canvas in its colour (the table row says which), over the photo."""
    canvas = card(page, name).locator("canvas")
    assert canvas.get_attribute("data-drawn") == str(faces)
    rows = card(page, name).locator("[data-testid=face-row]")
    assert rows.count() == faces
    for i in range(faces):
        colour = rows.nth(i).get_attribute("data-color")
        x, y, w, h = (int(v) for v in rows.nth(i).get_attribute("data-box").split(","))
        # The middle of the left or right edge: another face's label may cover one of them.
        edges = {canvas_pixel(page, name, x, y + h // 2), canvas_pixel(page, name, x + w, y + h // 2)}
        assert colour in edges, f"{name} face {i + 1}: box colour {colour} not at its edges ({edges})"
    # The photo itself is under the boxes: its pixels are not all one colour.
    width, height = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
    samples = {canvas_pixel(page, name, width * i // 7, height * j // 7) for i in range(1, 7) for j in range(1, 7)}
    assert len(samples) > 10, f"{name}: the canvas looks blank ({samples})"


def test_page_analyzes_photos_lists_and_deletes_them(local_stack, page):
    page.goto(local_stack.http_url + "/")
    # Fresh analyses (not earlier tests' cached ones), so they head the stored list, newest first.
    page.check("[data-testid=skip-cache]")
    upload(page, image(OBAMA), image(T1))

    for name, faces in (("obama.jpg", 1), ("t1.jpg", 6)):
        photo = card(page, name)
        assert photo.get_attribute("data-state") == "done", photo.inner_text()
        assert photo.locator("[data-testid=face-count]").get_attribute("data-count") == str(faces)
        assert_boxes_drawn(page, name, faces)
    obama = card(page, "obama.jpg")
    assert obama.locator("canvas").get_attribute("data-points") == "68"
    assert re.fullmatch(r"man \d+%", obama.locator("[data-testid=gender]").inner_text().strip())
    assert re.fullmatch(r"\d+ \(\d+–\d+\)", obama.locator("[data-testid=age]").inner_text().strip())
    assert obama.locator(".emotions li").count() == 7
    assert page.inner_text("[data-testid=progress]").startswith("2 of 2 done")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"screenshot: {SCREENSHOT}")

    # The stored list (refreshed when the uploads finish) has both, newest first.
    ids = {name: card(page, name).get_attribute("data-analysis-id") for name in ("obama.jpg", "t1.jpg")}
    for name, analysis_id in ids.items():
        assert re.fullmatch(r"[0-9a-f]{32}", analysis_id), (name, analysis_id)
        stored_item(page, analysis_id).wait_for()

    # A stored one opens without its photo: boxes and points on a blank canvas of the photo's size.
    stored_item(page, ids["t1.jpg"]).locator("[data-testid=stored-view]").click()
    stored = page.locator(f"[data-testid=stored-result][data-id='{ids['t1.jpg']}']")
    stored.wait_for()
    assert stored.locator("[data-testid=face-count]").get_attribute("data-count") == "6"
    assert stored.locator("canvas").get_attribute("data-drawn") == "6"

    stored_item(page, ids["obama.jpg"]).locator("[data-testid=stored-delete]").click()
    stored_item(page, ids["obama.jpg"]).wait_for(state="detached")
    assert stored_item(page, ids["t1.jpg"]).count() == 1


def test_page_needs_nothing_but_its_server(local_stack, page):
    """Every request the page makes goes to the server that served it: no CDN, fonts or trackers.
    Anything else is blocked (and recorded), and the page must still work (here with a dropped photo).
    Its Content-Security-Policy would block the rest anyway: nothing may have tripped it either."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(local_stack.http_url))
    foreign: list[str] = []
    seen: list[str] = []

    def only_our_server(route):
        url = route.request.url
        seen.append(url)
        if url.startswith(origin + "/"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.route("**/*", only_our_server)
    page.goto(local_stack.http_url + "/")
    upload(page, image(OBAMA), drop=True)
    assert card(page, "obama.jpg").locator("[data-testid=face-count]").get_attribute("data-count") == "1"
    assert not foreign, f"the page asked for other origins: {foreign}"
    assert any(url.endswith("/web/app.js") for url in seen) and any("/v1/analyses" in url for url in seen)
    assert not [text for text in console if "Content Security Policy" in text], console


def test_page_asks_for_the_api_key(local_stack, page, tmp_path):
    """With keys on, the page says a key is needed (401), and works once it is entered; the key is kept."""
    key, key_file = api_key_file(tmp_path / "keys", tenant="web")
    with spare_image_input(local_stack, tmp_path / "image-input", FACEANALYSIS_API_KEYS_FILE=str(key_file)) as spare:
        page.goto(spare.http_url + "/")
        expect(page.locator("[data-testid=stored-status]")).to_contain_text("HTTP 401")
        expect(page.locator("[data-testid=stored-status]")).to_contain_text("API key")

        upload(page, image(OBAMA))
        error = card(page, "obama.jpg").locator("[data-testid=error]")
        expect(error).to_contain_text("UNAUTHENTICATED")
        expect(error).to_contain_text("API key")

        page.fill("[data-testid=api-key]", key)
        page.dispatch_event("[data-testid=api-key]", "change")
        upload(page, image(OBAMA))
        done = page.locator("[data-testid=photo][data-state=done]")
        assert done.locator("[data-testid=face-count]").get_attribute("data-count") == "1"
        analysis_id = done.get_attribute("data-analysis-id")

        # The key stays in this browser: after a reload the tenant's list (with that analysis) loads.
        page.reload()
        assert page.input_value("[data-testid=api-key]") == key
        stored_item(page, analysis_id).wait_for()


def test_page_shows_the_servers_error_beside_the_photo(local_stack, page):
    """An option the server refuses (400 INVALID_ARGUMENT) is reported on that photo's card, in the server's words,
    and the photo is still shown."""
    page.goto(local_stack.http_url + "/")
    page.fill("#threshold", "1.5")
    upload(page, image(OBAMA))
    photo = card(page, "obama.jpg")
    assert photo.get_attribute("data-state") == "error"
    error = photo.locator("[data-testid=error]")
    expect(error).to_contain_text("INVALID_ARGUMENT (HTTP 400)")
    expect(error).to_contain_text("detection_threshold")
    assert error.get_attribute("role") == "alert"
    expect(page.locator("[data-testid=progress]")).to_have_text("1 of 1 done (1 failed)")
    # The photo is drawn once decoded, without boxes.
    expect(photo.locator("canvas")).to_have_attribute("data-drawn", "0")


def test_page_asks_only_for_the_ticked_analyses(local_stack, page):
    """Only "Emotion" ticked: the request asks for emotion alone, and the page shows the emotion but no age,
    gender or landmarks (in the table, the label on the canvas and the points drawn), boxes as always."""
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.goto(local_stack.http_url + "/")
    for action in ("landmarks", "age", "gender"):
        page.uncheck(f"input[name=action][value={action}]")
    upload(page, image(OBAMA))
    (url,) = sent
    assert "actions=emotion" in url, url

    photo = card(page, "obama.jpg")
    assert photo.get_attribute("data-state") == "done", photo.inner_text()
    assert_boxes_drawn(page, "obama.jpg", 1)
    assert photo.locator("[data-testid=emotion]").inner_text().strip() == "happy"  # shared/images/README.md
    assert photo.locator(".emotions li").count() == 7
    assert photo.locator("[data-testid=age]").inner_text().strip() == "—"
    assert photo.locator("[data-testid=gender]").inner_text().strip() == "—"
    canvas = photo.locator("canvas")
    assert json.loads(canvas.get_attribute("data-labels")) == ["#1 happy"]
    assert canvas.get_attribute("data-points") == "0"


def test_page_drops_faces_under_the_smallest_face_size(local_stack, page):
    """"Smallest face (px)" reaches the server: the page shows exactly the faces the API reports for that size."""
    answer = httpx.post(local_stack.http_url + "/v1/analyses", content=image(T1).read_bytes(),
                        headers={"content-type": "image/jpeg"}, params={"min_face": MIN_FACE, "no_store": "true"},
                        timeout=ANALYSIS_MS / 1000)
    assert answer.status_code == 200, answer.text[:500]
    faces = answer.json()["faces"]
    assert 0 < len(faces) < 6, f"min_face {MIN_FACE} should drop some of t1.jpg's 6 faces, not all: {len(faces)}"

    page.goto(local_stack.http_url + "/")
    page.fill("#min-face", str(MIN_FACE))
    upload(page, image(T1))
    photo = card(page, "t1.jpg")
    assert photo.get_attribute("data-state") == "done", photo.inner_text()
    assert photo.locator("[data-testid=face-count]").get_attribute("data-count") == str(len(faces))
    assert_boxes_drawn(page, "t1.jpg", len(faces))
    rows = photo.locator("[data-testid=face-row]")
    shown = [rows.nth(i).get_attribute("data-box") for i in range(rows.count())]
    assert shown == [",".join(str(f["box"].get(k, 0)) for k in ("x", "y", "width", "height")) for f in faces]
    assert all(min(int(v) for v in box.split(",")[2:]) >= MIN_FACE for box in shown)


def test_stored_list_pages_with_more(local_stack, page, tmp_path):
    """"More" loads the next page of stored analyses until there is none; the ids shown are the API's list,
    each once, even when an analysis stored meanwhile shifts the pages by one. A tenant of its own (an API
    key on a spare image-input) holds exactly the analyses made here."""
    key, key_file = api_key_file(tmp_path / "keys", tenant="web-more")
    photo = image(OBAMA).read_bytes()
    with spare_image_input(local_stack, tmp_path / "image-input", FACEANALYSIS_API_KEYS_FILE=str(key_file)) as spare, \
            httpx.Client(base_url=spare.http_url, headers={"authorization": f"Bearer {key}"}, timeout=120) as client:

        def store() -> str:
            answer = client.post("/v1/analyses", content=photo, headers={"content-type": "image/jpeg"},
                                 params={"skip_cache": "true", "actions": "emotion"})  # emotion only: cheaper
            assert answer.status_code == 200, answer.text[:500]
            return answer.json()["analysis_id"]

        def listed() -> list[str]:
            answer = client.get("/v1/analyses", params={"page_size": 500})
            assert answer.status_code == 200 and not answer.json().get("next_page_token"), answer.text[:500]
            return [a["analysis_id"] for a in answer.json()["analyses"]]

        for _ in range(2 * PAGE_SIZE + 5):
            store()
        page.goto(spare.http_url + "/")
        page.fill("[data-testid=api-key]", key)
        page.press("[data-testid=api-key]", "Tab")  # leaving the field is its change event, as for a user
        items = page.locator("[data-testid=stored-item]")
        more = page.locator("[data-testid=stored-more]")

        def shown() -> list[str]:
            return page.eval_on_selector_all("[data-testid=stored-item]", "(items) => items.map((i) => i.dataset.id)")

        expect(items).to_have_count(PAGE_SIZE)
        expect(more).to_be_visible()
        # Another client stores one: the next page (offset 20) now starts with the last one shown.
        newest = store()
        more.click()
        expect(items).to_have_count(2 * PAGE_SIZE - 1)
        expect(more).to_be_visible()
        more.click()
        expect(items).to_have_count(2 * PAGE_SIZE + 5)
        expect(more).to_be_hidden()
        everything = listed()
        assert len(everything) == 2 * PAGE_SIZE + 6 and everything[0] == newest
        ids = shown()
        assert len(set(ids)) == len(ids), "an analysis is listed twice"
        assert ids == everything[1:]  # all but the one stored after the first page, newest first

        # Refreshed, the list starts again from the newest, and More pages through all of it.
        page.click("[data-testid=stored-refresh]")
        expect(items).to_have_count(PAGE_SIZE)
        assert shown() == everything[:PAGE_SIZE]
        for count in (2 * PAGE_SIZE, 2 * PAGE_SIZE + 6):
            more.click()
            expect(items).to_have_count(count)
        expect(more).to_be_hidden()
        assert shown() == everything

