"""Instructions per claim-review request (valgrind callgrind), for checkouts side by side:
deterministic to a few percent whatever else runs on the machine (server CPU figures are not).

For each DIR (a checkout; default: this one) a child Python process builds the app on the
embedded starter data, warms it, then calls it as a WSGI application (no HTTP, no gunicorn)
with bench_load's scenario 1 body N times and flushes the audit; the figure is the difference of
the instructions of a run with --requests and one with none, divided by --requests. The
processes the child starts count too (valgrind follows them: the audit writer process); the audit
is stored at the final flush, in batches that do not depend on valgrind's speed.
``PYTHONHASHSEED=0`` keeps dict and set layouts the same between runs. Needs ``valgrind``
(Debian package). Each child takes about a minute.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_instructions.py [--requests 200] [DIR ...]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "fluoroscopy-claim-review"


def child(root: str, n: int, body_file: str) -> None:
    """In the valgrind child: n requests through the app of checkout `root`."""
    sys.path.insert(0, root)
    os.chdir(root)
    tmp = tempfile.mkdtemp()
    os.environ["FLUORO_CDS_DB"], os.environ["FLUORO_CDS_STATE_DB"] = tmp + "/ncci.sqlite", tmp + "/state.sqlite"
    os.dup2(os.open(tmp + "/stderr.log", os.O_WRONLY | os.O_CREAT), 2)  # the call log lines
    import service.state
    from service.app import create_app

    # the audit thread stores its queue at the final flush only (batches of up to AUDIT_BATCH):
    # its batches, hence its instructions per request, then do not depend on valgrind's speed
    service.state.AUDIT_INTERVAL = 3600.0
    try:  # an audit writer process starts 50 times slower under valgrind
        import service.audit_writer

        service.audit_writer.START_TIMEOUT = 600.0
    except ImportError:
        pass
    app = create_app()
    listed = app.test_client().get("/cds-services").get_json()["services"]
    hook = next(s["hook"] for s in listed if s["id"] == SERVICE)
    raw = json.dumps(dict(json.loads(Path(body_file).read_text()), hook=hook)).encode()
    statuses: list[str] = []

    def call() -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/cds-services/{SERVICE}", "SCRIPT_NAME": "",
                   "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
                   "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "application/json",
                   "CONTENT_LENGTH": str(len(raw)), "HTTP_HOST": "127.0.0.1:8080", "REMOTE_ADDR": "127.0.0.1",
                   "wsgi.input": io.BytesIO(raw), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                   "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
                   "wsgi.version": (1, 0)}
        b"".join(app(environ, lambda status, headers, exc=None: statuses.append(status)))

    for _ in range(20 + n):
        call()
    assert statuses[-1].startswith("200"), statuses[-1]
    try:  # the audit writer's queued rows count too (checkouts with service.runtime)
        from service.runtime import runtime

        with app.app_context():
            state = runtime().state
            state.flush(120)
            try:  # an audit writer process stores its last batch and exits
                state.close(timeout=120)
            except TypeError:  # checkouts without one
                state.close()
    except (ImportError, KeyError):  # older checkouts: their writer's last pass may be missed
        pass


def instructions(root: Path, n: int, body_file: str) -> int:
    logs = Path(tempfile.mkdtemp(prefix="fluoro-vg-"))
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                    "--trace-children=yes", f"--log-file={logs}/vg.%p", sys.executable,
                    __file__, "--child", str(root), str(n), body_file],
                   capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"), check=True)
    deadline = time.monotonic() + 300  # a child may outlive the process that started it
    while True:  # this process and its children: each log ends with its count
        texts = [f.read_text() for f in sorted(logs.iterdir())]
        if all("Collected :" in t for t in texts) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    text = "".join(texts)
    shutil.rmtree(logs, ignore_errors=True)
    counts = re.findall(r"Collected : (\d+)", text)
    if not counts:
        raise RuntimeError(f"no instruction count from valgrind:\n{text[-2000:]}")
    return sum(map(int, counts))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]), argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*", type=Path, default=[ROOT])
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_load import request_body

    body_file = tempfile.mktemp(suffix=".json")
    Path(body_file).write_text(json.dumps(request_body(1)))
    print("# PYTHONPATH=. .venv/bin/python benchmarks/bench_instructions.py " + " ".join(argv))
    for root in args.dirs:
        root = root.resolve()
        per = (instructions(root, args.requests, body_file) - instructions(root, 0, body_file)) / args.requests
        print(f"{str(root):40} {per / 1e6:.2f} M instructions per claim-review request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
