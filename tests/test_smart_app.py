"""The documentation loop end to end (issue 15): card -> SMART launch -> form -> FHIR -> no card.

Real components on 127.0.0.1: the service (werkzeug, threaded), sekmet-fhir (tests/fhir_server.py)
behind a SMART EHR whose authorization server and token checks are Authlib's (tests/smart_ehr.py),
and Debian's chromium driven by Playwright (executable /usr/bin/chromium, never a downloaded
browser). The encounter-discharge card's own link is opened, the EHR launch runs (discovery,
authorization code with PKCE S256, tokens kept by the service), the form shows what is missing,
refuses bad values without writing anything, saves the rest in one transaction, and a fresh
encounter-discharge call no longer reports documentation-missing. A launch whose tokens the EHR
has ended gets a clear message, not a blank page.

``FLUORO_CDS_SMART_SCREENSHOTS=docs`` keeps the three screenshots (empty, errors, saved) in docs/.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.scenario_fixtures import DCM
from tests.smart_support import EID, PID, PROC, smart_world
from tests.smart_support import discharge as _discharge
from tests.smart_support import doc_card as _doc_card
from tests.smart_support import observations as _observations
from tests.smart_support import resources as _resources

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000  # every browser wait
def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "needs Debian's chromium at /usr/bin/chromium (tools/test-deps.sh installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright Python package (pip install -e '.[test]')"
    return None


@pytest.fixture
def world(fhir_server, tmp_path):  # noqa: F811
    why = _missing()
    if why:
        pytest.skip(why)
    with smart_world(fhir_server, tmp_path) as holder:
        yield holder


def _browser():
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=WAIT_MS,
                                 args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                       "--disable-component-update", "--no-first-run"])
    return pw, browser


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"smart-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("FLUORO_CDS_SMART_SCREENSHOTS")  # e.g. docs
    if keep:
        shutil.copyfile(path, Path(keep) / path.name)
    return path


def test_card_link_launch_form_save_and_no_more_card(world, tmp_path):
    ehr, fhir, url = world["ehr"], world["fhir"], world["url"]
    suffix = "-e2e"
    fhir.load(_resources(suffix))
    # 1. the encounter-discharge card and its SMART link, as the EHR receives them
    card = _doc_card(_discharge(url, ehr, suffix))
    assert card is not None
    [link] = [lk for lk in card["links"] if lk["type"] == "smart"]
    assert link["url"] == url + "/smart/launch"
    context = json.loads(link["appContext"])
    assert context["procedure"] == f"Procedure/{PROC + suffix}"
    assert set(context["missing"]) >= {"indication", "fluoroscopy-time", "radiation-dose", "body-site"}
    # 2. the EHR launches the link (access tokens of 6 s with a refresh token: the app refreshes)
    launch = ehr.register_launch(patient=PID + suffix, encounter=EID + suffix,
                                 app_context=link["appContext"], expires_in=6, refresh=True)
    pw, browser = _browser()
    try:
        page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{link['url']}?iss={ehr.fhir_base}&launch={launch}")
        page.wait_for_selector("#documentation")
        issued = time.monotonic()
        # PKCE S256 and aud on the authorization request; launch passed through
        [auth] = [a for a in ehr.authorizations if a.get("launch") == launch]
        assert auth["code_challenge_method"] == "S256" and len(auth["code_challenge"]) >= 43
        assert auth["aud"] == ehr.fhir_base and "launch" in auth["scope"].split()
        missing = [li.get_attribute("data-element") for li in page.query_selector_all("#missing-list li")]
        assert missing == ["indication", "fluoroscopy-time", "radiation-dose", "body-site", "findings",
                           "images-retained", "signed-interpretation"]
        html = page.content()
        assert "access_token" not in html and ehr.tokens and not any(t in html for t in ehr.tokens)
        _shot(page, tmp_path, "form-empty")

        # 3. bad values: refused in the page, each next to its field, nothing written
        page.check("#ind-1")
        page.fill("#fluoroscopyMinutes", "-3")
        page.fill("#dose-value", "a lot")
        page.select_option("#body-site", "122496007")
        page.click("#save")
        page.wait_for_selector("#summary:not([hidden])")
        assert page.is_visible("#error-fluoroscopyMinutes")
        assert "greater than 0" in page.inner_text("#error-fluoroscopyMinutes")
        assert "a number" in page.inner_text("#error-dose\\.value")
        assert page.get_attribute("#fluoroscopyMinutes", "aria-invalid") == "true"
        _shot(page, tmp_path, "form-errors")
        # a dose unit the form does not offer (a tampered page): refused by the page ...
        page.fill("#fluoroscopyMinutes", "2.5")
        page.fill("#dose-value", "12.5")
        page.evaluate("""() => { const o = document.createElement('option'); o.value = 'rad.cm2';
                                 o.textContent = 'rad·cm²'; document.getElementById('dose-unit').append(o); }""")
        page.select_option("#dose-unit", "rad.cm2")
        page.click("#save")
        page.wait_for_function("() => !document.getElementById('error-dose.unit').hidden")
        assert "Gy.cm2" in page.inner_text("#error-dose\\.unit")
        # ... and by the server, when the page's own checks are skipped (400, field and expected form)
        answer = page.evaluate("""async () => {
            const f = document.getElementById('documentation');
            const r = await fetch(f.dataset.save, {method: 'POST', headers: {'Content-Type': 'application/json',
              'X-CSRF-Token': f.dataset.csrf}, body: JSON.stringify({fluoroscopyMinutes: -3,
              dose: {quantity: 'dap', value: 'a lot', unit: 'rad.cm2'}})});
            return {status: r.status, body: await r.json()}; }""")
        assert answer["status"] == 400
        paths = {p["path"] for p in answer["body"]["problems"]}
        assert {"$.fluoroscopyMinutes", "$.dose.unit", "$.indication", "$.bodySite", "$.findings"} <= paths
        assert "rad.cm2" not in json.dumps(answer["body"]) and "a lot" not in json.dumps(answer["body"])
        assert _observations(fhir, suffix) == []
        assert fhir.get(f"Procedure/{PROC + suffix}").get("bodySite") is None
        assert not [c for c in ehr.calls if c[0] in ("POST", "PUT")]

        # 4. valid values, saved after the access token expired (the app refreshes it)
        page.select_option("#dose-unit", "Gy.cm2")
        page.fill("#findings", "Contrast passes freely; no stricture.")
        page.check("#images-retained")
        page.fill("#images-count", "4")
        page.check("#sign")
        time.sleep(max(0.0, 1.5 - (time.monotonic() - issued)))  # past expires_in - the app's 5 s leeway
        page.click("#save")
        page.wait_for_selector("#result:not([hidden]), #summary:not([hidden])")
        assert page.is_visible("#result"), page.inner_text("#summary")
        result = page.inner_text("#result")
        assert "in one transaction" in result and "nothing missing" in result
        assert "Nothing is missing" in page.inner_text("#missing-list")
        assert "2.5 min" in page.inner_text("#documented")
        _shot(page, tmp_path, "form-saved")
    finally:
        browser.close()
        pw.stop()
    assert ehr.refreshes >= 1
    # every FHIR request the app and the service made carried a token the EHR issued
    assert ehr.calls and all(token in ehr.tokens for _, _, token in ehr.calls)
    assert any(token in ehr.issued_to_app() for m, _, token in ehr.calls if m == "POST")

    # 5. the FHIR server holds what the form recorded, in the shapes the rules read
    obs = _observations(fhir, suffix)
    by_code = {o["code"]["coding"][0]["code"]: o for o in obs}
    assert set(by_code) == {"113730", "113722"}
    assert by_code["113730"]["valueQuantity"] == {"value": 2.5, "unit": "min",
                                                  "system": "http://unitsofmeasure.org", "code": "min"}
    assert by_code["113722"]["valueQuantity"]["value"] == 12.5
    assert by_code["113722"]["valueQuantity"]["code"] == "Gy.cm2"
    for o in obs:
        assert o["code"]["coding"][0]["system"] == DCM
        assert o["partOf"] == [{"reference": f"Procedure/{PROC + suffix}"}]
    proc = fhir.get(f"Procedure/{PROC + suffix}")
    assert proc["reasonReference"] == [{"reference": f"Condition/smart-cond{suffix}"}]
    assert proc["bodySite"][0]["coding"][0]["code"] == "122496007"
    [report_ref] = proc["report"]
    report = fhir.get(report_ref["reference"])
    assert report["status"] == "final" and report["conclusion"].startswith("Contrast passes")
    assert report["resultsInterpreter"] == [{"reference": f"Practitioner/smart-rad{suffix}"}]
    studies = fhir.get("ImagingStudy", encounter=f"Encounter/{EID + suffix}")["entry"]
    assert studies[0]["resource"]["procedureReference"] == {"reference": f"Procedure/{PROC + suffix}"}

    # 6. a fresh encounter-discharge call: no documentation-missing card any more
    assert _doc_card(_discharge(url, ehr, suffix)) is None


def test_an_ended_authorization_gets_a_clear_message(world, tmp_path):
    ehr, fhir, url = world["ehr"], world["fhir"], world["url"]
    suffix = "-exp"
    fhir.load(_resources(suffix))
    card = _doc_card(_discharge(url, ehr, suffix))
    [link] = [lk for lk in card["links"] if lk["type"] == "smart"]
    launch = ehr.register_launch(patient=PID + suffix, encounter=EID + suffix,
                                 app_context=link["appContext"], refresh=False)
    pw, browser = _browser()
    try:
        page = browser.new_context(viewport={"width": 820, "height": 1180}).new_page()  # a tablet
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{link['url']}?iss={ehr.fhir_base}&launch={launch}")
        page.wait_for_selector("#documentation")
        page.check("#ind-1")
        page.fill("#fluoroscopyMinutes", "3")
        page.fill("#dose-value", "40")
        page.select_option("#dose-unit", "Gy.cm2")
        page.select_option("#body-site", "other")
        page.fill("#body-site-text", "Esophagus")
        page.fill("#findings", "Normal swallow.")
        page.check("#images-retained")
        page.check("#sign")
        ehr.revoke(launch)  # the EHR ends the session: its tokens now get 401
        page.click("#save")
        page.wait_for_selector("#summary:not([hidden])")
        text = page.inner_text("#summary")
        assert "expired" in text and "Nothing was written" in text
        page.reload()
        assert page.inner_text("h1") == "Authorization expired"
        assert "Open the app again" in page.inner_text("#message")
    finally:
        browser.close()
        pw.stop()
    assert _observations(fhir, suffix) == []


AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"


def _axe_violations(page) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations of the page (ids and the first offending element)."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => (await axe.run(document,
        {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
        .map(v => v.id + ': ' + (v.nodes[0] ? v.nodes[0].target.join(' ') : ''))""")
    return found


