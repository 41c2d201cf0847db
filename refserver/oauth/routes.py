"""The embedded authorization server's HTTP surface (Quart): metadata, JWKS, registration, the browser flow
(/authorize -> consent -> mock upstream identity provider -> client redirect), token, introspection, revocation.

Handlers parse, call `AuthorizationServer`, and raise; the blueprint's error handlers are the one place where
errors become responses: OAuth-shaped JSON (RFC 6749 sec. 5.2) for the API endpoints, an HTML page for the
browser endpoints, and never a redirect for an /authorize error that does not name a verified redirect URI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

from quart import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from refserver.config import BODY_READ_TIMEOUT
from refserver.errors import OAuthError, RateLimited, RefserverError, ServiceUnavailable
from refserver.oauth import pages
from refserver.oauth.clients import ClientCredentials
from refserver.oauth.http import (
    BASIC_REALM,
    FORM_TYPE,
    JSON_TYPE,
    MAX_FORM_BYTES,
    MAX_JSON_BYTES,
    client_credentials,
    error_body,
    parse_form,
    parse_json_object,
    require_media_type,
    single_values,
)
from refserver.oauth.ratelimit import RateLimiter
from refserver.oauth.redirects import AuthorizePageError, RedirectingOAuthError
from refserver.oauth.server import AuthorizationServer
from refserver.request_body import read_bounded_body

logger = logging.getLogger(__name__)

METADATA_MAX_AGE: Final = 300
"""Metadata and JWKS may be cached for five minutes: short enough that a key rotation is seen quickly."""
CORS_MAX_AGE: Final = 86400
"""Browsers cache our preflight answers for a day (they cap it lower themselves)."""
UNAVAILABLE_RETRY_AFTER: Final = 5
"""Seconds a client is told to wait when the store is down."""

CORS_ALLOW_HEADERS: Final = "Authorization, Content-Type, MCP-Protocol-Version"
CORS_EXPOSE_HEADERS: Final = "WWW-Authenticate, Retry-After"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

CORS_ENDPOINTS: Final = frozenset({"metadata", "jwks", "register", "token", "revoke"})
"""Endpoints a browser-based MCP client calls from its own origin (introspection is for resource servers)."""
HTML_ENDPOINTS: Final = frozenset({"authorize", "consent", "idp_authorize", "idp_callback"})
"""Endpoints a person's browser navigates to: errors are pages, not JSON."""


def _endpoint() -> str:
    return (request.endpoint or "").rpartition(".")[2]


def _cors_headers() -> dict[str, str]:
    if _endpoint() not in CORS_ENDPOINTS:
        return {}
    return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS}


def _preflight(*methods: str) -> Response:
    return Response(
        "",
        status=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": ", ".join((*methods, "OPTIONS")),
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": str(CORS_MAX_AGE),
        },
    )


def _json(document: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(document),
        status=status,
        content_type="application/json",
        headers={**_cors_headers(), **(headers or {})},
    )


def _html(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        body,
        status=status,
        content_type="text/html; charset=utf-8",
        headers=dict(headers) if headers else pages.security_headers(),
    )


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location, "Referrer-Policy": "no-referrer", **NO_STORE})


