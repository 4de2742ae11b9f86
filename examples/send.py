#!/usr/bin/env python3
"""Send example CDS Hooks requests to a running fluoro-cds and print the cards compactly.

    python3 examples/send.py                      # every file in examples/requests/
    python3 examples/send.py examples/requests/claim-review-claim.json --service http://127.0.0.1:9000
    python3 examples/send.py --fhir-server URL --fhir-token TOKEN   # for the *-fetch.json requests

The service for each file is found by its hook in the discovery document. A request that names
a ``fhirServer`` gets the one given with --fhir-server (and --fhir-token as its bearer token).
Standard library only; every call has a timeout. Exit code: 0 when every request was answered
200, 1 otherwise, 2 for bad usage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 30  # seconds per call


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (no body) or POST JSON; returns (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"error": text.decode(errors="replace")[:200]}


def prepare(body: dict, fhir_server: str | None, fhir_token: str | None) -> dict:
    """The request to send: the FHIR server and its token put in where the file names one."""
    body = dict(body)
    if "fhirServer" in body and fhir_server:
        body["fhirServer"] = fhir_server
    if "fhirAuthorization" in body and fhir_token:
        body["fhirAuthorization"] = {**body["fhirAuthorization"], "access_token": fhir_token}
    return body


def describe_action(action: dict) -> str:
    kind = action.get("type", "?")
    if "resourceId" in action:
        return f"{kind} {action['resourceId']}"
    res = action.get("resource") or {}
    return f"{kind} {res.get('resourceType', '?')}/{res.get('id', '(new)')}"


def print_cards(name: str, path: str, status: int, answer: dict, out=None) -> None:
    out = out or sys.stdout
    cards = answer.get("cards", []) if status == 200 else []
    head = f"{name}  POST {path}  HTTP {status}"
    out.write(head + (f"  {len(cards)} card{'s' if len(cards) != 1 else ''}\n" if status == 200
                      else f"  {answer.get('error', '')}\n"))
    for card in cards:
        topic = (card.get("source", {}).get("topic") or {}).get("code", "?")
        out.write(f"  {card.get('indicator', '?'):8} {topic:22} {card.get('summary', '')}\n")
        for sug in card.get("suggestions", []):
            mark = "recommended" if sug.get("isRecommended") else "or"
            actions = ", ".join(describe_action(a) for a in sug.get("actions", []))
            out.write(f"  {'':8} {'':22} {mark}: {sug.get('label', '')} [{actions}]\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("files", nargs="*", help="request files (default: examples/requests/*.json)")
    ap.add_argument("--service", default="http://127.0.0.1:8080", help="fluoro-cds base URL")
    ap.add_argument("--fhir-server", help="FHIR base URL for requests that name a fhirServer")
    ap.add_argument("--fhir-token", help="bearer token for --fhir-server")
    args = ap.parse_args(argv)
    files = [Path(f) for f in args.files] or sorted((HERE / "requests").glob("*.json"))
    base = args.service.rstrip("/")
    try:
        status, discovery = call(f"{base}/cds-services")
    except (urllib.error.URLError, OSError) as exc:
        print(f"send.py: no fluoro-cds at {base} ({exc}); start it with `make serve`", file=sys.stderr)
        return 2
    by_hook = {s["hook"]: s["id"] for s in discovery.get("services", [])}
    ok = status == 200
    for f in files:
        try:
            body = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            print(f"send.py: {f}: not a JSON request ({exc})", file=sys.stderr)
            return 2
        service = by_hook.get(body.get("hook"))
        if service is None:
            print(f"send.py: {f}: no service for hook {body.get('hook')!r}", file=sys.stderr)
            return 2
        path = f"/cds-services/{service}"
        status, answer = call(base + path, prepare(body, args.fhir_server, args.fhir_token))
        print_cards(f.name, path, status, answer)
        ok = ok and status == 200
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
