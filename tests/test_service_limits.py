"""Request body limits in the app itself (also without the nginx front): size and nesting depth."""
from __future__ import annotations

import io
import json

import pytest

from service.app import MAX_BODY_BYTES
from service.jsonio import MAX_DEPTH, too_deep
from tests.service_support import assert_json_error, claim_review_request, make_app

URL = "/cds-services/fluoroscopy-claim-review"
BIG = b'{"hook": "' + b"x" * MAX_BODY_BYTES + b'"}'


@pytest.fixture()
def client(tmp_path):
    return make_app(tmp_path).test_client()


def test_body_over_the_limit_is_413_not_a_json_error(client):
    body = assert_json_error(client.post(URL, data=BIG, content_type="application/json"), 413)
    assert body["issue"][0]["code"] == "too-costly"


def test_chunked_body_over_the_limit_is_413_not_cut(client):
    resp = client.post(URL, input_stream=io.BytesIO(BIG), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})
    assert "larger than" in assert_json_error(resp, 413)["error"]


class _Failing(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        raise OSError("connection reset")


def _post_stream(client, stream, length: int, **environ):
    """A POST whose wsgi.input is `stream` under a Content-Length of `length` (the test client
    would measure the stream)."""
    return client.post(URL, content_type="application/json", environ_overrides={
        "wsgi.input": stream, "CONTENT_LENGTH": str(length), **environ})


def test_body_is_read_up_to_its_content_length_only(client):
    """The body is read from wsgi.input directly (service/cds_hooks.request_body): what follows
    Content-Length is not part of it, a server's short stream is the client's fault (400), and
    a Content-Length past the limit is refused before reading."""
    body = json.dumps(claim_review_request()).encode()
    resp = _post_stream(client, io.BytesIO(body + b"}garbage"), len(body))
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    assert "cards" in resp.get_json()
    # shorter than announced: the client went away (werkzeug's ClientDisconnected), never a 5xx
    assert_json_error(_post_stream(client, io.BytesIO(body), len(body) + 10), 400)
    assert_json_error(_post_stream(client, _Failing(), len(body)), 400)
    # a server that terminates the input itself (gunicorn) hands over what there is
    resp = _post_stream(client, io.BytesIO(body), len(body) + 10, **{"wsgi.input_terminated": True})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    resp = _post_stream(client, io.BytesIO(body), MAX_BODY_BYTES + 1)
    assert "larger than" in assert_json_error(resp, 413)["error"]
    resp = _post_stream(client, io.BytesIO(b""), 0)
    assert "not valid JSON" in assert_json_error(resp, 400)["error"]


@pytest.mark.parametrize("path", [URL, URL + "/feedback"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 100_000])
def test_deep_nesting_is_400_before_parsing(client, path, depth):
    data = b'{"hook": ' + b"[" * depth + b"]" * depth + b"}"
    body = assert_json_error(client.post(path, data=data, content_type="application/json"), 400)
    assert f"more than {MAX_DEPTH} deep" in body["error"]


def test_depth_scan_ignores_brackets_in_strings():
    assert not too_deep(b'{"a": "' + b"[" * 500 + b'"}')
    assert not too_deep(b'["\\"[[[", ' + b"[]," * 500 + b"[]]")
    assert too_deep(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b'{"a": {"b": "}"' + b", \"c\": [" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}}")


def test_depth_scan_agrees_with_the_parsed_depth():
    """The bytes-level scan gives the depth of the parsed document, for nested JSON whose strings
    hold brackets, quotes and runs of backslashes (escaped or not before a quote): a parity,
    escape-order or off-by-one mistake in any step of :func:`too_deep` fails here."""
    import json
    import random

    rng = random.Random(20261201)
    tricky = ["[[", "]}", "{x", '"[', '\\"{', "a\\", '\\\\"]', "\\u005b", "", "]\\"]

    def doc(depth: int):  # one deep spine, with shallow siblings and bracket-holding strings
        if depth == 0:
            return rng.choice([rng.choice(tricky), 1, None, [], {}])
        inner = [doc(depth - 1), rng.choice(tricky), [rng.random()], rng.choice(tricky) * 2]
        rng.shuffle(inner)
        return inner if rng.random() < 0.5 else {rng.choice(tricky) + str(i): v for i, v in enumerate(inner)}

    def depth_of(value) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth_of, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth_of, value), default=0)
        return 0

    escaped = 0
    for _ in range(400):
        value = doc(rng.randint(1, 80))
        data = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        escaped += b"\\" in data
        for limit in (2, 7, MAX_DEPTH):
            assert too_deep(data, limit) == (depth_of(value) > limit), data[:120]
    assert escaped > 300  # most documents exercise the escape step
