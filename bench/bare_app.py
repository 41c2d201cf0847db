"""S0, the ceiling of our stack: a trivial Quart-Trio JSON endpoint on the same Hypercorn trio worker.

It reads the request body (as any JSON-RPC endpoint must) and answers a fixed small JSON document.

    hypercorn --config bench/hypercorn-bench.toml --bind 127.0.0.1:PORT bench.bare_app:app
"""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

app = QuartTrio("bench-bare")
BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hi"}],"isError":false}}'


@app.post("/")
async def echo() -> Response:
    await request.get_data()
    return Response(BODY, content_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', content_type="application/json")
