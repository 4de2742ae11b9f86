"""A misbehaving FHIR server for tests: a proxy on 127.0.0.1 in front of a real FHIR server
(sekmet-fhir) that answers what the upstream answers, except for the requests a rule picks, which
get an error status, a wrong-typed resource, a stall, or headers sent one byte at a time; and
``transform`` may rewrite what the upstream answers (the fuzz test mutates its resources).

    with MisbehavingFhir(fhir_server) as bad:
        bad.rule = lambda target: Answer(status=500) if target.startswith("/fhir/Observation") else None
        body["fhirServer"] = bad.base_url

Plain sockets (not http.server), so that the status line and headers themselves can be slow.
Every wait is bounded: a connection is dropped after CONNECTION_TIMEOUT, the upstream after
UPSTREAM_TIMEOUT, and stalls end when the proxy closes.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import requests

CONNECTION_TIMEOUT = 10.0
UPSTREAM_TIMEOUT = 30.0


@dataclass(frozen=True)
class Answer:
    """What the proxy answers instead of the upstream: `status` with `body` (a resource given as
    a dict is sent as JSON), after `stall` seconds; the head one byte every `header_delay`
    seconds when > 0."""

    status: int = 200
    body: bytes | dict | list | str = b""
    stall: float = 0.0
    header_delay: float = 0.0

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


Rule = Callable[[str], "Answer | None"]  # request target (path?query) -> answer, None: upstream


class MisbehavingFhir:
    def __init__(self, upstream, rule: Rule | None = None):
        self.upstream = upstream  # tests.fhir_server.FhirServer
        self.rule: Rule = rule or (lambda target: None)
        # applied to the upstream's answers (target, body) -> body: e.g. the fuzz test's mutations
        self.transform: Callable[[str, bytes], bytes] | None = None
        self.requests: list[str] = []  # request targets, in order
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/fhir"
        self._stop = threading.Event()
        self._session = requests.Session()
        self._session.trust_env = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "MisbehavingFhir":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        self._session.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(CONNECTION_TIMEOUT)
            try:
                while not self._stop.is_set() and self._one(conn):
                    pass
            except OSError:
                pass

    def _one(self, conn: socket.socket) -> bool:
        """Answer one request on `conn`; False when the connection is done."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = head[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        self.requests.append(target)
        answer = self.rule(target)
        if answer is None:
            status, body, ctype = self._upstream(target, headers)
            if self.transform is not None:
                body = self.transform(target, body)
            answer = Answer(status=status, body=body)
        else:
            ctype = "application/fhir+json"
        if answer.stall > 0 and self._stop.wait(answer.stall):
            return False
        payload = answer.payload()
        out = (f"HTTP/1.1 {answer.status} X\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode()
        if answer.header_delay > 0:
            for i in range(len(out)):
                if self._stop.is_set():
                    return False
                conn.sendall(out[i:i + 1])
                time.sleep(answer.header_delay)
        else:
            conn.sendall(out)
        conn.sendall(payload)
        return True

    def _upstream(self, target: str, headers: dict) -> tuple[int, bytes, str]:
        prefix = "/fhir"
        path = target[len(prefix):] if target.startswith(prefix) else target
        forward = {k: v for k, v in headers.items() if k.lower() in ("accept", "prefer")}
        forward["Authorization"] = f"Bearer {self.upstream.token}"
        resp = self._session.get(self.upstream.base_url + path, headers=forward,
                                 timeout=UPSTREAM_TIMEOUT, allow_redirects=False)
        body = resp.content.replace(self.upstream.base_url.encode(), self.base_url.encode())
        return resp.status_code, body, resp.headers.get("Content-Type", "application/fhir+json")
