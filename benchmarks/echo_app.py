"""A bare Flask app echoing a JSON body with orjson: the reference for throughput ratios."""
from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask("echo")


@app.post("/echo")
def echo():
    return Response(orjson.dumps(orjson.loads(request.get_data())), mimetype="application/json")