def test_the_form_is_accessible_by_keyboard_and_fits_a_tablet(world, tmp_path):
    """axe-core (WCAG 2.1 AA rules: labels, contrast, ARIA) finds nothing on the empty form nor with
    errors shown; Tab reaches every control in order and Enter submits; no sideways scrolling on a
    tablet (820 px portrait) or a desktop window."""
    if not AXE.exists():
        pytest.skip("needs axe-core in tests/node (tools/test-deps.sh runs npm ci there)")
    ehr, fhir, url = world["ehr"], world["fhir"], world["url"]
    suffix = "-a11y"
    fhir.load(_resources(suffix))
    [link] = [lk for lk in _doc_card(_discharge(url, ehr, suffix))["links"] if lk["type"] == "smart"]
    launch = ehr.register_launch(patient=PID + suffix, encounter=EID + suffix, app_context=link["appContext"])
    pw, browser = _browser()
    try:
        # axe is injected as a script: this context alone bypasses the page's CSP for it
        context = browser.new_context(viewport={"width": 820, "height": 1180}, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{link['url']}?iss={ehr.fhir_base}&launch={launch}")
        page.wait_for_selector("#documentation")
        for width in (820, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
        assert _axe_violations(page) == []
        # keyboard only: Tab from the top through the form to the button, then Enter
        page.set_viewport_size({"width": 820, "height": 1180})
        controls = page.evaluate("""() => [...document.querySelectorAll(
            '#documentation input, #documentation select, #documentation textarea, #documentation button')]
            .filter(e => e.offsetParent !== null).map(e => e.id)""")
        reached = []
        page.evaluate("document.activeElement && document.activeElement.blur()")
        for _ in range(60):
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement && document.activeElement.id")
            if focused and focused not in reached:
                reached.append(focused)
            if focused == "save":
                break
        radios = {c for c in controls if c.startswith("ind-")}
        assert [c for c in reached if c in controls and c not in radios] == [c for c in controls if c not in radios]
        assert radios & set(reached)  # a radio group is one Tab stop
        page.keyboard.press("Enter")
        page.wait_for_selector("#summary:not([hidden])")
        assert page.evaluate("document.activeElement.id") == "summary"
        assert _axe_violations(page) == []
    finally:
        browser.close()
        pw.stop()
    assert _observations(fhir, suffix) == []
