"""The authorization server's HTML: the consent page, the mock upstream identity provider, error pages.

Plain strings, no Quart. Everything that comes from a request or a registration is passed through
`html.escape`; the pages have no script at all, and their Content-Security-Policy says so.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

DEMO_USERS: Final = (
    ("alice", "Alice Example", "an everyday user"),
    ("bob", "Bob Example", "a second user, to see that sessions and tokens are per user"),
    ("carol", "Carol Example", "a third user"),
)
"""The people the mock identity provider offers (any other id can be typed in)."""

SCOPE_DESCRIPTIONS: Final = {
    "mcp": "Use this MCP server's tools, resources and prompts on your behalf",
    "offline_access": "Stay connected when you are not around (a refresh token)",
    "mcp:admin": "Use the administrator tools (whoAmI, the step-up authorization example)",
}

_CSP_ORIGIN: Final = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?")
"""What a CSP host-source can express; anything else (an IPv6 literal) falls back to its scheme."""

_STYLE: Final = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f5f7;color:#1b1b1f;margin:0;
line-height:1.5}
main{max-width:32rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.35rem;margin:0 0 1rem}
.muted{color:#5b5d66;font-size:.92rem}
ul.scopes{padding-left:1.2rem}
ul.scopes li{margin:.3rem 0}
code{background:#f0f1f4;padding:.05rem .3rem;border-radius:4px;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:1rem 0}
dt{color:#5b5d66}
dd{margin:0;word-break:break-all}
.actions{display:flex;gap:.75rem;margin-top:1.5rem}
button{font:inherit;padding:.6rem 1.2rem;border-radius:8px;border:1px solid #c5c7cf;background:#fff;cursor:pointer}
button.primary{background:#1f5fd6;border-color:#1f5fd6;color:#fff}
.users{display:grid;gap:.6rem;margin:1rem 0}
.users button{text-align:left;width:100%}
.users small{display:block;color:#5b5d66}
input[type=text]{font:inherit;padding:.55rem .7rem;border:1px solid #c5c7cf;border-radius:8px;width:100%}
.row{display:flex;gap:.5rem;margin-top:.5rem}
.row input{flex:1}
.row button{white-space:nowrap}
.notice{background:#fff8e1;border:1px solid #f0d78c;border-radius:8px;padding:.6rem .9rem;font-size:.92rem}
.error{border-left:4px solid #c62828;padding-left:1rem}
"""


def form_origin(redirect_uri: str) -> str | None:
    """The CSP source for a client redirect (form submissions end in a redirect there)."""
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    except ValueError:
        return None
    return origin if _CSP_ORIGIN.fullmatch(origin) else f"{parts.scheme}:"


def security_headers(*form_targets: str | None) -> dict[str, str]:
    """Headers for every HTML page: no script, no framing, no referrer, no caching."""
    form_action = " ".join(["'self'", *(t for t in form_targets if t)])
    return {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{html.escape(title)} — refserver</title>
<style>{_STYLE}</style></head>
<body><main>
{body}
</main></body></html>
"""


def _host(uri: str) -> str:
    """host[:port]: two loopback clients on different ports must not look the same."""
    try:
        return urlsplit(uri).netloc or uri
    except ValueError:
        return uri


def consent_page(
    *,
    request_id: str,
    client_name: str,
    scopes: Iterable[str],
    resource: str,
    redirect_uri: str,
    client_host: str | None = None,
) -> str:
    e = html.escape
    items = (
        "".join(
            f"<li><code>{e(scope)}</code> — {e(SCOPE_DESCRIPTIONS.get(scope, 'Access this server'))}</li>"
            for scope in sorted(scopes)
        )
        or "<li>No particular permissions (sign-in only)</li>"
    )
    body = f"""<h1>Allow <strong>{e(client_name)}</strong> to use this MCP server?</h1>
<p class="muted">The application is asking for:</p>
<ul class="scopes">{items}</ul>
<dl>
{f"<dt>Application published by</dt><dd><code>{e(client_host)}</code></dd>" if client_host else ""}
<dt>Server</dt><dd><code>{e(resource)}</code></dd>
<dt>Sends you back to</dt><dd><code>{e(_host(redirect_uri))}</code></dd>
</dl>
<p class="notice">Only approve if you started this sign-in and recognise the application and where it sends you
back. The name above is chosen by the application itself and is not verified{
        "; the publisher is the host that serves the application's metadata document" if client_host else ""
    }.</p>
<form method="post" action="/authorize/consent">
<input type="hidden" name="request_id" value="{e(request_id)}">
<div class="actions">
<button class="primary" type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</div>
</form>"""
    return _page("Authorize application", body)


def idp_page(*, state: str, client_name: str) -> str:
    e = html.escape
    users = "".join(
        f'<button type="submit" name="userId" value="{e(user_id)}"><strong>{e(name)}</strong>'
        f" <code>{e(user_id)}</code><small>{e(about)}</small></button>"
        for user_id, name, about in DEMO_USERS
    )
    body = f"""<h1>Mock identity provider</h1>
<p class="notice">This page stands in for the upstream identity provider a real deployment would send you to
(Google, GitHub, your company's single sign-on). There are no passwords: pick who you are, and the
authorization server will issue tokens for that user id.</p>
<p class="muted">Signing in to continue to <strong>{e(client_name)}</strong>.</p>
<form method="get" action="/mock-upstream-idp/callback">
<input type="hidden" name="state" value="{e(state)}">
<div class="users">{users}</div>
</form>
<form method="get" action="/mock-upstream-idp/callback">
<input type="hidden" name="state" value="{e(state)}">
<label for="userId">Or type any user id (letters, digits, <code>. _ @ + -</code>):</label>
<div class="row">
<input type="text" id="userId" name="userId" required maxlength="64" pattern="[A-Za-z0-9._@+\\-]{{1,64}}"
 autocomplete="username">
<button class="primary" type="submit">Sign in</button>
</div>
</form>"""
    return _page("Sign in", body)


def error_page(title: str, message: str) -> str:
    e = html.escape
    body = f"""<div class="error"><h1>{e(title)}</h1>
<p>{e(message)}</p></div>
<p class="muted">Go back to the application and start the sign-in again.</p>"""
    return _page(title, body)
