"""`python -m refserver`: developer commands.

    python -m refserver token --user alice [--base-url URL] [--scope S] [--json]
        [--client-id ID [--client-secret S] | --client-metadata-url URL] [--credentials-file FILE]
    python -m refserver settings

`token` drives the real OAuth flow against a running server over HTTP (discovery, a client id, PKCE,
consent, the mock identity provider, the token exchange; see `refserver.oauth.headless`) and prints only the
access token, ready for `curl -H "Authorization: Bearer $(python -m refserver token --user alice)"` or the MCP
Inspector's manual header field. Nothing is shortcut on the server side, so it works against any instance
whatever its storage, and against an MCP server that trusts an external authorization server.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import httpx
import trio

from refserver.oauth.authorization import SUBJECT_PATTERN
from refserver.oauth.headless import FlowError, IssuerCredentials, obtain_tokens

DEFAULT_BASE_URL: Final = "http://localhost:3232"
DEFAULT_TIMEOUT: Final = 30.0
"""Seconds each HTTP request of the flow may take."""
START_HINT: Final = "start one with: hypercorn --config hypercorn.toml refserver.app:app"

_MARKUP: Final = re.compile(r"<(style|script)\b.*?(?:</\1>|$)|<[^>]*>?", re.DOTALL | re.IGNORECASE)
"""Tags, and style or script blocks (possibly cut short: `FlowError` quotes only a body's first characters)."""


class CommandError(Exception):
    """A failure the user can act on: the message is printed as is, the exit code is 1."""


# --- token ---------------------------------------------------------------------------------------------


def mcp_url_for(base_url: str) -> str:
    """The MCP endpoint of a server: its base URL + `/mcp` (a URL already naming `/mcp` is kept)."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CommandError(f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL}, not {base_url!r}")
    return base if parts.path.endswith("/mcp") else f"{base}/mcp"


def _readable(text: str) -> str:
    """A server's answer as one line of text: HTML pages lose their markup."""
    return " ".join(html.unescape(_MARKUP.sub(" ", text)).split())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _check_server(http: httpx.AsyncClient, mcp_url: str) -> None:
    """Fail early, and clearly, when nothing answers or the server does not ask for tokens at all."""
    origin = _origin(mcp_url)
    try:
        response = await http.get(f"{origin}/health")
    except httpx.TransportError as exc:
        raise CommandError(
            f"cannot reach {origin} ({_describe(exc)}): is refserver running there? {START_HINT}"
        ) from exc
    try:
        document = response.json()
    except ValueError:
        return  # not refserver's /health: let discovery speak for itself
    auth = document.get("auth") if isinstance(document, dict) else None
    if isinstance(auth, dict) and auth.get("mode") == "none":
        raise CommandError(
            f"this server does not require a token (REFSERVER_AUTH_MODE=none): call {mcp_url} without an "
            "Authorization header"
        )


def _describe(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "connection refused or host unknown",
        httpx.TimeoutException: "timed out",
    }
    for cls, text in kind.items():
        if isinstance(exc, cls):
            return text
    return type(exc).__name__


async def fetch_tokens(
    base_url: str,
    *,
    user: str,
    scope: str | None,
    request_timeout: float,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_metadata_url: str | None = None,
    credentials_file: Path | None = None,
) -> dict[str, Any]:
    """The whole OAuth flow for `user` against the server at `base_url`; the token response."""
    if not SUBJECT_PATTERN.fullmatch(user):
        raise CommandError(f"--user {user!r}: a user id is 1-64 letters, digits or . _ @ + -")
    if client_secret is not None and client_id is None:
        raise CommandError("--client-secret needs --client-id (the pre-registered client it belongs to)")
    if client_metadata_url is not None and urlsplit(client_metadata_url).scheme not in ("http", "https"):
        raise CommandError(f"--client-metadata-url must be an http(s) URL, not {client_metadata_url!r}")
    mcp_url = mcp_url_for(base_url)
    credentials = _load_credentials(credentials_file)
    async with httpx.AsyncClient(timeout=httpx.Timeout(request_timeout)) as http:
        await _check_server(http, mcp_url)
        try:
            return await obtain_tokens(
                http,
                mcp_url,
                user=user,
                scope=scope,
                client_name="refserver token command",
                client_id=client_id,
                client_secret=client_secret,
                client_metadata_url=client_metadata_url,
                credentials=credentials,
            )
        except FlowError as exc:
            message = _readable(str(exc))
            if message.startswith("protected resource metadata: expected HTTP 200, got 404"):
                raise CommandError(
                    f"{_origin(mcp_url)} publishes no OAuth protected resource metadata: it does not ask for tokens "
                    "(REFSERVER_AUTH_MODE=none?) or is not an MCP server"
                ) from exc
            raise CommandError(f"the OAuth flow failed: {message}") from exc
        except httpx.TransportError as exc:
            where = _origin(str(exc.request.url)) if _has_request(exc) else "the server"
            raise CommandError(
                f"cannot reach {where} ({_describe(exc)}) during the OAuth flow"
                + (
                    ": the authorization server this MCP server trusts is down or unreachable"
                    if where != _origin(mcp_url)
                    else ""
                )
            ) from exc
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CommandError(f"unexpected answer from the server during the OAuth flow: {exc!r}") from exc


def _load_credentials(path: Path | None) -> IssuerCredentials:
    try:
        return IssuerCredentials(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--credentials-file {path}: cannot be read as client credentials: {exc}") from exc


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018  (raises RuntimeError when the exception carries no request)
    except RuntimeError:
        return False
    return True


def _token(args: argparse.Namespace, out: TextIO) -> None:
    fetch = functools.partial(
        fetch_tokens,
        args.base_url,
        user=args.user,
        scope=args.scope,
        request_timeout=args.timeout,
        client_id=args.client_id,
        client_secret=args.client_secret,
        client_metadata_url=args.client_metadata_url,
        credentials_file=args.credentials_file,
    )
    tokens = trio.run(fetch)
    if args.json:
        out.write(json.dumps(tokens, indent=2, sort_keys=True) + "\n")
    else:
        out.write(f"{tokens['access_token']}\n")


# --- settings ------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, out: TextIO) -> None:
    from refserver.config import documented_settings, settings_table_markdown

    if args.format == "markdown":
        out.write(settings_table_markdown() + "\n")
    else:
        rows = [{"variable": name, "default": default, "meaning": doc} for name, default, doc in documented_settings()]
        out.write(json.dumps(rows, indent=2) + "\n")


# --- the command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m refserver",
        description="Developer commands for refserver, the MCP reference server.",
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    token = commands.add_parser(
        "token",
        help="sign in as a user through the real OAuth flow and print an access token",
        description="Drive the real OAuth flow against a running server over HTTP (discovery, registration,\n"
        "PKCE, consent, the mock identity provider, token exchange) and print only the access token.",
        epilog='example:\n  curl -H "Authorization: Bearer $(python -m refserver token --user alice)" ...',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--user", required=True, help="the user id to sign in as at the mock identity provider")
    token.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"the MCP server's base URL; its MCP endpoint is BASE_URL/mcp (default: {DEFAULT_BASE_URL})",
    )
    token.add_argument(
        "--scope",
        help="space-separated scopes to ask for (default: the scope of the server's 401 challenge, else every "
        "scope its protected resource metadata lists, else none)",
    )
    client = token.add_mutually_exclusive_group()
    client.add_argument(
        "--client-id", help="a client id registered in advance with the authorization server (no registration)"
    )
    client.add_argument(
        "--client-metadata-url",
        metavar="URL",
        help="use URL, a Client ID Metadata Document, as the client id when the authorization server supports "
        "them (client_id_metadata_document_supported); otherwise fall back to dynamic registration",
    )
    token.add_argument(
        "--client-secret",
        help="the secret of the --client-id client, sent as client_secret_basic or client_secret_post as the "
        "authorization server's metadata allows",
    )
    token.add_argument(
        "--credentials-file",
        type=Path,
        metavar="FILE",
        help="keep clients from dynamic registration in FILE (JSON, mode 0600), keyed by issuer: reused only with "
        "the same authorization server, never sent to another",
    )
    token.add_argument(
        "--json", action="store_true", help="print the whole token response (refresh token, scope, client id)"
    )
    token.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds each HTTP request may take (default: 30)"
    )
    token.set_defaults(run=_token)

    settings = commands.add_parser(
        "settings",
        help="list every REFSERVER_* setting with its default",
        description="List every REFSERVER_* environment setting, its default and its meaning.",
    )
    settings.add_argument("--format", choices=("markdown", "json"), default="markdown")
    settings.set_defaults(run=_settings)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(err)
        return 2
    try:
        args.run(args, out)
    except CommandError as exc:
        err.write(f"refserver {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"refserver {args.command}: interrupted\n")
        return 130
    return 0
