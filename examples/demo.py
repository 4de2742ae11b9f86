"""`make demo`: a local FHIR server holding the example patient, fluoro-cds beside it, and every
example request sent to it, so that all three services answer.

    make demo                 # start both, send examples/requests/*.json, print the cards, stop
    make demo KEEP=600        # ... and keep both running for 10 minutes (Ctrl-C stops earlier)

The FHIR server is sekmet-fhir (the test extra; started as the test suite starts it, on
127.0.0.1, a free port, a random bearer token, its data in a temporary folder), loaded with
examples/fhir/example-patient.json. The service is `fluoro-cds serve` on 127.0.0.1:PORT, allowed
to fetch from that FHIR server only. Both stop when the demo ends.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.fhir_server, from the repository root

from examples.send import main as send  # noqa: E402
from tests.fhir_server import start_fhir_server, stop_fhir_server  # noqa: E402

START_TIMEOUT = 60  # seconds for the service to answer /healthz


def start_service(port: int, fhir_base: str, workdir: Path) -> subprocess.Popen:
    """`fluoro-cds serve` from this interpreter's environment, on 127.0.0.1:port."""
    exe = Path(sys.executable).with_name("fluoro-cds")
    env = dict(os.environ, FLUORO_CDS_FHIR_ALLOWLIST=fhir_base,
               FLUORO_CDS_STATE_DB=str(workdir / "state.sqlite"))
    proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"demo: fluoro-cds did not answer on port {port} within {START_TIMEOUT} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fluoro-cds demo: FHIR server + service + examples",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--port", type=int, default=8080, help="fluoro-cds port on 127.0.0.1")
    ap.add_argument("--keep", type=int, default=0,
                    help="seconds to keep both running after the examples (0: stop at once)")
    args = ap.parse_args(argv)
    fhir = start_fhir_server()
    service = None
    try:
        fhir.load(json.loads((HERE / "fhir" / "example-patient.json").read_text()))
        print(f"FHIR server: {fhir.base_url} (bearer token {fhir.token}), patient 'example' loaded")
        service = start_service(args.port, fhir.base_url, fhir.workdir)
        base = f"http://127.0.0.1:{args.port}"
        print(f"fluoro-cds:  {base}/cds-services\n")
        code = send(["--service", base, "--fhir-server", fhir.base_url, f"--fhir-token={fhir.token}"])
        if args.keep > 0:
            print(f"\nboth keep running for {args.keep} s (Ctrl-C stops them); try e.g.\n"
                  f"  python3 examples/send.py --service {base} --fhir-server {fhir.base_url} "
                  f"--fhir-token={fhir.token}")
            try:
                time.sleep(args.keep)
            except KeyboardInterrupt:
                pass
        return code
    finally:
        if service is not None:
            stop(service)
        stop_fhir_server(fhir)


if __name__ == "__main__":
    sys.exit(main())