def _error(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> Response:
    """The one shape of every failure: JSON for API endpoints, a page for browser endpoints."""
    if _endpoint() in HTML_ENDPOINTS:
        title = {429: "Too many requests", 503: "Temporarily unavailable"}.get(
            status, "Something went wrong" if status >= 500 else "This sign-in cannot continue"
        )
        response = _html(pages.error_page(title, description), status)
    else:
        response = Response(
            error_body(error, description),
            status=status,
            content_type="application/json",
            headers={**_cors_headers(), **NO_STORE},
        )
    response.headers.update(headers or {})
    if status in (408, 413):
        response.headers["Connection"] = "close"  # the rest of the body was never read
    return response


async def _read_body(limit: int, time_limit: float) -> bytes:
    """A form or registration body: 413 beyond `limit` bytes, 408 (a slow loris) after `time_limit` seconds."""
    return await read_bounded_body(
        request.body, request.headers.get("Content-Length"), limit=limit, time_limit=time_limit
    )


def _query() -> dict[str, str]:
    return {k: v for k, v in single_values(request.args.items(multi=True)).items() if v != ""}


def _credentials(form: Mapping[str, str]) -> ClientCredentials:
    authorization = request.headers.getlist("Authorization")
    if len(authorization) > 1:
        raise OAuthError("invalid_request", "more than one Authorization header")
    return client_credentials(authorization[0] if authorization else None, form)


def create_blueprint(
    server: AuthorizationServer, limiter: RateLimiter, *, body_read_timeout: float = BODY_READ_TIMEOUT
) -> Blueprint:
    blueprint = Blueprint("oauth", __name__)

    async def read_form() -> dict[str, str]:
        body = await _read_body(MAX_FORM_BYTES, body_read_timeout)
        require_media_type(request.headers.get("Content-Type"), FORM_TYPE)
        return parse_form(body)

    def client_ip() -> str:
        forwarded = request.headers.getlist("X-Forwarded-For")
        return limiter.client_ip(request.remote_addr or "", ", ".join(forwarded) or None)

    # --- discovery -----------------------------------------------------------------------------------

    @blueprint.route("/.well-known/oauth-authorization-server", methods=["GET", "OPTIONS"])
    async def metadata() -> Response:
        if request.method == "OPTIONS":
            return _preflight("GET")
        return _json(server.metadata(), headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"})

    @blueprint.route("/.well-known/jwks.json", methods=["GET", "OPTIONS"])
    async def jwks() -> Response:
        if request.method == "OPTIONS":
            return _preflight("GET")
        return _json(server.keys.jwks(), headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"})

    # --- dynamic client registration (RFC 7591) ------------------------------------------------------

    @blueprint.route("/register", methods=["POST", "OPTIONS"])
    async def register() -> Response:
        if request.method == "OPTIONS":
            return _preflight("POST")
        body = await _read_body(MAX_JSON_BYTES, body_read_timeout)
        await limiter.check("register", client_ip())
        require_media_type(request.headers.get("Content-Type"), JSON_TYPE)
        document = parse_json_object(body)
        client = await server.clients.register(document)
        return _json(client, status=201, headers=NO_STORE)

    # --- the browser flow ----------------------------------------------------------------------------

    @blueprint.get("/authorize")
    async def authorize() -> Response:
        await limiter.check("authorize", client_ip())
        params = _query()
        pending = await server.authorization.begin(params)
        client = await server.authorization.client(pending.client_id)
        if client is None:  # deleted between the two reads
            raise AuthorizePageError("Unknown client: register it first (RFC 7591).")
        page = pages.consent_page(
            request_id=pending.request_id,
            client_name=client.client_name,
            client_host=client.document_host,
            scopes=pending.scopes,
            resource=pending.resource,
            redirect_uri=pending.redirect_uri,
        )
        return _html(page, headers=pages.security_headers(pages.form_origin(pending.redirect_uri)))

    @blueprint.post("/authorize/consent")
    async def consent() -> Response:
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise AuthorizePageError("The consent form was submitted from another site.")
        form = await read_form()
        request_id = form.get("request_id")
        decision = form.get("decision")
        if not request_id or decision not in ("approve", "deny"):
            raise AuthorizePageError("The consent form needs a request_id and a decision (approve or deny).")
        denied_url = await server.authorization.record_consent(request_id, decision == "approve")
        if denied_url is not None:
            return _redirect(denied_url)
        return _redirect(f"/mock-upstream-idp/authorize?{urlencode({'state': request_id})}")

    @blueprint.get("/mock-upstream-idp/authorize")
    async def idp_authorize() -> Response:
        state = _query().get("state")
        if not state:
            raise AuthorizePageError("The state parameter is missing.")
        pending, client = await server.authorization.pending(state)
        if not pending.consented:
            raise AuthorizePageError("This authorization request has not been approved yet.")
        page = pages.idp_page(state=state, client_name=client.client_name)
        return _html(page, headers=pages.security_headers(pages.form_origin(pending.redirect_uri)))

    @blueprint.get("/mock-upstream-idp/callback")
    async def idp_callback() -> Response:
        params = _query()
        state, user_id = params.get("state"), params.get("userId")
        if not state or not user_id:
            raise AuthorizePageError("The state and userId parameters are required.")
        return _redirect(await server.authorization.complete(state, user_id))

    # --- token, introspection, revocation ------------------------------------------------------------

    @blueprint.route("/token", methods=["POST", "OPTIONS"])
    async def token() -> Response:
        if request.method == "OPTIONS":
            return _preflight("POST")
        form = await read_form()
        await limiter.check("token", client_ip())
        result = await server.tokens.token(form, _credentials(form))
        return _json(result, headers=NO_STORE)

    @blueprint.post("/introspect")
    async def introspect() -> Response:
        form = await read_form()
        result = await server.introspection.introspect(form, _credentials(form))
        return _json(result, headers=NO_STORE)

    @blueprint.route("/revoke", methods=["POST", "OPTIONS"])
    async def revoke() -> Response:
        if request.method == "OPTIONS":
            return _preflight("POST")
        form = await read_form()
        await limiter.check("revoke", client_ip())
        await server.revoker.revoke(form, _credentials(form))
        return Response("", status=200, headers={**_cors_headers(), **NO_STORE})

    # --- errors: the one place they become responses -------------------------------------------------

    @blueprint.errorhandler(RedirectingOAuthError)
    async def on_redirecting_error(exc: RedirectingOAuthError) -> Response:
        return _redirect(exc.redirect_url)

    @blueprint.errorhandler(AuthorizePageError)
    async def on_page_error(exc: AuthorizePageError) -> Response:
        return _error(400, "invalid_request", str(exc))

    @blueprint.errorhandler(OAuthError)
    async def on_oauth_error(exc: OAuthError) -> Response:
        status = exc.status if 400 <= exc.status < 600 else 400
        # RFC 9110 sec. 15.5.2: a 401 carries a challenge (RFC 6749 sec. 5.2 asks for it after Basic).
        headers = {"WWW-Authenticate": BASIC_REALM} if status == 401 else None
        return _error(status, exc.error, exc.message, headers)

    @blueprint.errorhandler(RateLimited)
    async def on_rate_limited(exc: RateLimited) -> Response:
        return _error(429, "rate_limited", exc.message, {"Retry-After": str(exc.retry_after)})

    @blueprint.errorhandler(ServiceUnavailable)
    async def on_unavailable(exc: ServiceUnavailable) -> Response:
        logger.warning("authorization server unavailable: %s", exc.message)
        return _error(
            503,
            "temporarily_unavailable",
            "the authorization server cannot reach its store; try again shortly",
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )

    @blueprint.errorhandler(RefserverError)
    async def on_refserver_error(exc: RefserverError) -> Response:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        return _error(status, "invalid_request" if status < 500 else "server_error", exc.message)

    @blueprint.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        error = "invalid_request" if status < 500 else "server_error"
        return _error(status, error, exc.description or exc.name)

    @blueprint.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        logger.error("unhandled error in %s", request.path, exc_info=exc)
        return _error(500, "server_error", "internal error")

    return blueprint
