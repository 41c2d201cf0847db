#!/usr/bin/env bash
# The whole OAuth 2.1 flow and a few MCP calls against refserver, with nothing but curl, step by step.
#
#   BASE_URL=http://localhost:3232 USER_ID=alice ./examples/curl-examples.sh
#
# Needs bash, curl, and jq (or python3 when jq is missing; NO_JQ=1 forces python3), and openssl (or python3)
# for the PKCE challenge. Every step prints what it sends and what it got; the script stops at the first
# step that does not answer as expected (set -e) and exits 0 when everything worked.
#
# In a real client, step 6 to 8 happen in the person's browser: the client opens the authorization URL,
# the person approves and signs in, and the browser lands on the client's redirect URI with the code.
set -euo pipefail

BASE_URL="${BASE_URL:-http://localhost:3232}"
BASE_URL="${BASE_URL%/}"
MCP_URL="$BASE_URL/mcp"
USER_ID="${USER_ID:-alice}"
REDIRECT_URI="http://127.0.0.1:8976/callback"  # loopback: nothing has to listen there for this script
PROTOCOL_VERSION="2025-11-25"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; }
show() { printf '   %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# jget EXPR < json: a value out of a JSON document; EXPR is a jq path such as .a.b or .a[0].
if [ "${NO_JQ:-}" != "1" ] && command -v jq >/dev/null 2>&1; then
  jget() { jq -cer "$1"; }
else
  jget() {
    python3 -c '
import json, re, sys
value = json.load(sys.stdin)
for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", sys.argv[1]):
    value = value[key] if key else value[int(index)]
print(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
' "$1"
  }
fi

# query_param NAME URL: one query parameter of a URL, percent-decoded.
query_param() {
  local value
  value="$(printf '%s' "$2" | sed -n "s/.*[?&]$1=\([^&#]*\).*/\1/p")"
  value="${value//+/ }"
  printf '%b' "${value//%/\\x}"
}

# header NAME FILE: a response header's value out of a `curl -D` dump (case-insensitive, CR stripped).
header() { grep -i "^$1:" "$2" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }

# sse_data FILE: the JSON-RPC messages of a text/event-stream body, one per line.
sse_data() { sed -n 's/^data: \{0,1\}//p' "$1" | tr -d '\r'; }

step "1. POST /mcp without a token: 401, and a pointer to where tokens come from"
status="$(curl -sS -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -X POST "$MCP_URL" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}')"
[ "$status" = 401 ] || fail "expected 401, got $status: does this server ask for tokens at all (REFSERVER_AUTH_MODE=none)?"
challenge="$(header WWW-Authenticate "$WORK/headers")"
show "HTTP $status  WWW-Authenticate: $challenge"
resource_metadata_url="$(printf '%s' "$challenge" | sed -n 's/.*resource_metadata="\([^"]*\)".*/\1/p')"
[ -n "$resource_metadata_url" ] || fail "no resource_metadata in the challenge"

step "2. Protected resource metadata (RFC 9728): the resource and its authorization server"
curl -sSf "$resource_metadata_url" >"$WORK/resource.json"
RESOURCE="$(jget .resource <"$WORK/resource.json")"
ISSUER="$(jget '.authorization_servers[0]' <"$WORK/resource.json")"
show "GET $resource_metadata_url"
show "resource: $RESOURCE   authorization server: $ISSUER"

step "3. Authorization server metadata (RFC 8414): its endpoints"
curl -sSf "${ISSUER%/}/.well-known/oauth-authorization-server" >"$WORK/as.json"
[ "$(jget .issuer <"$WORK/as.json")" = "$ISSUER" ] || fail "the metadata names another issuer"
REGISTRATION_ENDPOINT="$(jget .registration_endpoint <"$WORK/as.json")"
AUTHORIZATION_ENDPOINT="$(jget .authorization_endpoint <"$WORK/as.json")"
TOKEN_ENDPOINT="$(jget .token_endpoint <"$WORK/as.json")"
show "register: $REGISTRATION_ENDPOINT"
show "authorize: $AUTHORIZATION_ENDPOINT"
show "token: $TOKEN_ENDPOINT"
show "PKCE methods: $(jget .code_challenge_methods_supported <"$WORK/as.json")"

step "4. Dynamic client registration (RFC 7591): a public client (no secret, PKCE instead)"
curl -sSf -X POST "$REGISTRATION_ENDPOINT" -H 'Content-Type: application/json' -d "{
  \"client_name\": \"curl example\",
  \"redirect_uris\": [\"$REDIRECT_URI\"],
  \"grant_types\": [\"authorization_code\", \"refresh_token\"],
  \"response_types\": [\"code\"],
  \"token_endpoint_auth_method\": \"none\"
}" >"$WORK/client.json"
CLIENT_ID="$(jget .client_id <"$WORK/client.json")"
show "client_id: $CLIENT_ID"

step "5. PKCE: a random code verifier and its S256 challenge"
if command -v openssl >/dev/null 2>&1; then
  CODE_VERIFIER="$(openssl rand -base64 48 | tr -d '\n=' | tr '+/' '-_')"
  CODE_CHALLENGE="$(printf '%s' "$CODE_VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr -d '=' | tr '+/' '-_')"
else
  CODE_VERIFIER="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
  CODE_CHALLENGE="$(python3 -c 'import base64, hashlib, sys
print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).rstrip(b"=").decode())' "$CODE_VERIFIER")"
fi
STATE="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
show "code_verifier: $CODE_VERIFIER"
show "code_challenge: $CODE_CHALLENGE   state: $STATE"

step "6. GET the authorization URL: the consent page"
status="$(curl -sS -G -o "$WORK/consent.html" -w '%{http_code}' "$AUTHORIZATION_ENDPOINT" \
  --data-urlencode response_type=code \
  --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" \
  --data-urlencode "code_challenge=$CODE_CHALLENGE" \
  --data-urlencode code_challenge_method=S256 \
  --data-urlencode "state=$STATE" \
  --data-urlencode "scope=mcp offline_access" \
  --data-urlencode "resource=$RESOURCE")"
[ "$status" = 200 ] || fail "expected the consent page (200), got $status: $(head -c 300 "$WORK/consent.html")"
REQUEST_ID="$(sed -n 's/.*name="request_id" value="\([^"]*\)".*/\1/p' "$WORK/consent.html" | head -n1)"
[ -n "$REQUEST_ID" ] || fail "no consent form on the page"
show "HTTP 200: \"$(sed -n 's:.*<h1>\(.*\)</h1>.*:\1:p' "$WORK/consent.html" | sed 's/<[^>]*>//g')\""
show "request_id (hidden form field): $REQUEST_ID"

step "7. POST the consent form (Approve): redirected to the identity provider"
IDP_URL="$(curl -sS -o /dev/null -w '%{redirect_url}' -X POST "${ISSUER%/}/authorize/consent" \
  --data-urlencode "request_id=$REQUEST_ID" --data-urlencode decision=approve)"
[ -n "$IDP_URL" ] || fail "the consent was not accepted"
show "-> $IDP_URL"
IDP_STATE="$(query_param state "$IDP_URL")"

step "8. The mock identity provider: sign in as '$USER_ID'; redirected to the client with a code"
CALLBACK_URL="$(curl -sS -G -o /dev/null -w '%{redirect_url}' "${ISSUER%/}/mock-upstream-idp/callback" \
  --data-urlencode "state=$IDP_STATE" --data-urlencode "userId=$USER_ID")"
show "-> $CALLBACK_URL"
CODE="$(query_param code "$CALLBACK_URL")"
[ -n "$CODE" ] || fail "no code in the redirect: $CALLBACK_URL"
[ "$(query_param state "$CALLBACK_URL")" = "$STATE" ] || fail "the state came back changed"
[ "$(query_param iss "$CALLBACK_URL")" = "$ISSUER" ] || fail "the iss parameter names another issuer (RFC 9207)"
show "code: $CODE (state and iss checked)"

step "9. Token exchange: the code and the PKCE verifier for tokens"
curl -sSf -X POST "$TOKEN_ENDPOINT" \
  --data-urlencode grant_type=authorization_code \
  --data-urlencode "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" \
  --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "code_verifier=$CODE_VERIFIER" \
  --data-urlencode "resource=$RESOURCE" >"$WORK/tokens.json"
ACCESS_TOKEN="$(jget .access_token <"$WORK/tokens.json")"
REFRESH_TOKEN="$(jget .refresh_token <"$WORK/tokens.json")"
show "access_token: ${ACCESS_TOKEN:0:24}… (a JWT, $(jget .expires_in <"$WORK/tokens.json") s)"
show "scope: $(jget .scope <"$WORK/tokens.json")   refresh_token: ${REFRESH_TOKEN:0:12}…"

step "10. initialize with the token: a session, named by the Mcp-Session-Id header"
curl -sSf -D "$WORK/headers" -o "$WORK/init.json" -X POST "$MCP_URL" \
  -H "Authorization: Bearer $ACCESS_TOKEN" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{
        \"protocolVersion\":\"$PROTOCOL_VERSION\",\"capabilities\":{},
        \"clientInfo\":{\"name\":\"curl-example\",\"version\":\"1.0\"}}}"
SESSION_ID="$(header Mcp-Session-Id "$WORK/headers")"
[ -n "$SESSION_ID" ] || fail "no Mcp-Session-Id header"
show "server: $(jget .result.serverInfo.name <"$WORK/init.json") $(jget .result.serverInfo.version <"$WORK/init.json"), protocol $(jget .result.protocolVersion <"$WORK/init.json")"
show "Mcp-Session-Id: $SESSION_ID"
mcp() {  # mcp JSON-BODY [curl options...]: one POST in the session
  local body="$1"; shift
  curl -sS -X POST "$MCP_URL" "$@" \
    -H "Authorization: Bearer $ACCESS_TOKEN" -H "Mcp-Session-Id: $SESSION_ID" \
    -H "MCP-Protocol-Version: $PROTOCOL_VERSION" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d "$body"
}
status="$(mcp '{"jsonrpc":"2.0","method":"notifications/initialized"}' -o /dev/null -w '%{http_code}')"
[ "$status" = 202 ] || fail "notifications/initialized: expected 202, got $status"
show "notifications/initialized: HTTP 202"

step "11. tools/call echo"
mcp '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello from curl"}}}' \
  -f -o "$WORK/echo.json"
ECHOED="$(jget '.result.content[0].text' <"$WORK/echo.json")"
[ "$ECHOED" = "Echo: hello from curl" ] || fail "unexpected echo: $ECHOED"
show "$ECHOED"

step "12. A streamed call: longRunningOperation with a progressToken answers with Server-Sent Events (curl -N)"
mcp '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"longRunningOperation",
     "arguments":{"duration":1,"steps":3},"_meta":{"progressToken":"curl-progress"}}}' \
  -N -f -D "$WORK/headers" -o "$WORK/stream.txt"
show "Content-Type: $(header Content-Type "$WORK/headers")"
sed 's/^/   | /' "$WORK/stream.txt"
[ "$(sse_data "$WORK/stream.txt" | grep -c '"notifications/progress"')" = 3 ] || fail "expected 3 progress notifications"
RESULT="$(sse_data "$WORK/stream.txt" | grep '"id":3' | jget '.result.content[0].text')"
show "result: $RESULT"

step "13. Refresh: a new access token AND a new refresh token (the old one is now dead)"
curl -sSf -X POST "$TOKEN_ENDPOINT" \
  --data-urlencode grant_type=refresh_token \
  --data-urlencode "refresh_token=$REFRESH_TOKEN" \
  --data-urlencode "client_id=$CLIENT_ID" >"$WORK/refreshed.json"
NEW_ACCESS_TOKEN="$(jget .access_token <"$WORK/refreshed.json")"
NEW_REFRESH_TOKEN="$(jget .refresh_token <"$WORK/refreshed.json")"
[ "$NEW_REFRESH_TOKEN" != "$REFRESH_TOKEN" ] || fail "the refresh token was not rotated"
ACCESS_TOKEN="$NEW_ACCESS_TOKEN"
show "new access_token: ${ACCESS_TOKEN:0:24}…   new refresh_token: ${NEW_REFRESH_TOKEN:0:12}…"
mcp '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}' \
  -f -o "$WORK/add.json"
show "tools/call add with the new token: $(jget '.result.content[0].text' <"$WORK/add.json")"

# --- protocol 2026-07-28: the same endpoint, the same token, no session -----------------------------------
MODERN="2026-07-28"
META="\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"$MODERN\",
  \"io.modelcontextprotocol/clientInfo\":{\"name\":\"curl-example\",\"version\":\"1.0\"},
  \"io.modelcontextprotocol/clientCapabilities\":{\"sampling\":{}}}"
modern() {  # modern METHOD [NAME] JSON-BODY [curl options...]: one self-contained 2026 request
  local method="$1" name="$2" body="$3"
  shift 3
  curl -sS -X POST "$MCP_URL" -H "Authorization: Bearer $ACCESS_TOKEN" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -H "MCP-Protocol-Version: $MODERN" -H "Mcp-Method: $method" ${name:+-H "Mcp-Name: $name"} -d "$body" "$@"
}

step "15. 2026-07-28: server/discover (every request carries its version and capabilities in _meta)"
modern server/discover "" "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"server/discover\",\"params\":{$META}}" \
  -f -o "$WORK/discover.json"
show "supported versions: $(jget .result.supportedVersions <"$WORK/discover.json")   result type: $(jget .result.resultType <"$WORK/discover.json")"

step "16. 2026-07-28: tools/call echo, no initialize, no Mcp-Session-Id"
modern tools/call echo "{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",
  \"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"stateless curl\"},$META}}" -f -o "$WORK/echo26.json"
show "$(jget '.result.content[0].text' <"$WORK/echo26.json")"

step "17. 2026-07-28: a multi round-trip call: sampleLLM answers InputRequiredResult, the retry carries the answer"
modern tools/call sampleLLM "{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/call\",
  \"params\":{\"name\":\"sampleLLM\",\"arguments\":{\"prompt\":\"Say hi\",\"maxTokens\":20},$META}}" \
  -f -o "$WORK/round1.json"
[ "$(jget .result.resultType <"$WORK/round1.json")" = input_required ] || fail "expected an InputRequiredResult"
KEY="$(jget '.result.inputRequests | keys[0]' <"$WORK/round1.json" 2>/dev/null || echo sample)"
show "round 1: resultType input_required, asks $(jget ".result.inputRequests.$KEY.method" <"$WORK/round1.json")"
STATE_FIELD=""
if STATE="$(jget .result.requestState <"$WORK/round1.json" 2>/dev/null)"; then
  STATE_FIELD=",\"requestState\":\"$STATE\""
fi
modern tools/call sampleLLM "{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tools/call\",
  \"params\":{\"name\":\"sampleLLM\",\"arguments\":{\"prompt\":\"Say hi\",\"maxTokens\":20},
  \"inputResponses\":{\"$KEY\":{\"role\":\"assistant\",\"content\":{\"type\":\"text\",\"text\":\"Hi from curl\"},
  \"model\":\"curl-model\",\"stopReason\":\"endTurn\"}}$STATE_FIELD,$META}}" -f -o "$WORK/round2.json"
show "round 2: $(jget '.result.content[0].text' <"$WORK/round2.json")"

step "18. 2026-07-28: subscriptions/listen opens a long-lived stream; the first event acknowledges the filter"
modern subscriptions/listen "" "{\"jsonrpc\":\"2.0\",\"id\":14,\"method\":\"subscriptions/listen\",
  \"params\":{\"notifications\":{\"toolsListChanged\":true},$META}}" -N --max-time 2 -o "$WORK/listen.txt" || true
sed 's/^/   | /' "$WORK/listen.txt" | head -n 3
sse_data "$WORK/listen.txt" | grep -q '"notifications/subscriptions/acknowledged"' || fail "no acknowledgement"

step "19. 2026-07-28: longRunningOperation as a task (the tasks extension declared): a handle now, the result later"
TASKS_META="\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"$MODERN\",
  \"io.modelcontextprotocol/clientInfo\":{\"name\":\"curl-example\",\"version\":\"1.0\"},
  \"io.modelcontextprotocol/clientCapabilities\":{\"extensions\":{\"io.modelcontextprotocol/tasks\":{}}}}"
modern tools/call longRunningOperation "{\"jsonrpc\":\"2.0\",\"id\":15,\"method\":\"tools/call\",
  \"params\":{\"name\":\"longRunningOperation\",\"arguments\":{\"duration\":1,\"steps\":2},$TASKS_META}}" \
  -f -o "$WORK/task.json"
[ "$(jget .result.resultType <"$WORK/task.json")" = task ] || fail "expected a task handle"
TASK_ID="$(jget .result.taskId <"$WORK/task.json")"
show "task $TASK_ID: $(jget .result.status <"$WORK/task.json"), poll every $(jget .result.pollIntervalMs <"$WORK/task.json") ms"
for _ in $(seq 1 50); do
  modern tasks/get "$TASK_ID" "{\"jsonrpc\":\"2.0\",\"id\":16,\"method\":\"tasks/get\",
    \"params\":{\"taskId\":\"$TASK_ID\",$TASKS_META}}" -f -o "$WORK/task-get.json"
  [ "$(jget .result.status <"$WORK/task-get.json")" = completed ] && break
  sleep 0.2
done
[ "$(jget .result.status <"$WORK/task-get.json")" = completed ] || fail "the task did not complete"
show "tasks/get: completed, $(jget '.result.result.content[0].text' <"$WORK/task-get.json")"

step "20. DELETE /mcp: end the (2025) session"
status="$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$MCP_URL" \
  -H "Authorization: Bearer $ACCESS_TOKEN" -H "Mcp-Session-Id: $SESSION_ID" \
  -H "MCP-Protocol-Version: $PROTOCOL_VERSION")"
show "DELETE: HTTP $status"
case "$status" in 200 | 204) ;; *) fail "expected 200 or 204, got $status" ;; esac
status="$(mcp '{"jsonrpc":"2.0","id":5,"method":"ping"}' -o /dev/null -w '%{http_code}')"
[ "$status" = 404 ] || fail "the deleted session still answers ($status)"
show "the session is gone: a request in it gets HTTP $status"

printf '\n== done: every step worked\n'
