"""Error messages name the path and the expected form, never the value sent (issue 12,
docs/service.md "Errors"): a sentinel value at each place a message used to echo must not come
back, over HTTP and from `fluoro-cds batch`."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import orjson
import pytest

from tests.scenario_fixtures import scenario
from tests.service_support import assert_json_error, make_app

SENTINEL = "Zq7SECRET"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("no-echo")).test_client()


def _claim_body():
    return copy.deepcopy(scenario(4).request())


def _with(path, value):
    body = _claim_body()
    node = body["context"]["claim"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize("path, value", [
    (("entry", 0, "resource", "item", 0, "sequence"), SENTINEL),  # positiveInt
    (("entry", 0, "resource", "item", 0, "quantity"), {"value": SENTINEL}),  # decimal
    (("entry", 0, "resource", "item", 0, "servicedDate"), f"2024-07-{SENTINEL}"),  # date
    (("entry", 1, "resource", "resourceType"), SENTINEL),
    (("resourceType",), SENTINEL),
])
def test_invalid_claim_elements_are_not_echoed(client, path, value):
    body = _with(path, value)
    resp = client.post("/cds-services/fluoroscopy-claim-review", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 400
    assert SENTINEL not in resp.get_data(as_text=True)


@pytest.mark.parametrize("method, url", [
    ("POST", f"/cds-services/{SENTINEL}"),  # an unknown service
    ("GET", f"/{SENTINEL}"),  # no such endpoint
    ("DELETE", "/cds-services"),  # a method not allowed: the path is not echoed either
])
def test_unknown_paths_are_not_echoed(client, method, url):
    resp = client.open(url, method=method, json=_claim_body())
    assert resp.status_code in (404, 405)
    assert_json_error(resp, resp.status_code)
    assert SENTINEL not in resp.get_data(as_text=True) and "/cds-services" not in \
        resp.get_json()["error"].replace("GET /cds-services", "")


def test_batch_errors_name_the_path_not_the_value(tmp_path):
    claim = _claim_body()["context"]["claim"]["entry"][0]["resource"]
    lines = []
    for n, (path, value) in enumerate([(("item", 0, "servicedDate"), f"2024-02-{SENTINEL}"),
                                       (("item", 0, "sequence"), SENTINEL), (("resourceType",), SENTINEL)]):
        record = copy.deepcopy(claim)
        record["id"] = f"bad-{n}"  # three claims (a repeated id would be reported as such: docs/batch.md)
        node = record
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        lines.append(json.dumps(record))
    src = tmp_path / "in.ndjson"
    src.write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, "-m", "service.cli", "batch", str(src), "--quiet",
                          "--db", str(tmp_path / "none.sqlite")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["path"] for r in records] == ["Claim.item[0].servicedDate", "Claim.item[0].sequence",
                                            "$.resourceType"]  # the record's, not a CDS Hooks context
    assert all("error" in r for r in records)
    assert SENTINEL not in run.stdout + run.stderr
