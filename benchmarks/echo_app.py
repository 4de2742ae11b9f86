"""The ceiling for bench_load.py: a bare Flask app echoing the JSON body it receives (orjson)."""
from __future__ import annotations

import orjson
from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask("echo")

    @app.post("/echo")
    def echo():
        return Response(orjson.dumps(orjson.loads(request.get_data())), mimetype="application/json")

    return app
