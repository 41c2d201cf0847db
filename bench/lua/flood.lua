-- Request flood on one established MCP session (or the bare endpoint of S0), for wrk 4.
--
-- Environment (set by bench/wrkrun.py):
--   BENCH_PATH     request path ("/mcp", or "/" for the bare app)
--   BENCH_TOKEN    bearer token (empty: no Authorization header)
--   BENCH_SESSION  Mcp-Session-Id (empty: no session headers)
--   BENCH_ADDRS    optional "host:port,host:port": wrk threads are spread over these addresses in turn
--                  (S3: each connection stays on one instance; consecutive threads alternate instances)
--   BENCH_EXPECT   a string every good response body contains ("Echo: hi")
--   BENCH_MODERN   "1": protocol 2026-07-28, no session: the envelope in `_meta`, the routing headers
--
-- Every request has its own JSON-RPC id (the spec forbids reusing one within a session, and the SDK
-- server routes answers by id). Every response is checked (status 200 and the expected body); the `done` hook prints one JSON line
-- (prefixed "BENCH_JSON ") with the totals and latency percentiles in microseconds.

local path = os.getenv("BENCH_PATH") or "/mcp"
local token = os.getenv("BENCH_TOKEN") or ""
local session = os.getenv("BENCH_SESSION") or ""
local expect = os.getenv("BENCH_EXPECT") or "Echo: hi"

wrk.method = "POST"
wrk.path = path
local modern = os.getenv("BENCH_MODERN") == "1"
local body_head = '{"jsonrpc":"2.0","id":'
local body_tail = ',"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
if modern then
  body_tail = ',"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{' ..
    '"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"4"}}}}'
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "echo"
end
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if session ~= "" then
  wrk.headers["Mcp-Session-Id"] = session
  wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
end

local threads = {}
local counter = 0

function setup(thread)
  local addrs = os.getenv("BENCH_ADDRS") or ""
  if addrs ~= "" then
    local list = {}
    for item in string.gmatch(addrs, "[^,]+") do
      local host, port = string.match(item, "^(.+):(%d+)$")
      table.insert(list, wrk.lookup(host, port)[1])
    end
    thread.addr = list[(counter % #list) + 1]
  end
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  first_bad = ""
  next_id = (id or 0) * 1000000000
end

function request()
  next_id = next_id + 1
  return wrk.format(nil, nil, nil, body_head .. next_id .. body_tail)
end

function response(status, headers, body)
  if status == 200 and string.find(body, expect, 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function escape(text)
  return (string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end))
end

function done(summary, latency, requests)
  local good, failed, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    failed = failed + thread:get("bad")
    if sample == "" then sample = thread:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"ok":%d,"bad":%d,"first_bad":"%s",' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes, good, failed, escape(sample),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
