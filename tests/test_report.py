"""The feedback report (service/report.py) over cards and feedback sent through the real app:
the JSON form, `fluoro-cds report feedback`, and GET /admin/report (off without a token)."""
from __future__ import annotations

import json

import pytest

from service.cli import main
from service.report import feedback_report, parse_since, render_html
from tests.report_support import OVERRIDE, exercise
from tests.service_support import make_app

TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
def served(tmp_path):
    app = make_app(tmp_path, admin_token=TOKEN)
    client = app.test_client()

    def post(path, body):
        resp = client.post(path, json=body)
        return resp.status_code, resp.get_json()

    shown = exercise(post)
    return app, client, shown


def _finding(report, code):
    [entry] = [f for f in report["findings"] if f["code"] == code]
    return entry


def test_report_counts_per_finding_and_per_cited_row(served):
    app, _, shown = served
    report = feedback_report(app.config["FLUORO_STATE"])
    assert report["totals"] == {"cards_shown": 6, "feedback": 6, "accepted": 2, "overridden": 3,
                                "unmatched_feedback": 1}
    assert [f["code"] for f in report["findings"]] == ["ptp-bundled", "fluoroscopy-integral",
                                                       "use-guidance-code"]
    ptp = _finding(report, "ptp-bundled")
    assert (ptp["cards_shown"], ptp["accepted"], ptp["overridden"]) == (3, 2, 1)
    assert ptp["override_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert ptp["override_reasons"] == [{"system": OVERRIDE, "code": "distinct-session", "count": 1}]
    [row] = ptp["citations"]  # the three cards cite the same PTP row
    assert "33289" in row["citation"] and "76000" in row["citation"]
    assert (row["cards_shown"], row["accepted"], row["overridden"]) == (3, 2, 1)

    integral = _finding(report, "fluoroscopy-integral")
    assert (integral["cards_shown"], integral["accepted"], integral["overridden"]) == (2, 0, 2)
    assert {(r["code"], r["count"]) for r in integral["override_reasons"]} == {
        ("payer-policy", 1), (None, 1)}
    cited = {c["citation"]: c for c in integral["citations"]}
    policy_rows = [c for c in cited if c.startswith("fluoro-cds policy 'integral'")]
    assert len(policy_rows) == 2  # 29881 and 62323 are different policy entries
    assert all(cited[c]["cards_shown"] == 1 and cited[c]["overridden"] == 1 for c in policy_rows)

    guidance = _finding(report, "use-guidance-code")
    assert (guidance["cards_shown"], guidance["accepted"], guidance["overridden"],
            guidance["override_rate"]) == (1, 0, 0, None)


def test_since_filters_cards_and_feedback(served):
    app, _, _ = served
    report = feedback_report(app.config["FLUORO_STATE"], parse_since("2999-01-01"))
    assert report["findings"] == [] and report["totals"]["feedback"] == 0
    assert parse_since("2024-07-01") == "2024-07-01"
    assert parse_since("2024-07-01T12:00:00+02:00") == "2024-07-01T10:00:00"
    with pytest.raises(ValueError):
        parse_since("last tuesday")


def test_html_is_self_contained_and_escapes_what_it_shows(served):
    app, _, _ = served
    report = feedback_report(app.config["FLUORO_STATE"])
    report["findings"][0]["citations"][0]["citation"] = "<script>alert(1)</script>"
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    for external in ("http://", "https://", "src="):  # no network: nothing is fetched
        assert external not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_report_command_json_html_and_bad_since(served, tmp_path, monkeypatch, capsys):
    app, _, _ = served
    app.config["FLUORO_STATE"].flush()  # the app's audit writer has stored its queue
    monkeypatch.setenv("FLUORO_CDS_STATE_DB", app.config["FLUORO_STATE"].location)
    assert main(["report", "feedback"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["cards_shown"] == 6 and data["since"] is None
    out = tmp_path / "report.html"
    assert main(["report", "feedback", "--format", "html", "--since", "2024-01-01",
                 "--out", str(out)]) == 0
    assert "ptp-bundled" in out.read_text() and "2024-01-01" in out.read_text()
    assert main(["report", "feedback", "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err


def test_admin_report_needs_the_token(served):
    _, client, _ = served
    assert client.get("/admin/report").status_code == 401
    bad = client.get("/admin/report", headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert bad.status_code == 401 and "WWW-Authenticate" in bad.headers
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = client.get("/admin/report", headers=auth)
    assert ok.status_code == 200 and ok.get_json()["totals"]["cards_shown"] == 6
    page = client.get("/admin/report?format=html&since=2024-01-01", headers=auth)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    err = client.get("/admin/report?since=soon", headers=auth)
    assert err.status_code == 400 and err.get_json()["issue"][0]["expression"] == ["since"]
    assert client.get("/admin/report?format=pdf", headers=auth).status_code == 400


def test_admin_report_is_absent_without_a_token(tmp_path):
    client = make_app(tmp_path).test_client()
    resp = client.get("/admin/report", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 404


def test_admin_token_setting_is_checked():
    from service.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="FLUORO_CDS_ADMIN_TOKEN"):
        Settings.from_env({"FLUORO_CDS_ADMIN_TOKEN": "short"})
    settings = Settings.from_env({"FLUORO_CDS_ADMIN_TOKEN": TOKEN})
    assert settings.admin_token == TOKEN and TOKEN not in repr(settings)
