"""The web layer both apps stand on (the MCP server and the standalone authorization server): Host/Origin
policy, security and CORS headers, exceptions as JSON-RPC error responses, and the HTTP observation middleware.
It sits below `transport/` and `oauth/` and imports neither."""
