"""FHIR access bounds (issue 12): one deadline per hook call, a size cap per answer read as it
streams, reads that check type and id, nesting-depth limit; against real misbehaving HTTP
servers on 127.0.0.1 that this module starts and stops."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from hooks.context import DataUnavailable
from service.fhir_access import FhirClient, FhirClientSettings


class MisbehavingServer:
    """Answers every GET with `answer(path) -> (head_bytes, body_bytes, byte_delay[, head_delay])`;
    body bytes are sent one at a time `byte_delay` apart when it is > 0, the head's `head_delay`
    apart when given."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                path = data.split(b" ", 2)[1].decode()
                self.requests.append(path)
                head, body, delay, *slow_head = self.answer(path)
                if slow_head and slow_head[0] > 0:  # the status line and headers byte by byte
                    for i in range(len(head)):
                        if self._stop.is_set():
                            return
                        conn.sendall(head[i:i + 1])
                        time.sleep(slow_head[0])
                else:
                    conn.sendall(head)
                if delay > 0:
                    for i in range(len(body)):
                        if self._stop.is_set():
                            return
                        conn.sendall(body[i:i + 1])
                        time.sleep(delay)
                else:
                    conn.sendall(body)
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self.sock.close()


def _head(length: int | None = None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n{size}"
            "Connection: close\r\n\r\n").encode()


def _patient(pid: str) -> bytes:
    return json.dumps({"resourceType": "Patient", "id": pid}).encode()


@pytest.fixture
def serve():
    servers = []

    def start(answer) -> MisbehavingServer:
        servers.append(MisbehavingServer(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _client(server, **kw) -> FhirClient:
    return FhirClient(server.base_url, "t", FhirClientSettings(connect_timeout=2, read_timeout=3, **kw))


def test_a_byte_at_a_time_ends_at_the_deadline(serve):
    body = _patient("p1") + b" " * 200
    server = serve(lambda path: (_head(len(body)), body, 0.1))  # each byte well within read_timeout
    client = _client(server, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match="deadline"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < 2.0


def test_headers_a_byte_at_a_time_end_at_the_deadline(serve):
    """Each byte of the status line and headers comes well within read_timeout: only the
    call's deadline (a watch that shuts the socket) stops the wait."""
    body = _patient("p1")
    server = serve(lambda path: (_head(len(body)), body, 0, 0.1))  # ~10 s of headers
    client = _client(server, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match="deadline"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < 2.0


def test_the_deadline_covers_all_requests_of_the_call(serve):
    body = _patient("p1")
    server = serve(lambda path: (_head(len(body)), body, 0.3 / len(body)))  # ~0.3 s each
    client = _client(server, deadline=1.0)
    started = time.monotonic()
    answered = 0
    with pytest.raises(DataUnavailable, match="deadline"):
        for _ in range(20):
            client.read("Patient", "p1")
            answered += 1
    assert 1 <= answered <= 4
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("declared", [True, False])
def test_an_answer_over_the_cap_is_refused_while_it_streams(serve, declared):
    body = b'{"resourceType": "Patient", "id": "p1", "x": "' + b"a" * 300_000 + b'"}'
    server = serve(lambda path: (_head(len(body) if declared else None), body, 0))
    with pytest.raises(DataUnavailable, match="larger than 100000 bytes"):
        _client(server, max_answer_bytes=100_000).read("Patient", "p1")


def test_an_answer_under_the_cap_is_read(serve):
    body = _patient("p1")
    server = serve(lambda path: (_head(None), body, 0))  # no Content-Length: read to the close
    assert _client(server, max_answer_bytes=100_000).read("Patient", "p1")["id"] == "p1"


@pytest.mark.parametrize("answer,reason", [
    (_patient("p2"), "another id"),
    (json.dumps({"resourceType": "Patient"}).encode(), "another id"),
    (json.dumps({"resourceType": "Practitioner", "id": "p1"}).encode(), "another resource type"),
    (b'{"resourceType": "Patient", "id": "p1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b"<html>", "not JSON"),
    (b"[1]", "not a resource"),
])
def test_reads_check_what_came_back(serve, answer, reason):
    server = serve(lambda path: (_head(len(answer)), answer, 0))
    with pytest.raises(DataUnavailable, match=reason):
        _client(server).read("Patient", "p1")
