#!/usr/bin/env python3
"""A complete MCP client for refserver: the official `mcp` SDK with its OAuth provider, every kind of feature.

    python examples/client.py [--url http://localhost:3232/mcp] [--user alice] [--token TOKEN]

What happens:

1. OAuth. The first request gets `401`; the SDK's `OAuthClientProvider` discovers the authorization server
   (RFC 9728, RFC 8414), registers this client (RFC 7591), and asks us to send the person to the
   authorization URL with PKCE. A desktop app would open a browser there and listen on its loopback redirect
   URI; this script plays the person itself over HTTP (`play_the_person`): it approves the consent page and
   picks `--user` at the mock identity provider, then hands the code back to the SDK, which exchanges it for
   tokens. With `--token` (e.g. from `python -m refserver token --user alice`) the flow is skipped.
2. Tools: echo, add, longRunningOperation (progress notifications), sampleLLM (the server asks *us* for an
   LLM completion: the sampling callback), elicitInputs (the server asks us to fill a form: the elicitation
   callback), getTinyImage, annotatedMessage, getResourceReference, getWeather (structured output).
3. Resources: a paginated listing, reads (text and blob), the template, a subscription and one
   `notifications/resources/updated`.
4. Prompts, completions, and logging (`logging/setLevel`, then one log notification).

It needs only the `mcp` package (`pip install mcp`). Exit code 0 when every step worked, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
import traceback
import warnings
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx2
import mcp_types as types
from mcp import Client, MCPDeprecationWarning
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# refserver speaks the 2025-era protocols (initialize handshake, resources/subscribe, logging/setLevel), which
# this SDK marks as deprecated in favour of the 2026 ones: the warnings are expected here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

REDIRECT_URI = "http://127.0.0.1/callback"
"""Loopback redirect URI (RFC 8252): a desktop app would listen on it; here nothing needs to."""
REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')


def say(line: str = "") -> None:
    print(line, flush=True)


# --- OAuth: where the tokens live, and the person in front of the browser ---------------------------------


class MemoryTokenStorage(TokenStorage):
    """Keeps the registration and the tokens for this run (a real app would persist them)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        say(
            f"   tokens received: {tokens.token_type} access token, scope {tokens.scope!r}, "
            f"expires in {tokens.expires_in} s, refresh token {'yes' if tokens.refresh_token else 'no'}"
        )

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
        say(f"   registered as client {client_info.client_id}")


async def play_the_person(authorization_url: str, user: str) -> str:
    """What a person does in the browser: approve the consent page, sign in at the mock identity provider.

    Returns the URL the browser would be sent to: the redirect URI with `code`, `state` and `iss`.
    """
    async with httpx2.AsyncClient(timeout=30.0) as browser:
        consent = await browser.get(authorization_url)
        if consent.is_redirect:  # the server refused the request and sent the person straight back
            return consent.headers["location"]
        consent.raise_for_status()
        found = REQUEST_ID.search(consent.text)
        if found is None:
            raise RuntimeError("no consent form on the authorization page")
        say("   consent page shown; approving")
        approved = await browser.post(
            urljoin(authorization_url, "/authorize/consent"),
            data={"request_id": html.unescape(found.group(1)), "decision": "approve"},
        )
        if not approved.is_redirect:
            raise RuntimeError(f"consent: HTTP {approved.status_code}")
        idp_url = urljoin(authorization_url, approved.headers["location"])
        (await browser.get(idp_url)).raise_for_status()  # the identity provider's page: pick who you are
        say(f"   mock identity provider: signing in as {user!r}")
        state = parse_qs(urlsplit(idp_url).query)["state"][0]
        signed_in = await browser.get(
            urljoin(idp_url, "/mock-upstream-idp/callback"), params={"state": state, "userId": user}
        )
        if not signed_in.is_redirect:
            raise RuntimeError(f"identity provider: HTTP {signed_in.status_code}")
        return signed_in.headers["location"]


class Person:
    """The provider's two hooks: send the person to the authorization URL, then return what came back."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.final_url: str | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        say(f"   authorization URL: {authorization_url.split('?')[0]}?… (PKCE S256)")
        self.final_url = await play_the_person(authorization_url, self.user)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.final_url is not None
        query = {key: values[0] for key, values in parse_qs(urlsplit(self.final_url).query).items()}
        if "error" in query:
            raise RuntimeError(f"authorization refused: {query['error']}: {query.get('error_description', '')}")
        say(f"   redirected back with an authorization code (issuer {query.get('iss')})")
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


def oauth_provider(mcp_url: str, user: str) -> OAuthClientProvider:
    person = Person(user)
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="refserver example client",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryTokenStorage(),
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )


# --- what the server asks of the client: sampling, elicitation, notifications ------------------------------


class Callbacks:
    def __init__(self) -> None:
        self.updated = anyio.Event()
        self.logged = anyio.Event()

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        prompt = params.messages[0].content
        text = prompt.text if isinstance(prompt, types.TextContent) else "?"
        say(f"   <- sampling/createMessage: {text!r} (max {params.max_tokens} tokens); answering as the LLM")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(text="Because air scatters blue light more than red."),
            model="example-llm",
            stop_reason="endTurn",
        )

    async def elicitation(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        fields = (
            list(params.requested_schema.get("properties", {}))
            if isinstance(params, types.ElicitRequestFormParams)
            else []
        )
        say(f"   <- elicitation/create: {params.message!r} fields {fields}; filling the form in")
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "age": 36, "color": "blue"})

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        if not self.logged.is_set():
            say(f"   <- notifications/message: [{params.level}] {params.logger}: {params.data}")
        self.logged.set()

    async def messages(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification) and not self.updated.is_set():
            say(f"   <- notifications/resources/updated: {message.params.uri}")
            self.updated.set()


def text_of(result: types.CallToolResult) -> str:
    if result.is_error:
        raise RuntimeError(f"tool error: {result.content}")
    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent):
            parts.append(f"[{block.mime_type} image, {len(base64.b64decode(block.data))} bytes]")
        elif isinstance(block, types.EmbeddedResource):
            parts.append(f"[embedded resource {block.resource.uri}]")
        else:
            parts.append(f"[{block.type}]")
    return " | ".join(parts)


# --- the tour ------------------------------------------------------------------------------------------


async def tour(client: Client, callbacks: Callbacks, wait: float) -> None:
    info = client.server_info
    say(
        f"== connected to {info.name if info else '?'} {info.version if info else ''}, "
        f"protocol {client.protocol_version}"
    )

    say("== tools")
    tools = (await client.list_tools()).tools
    say(f"   tools/list: {', '.join(tool.name for tool in tools)}")
    say(f"   echo -> {text_of(await client.call_tool('echo', {'message': 'hello from the example client'}))}")
    say(f"   add -> {text_of(await client.call_tool('add', {'a': 2, 'b': 3}))}")

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        of_total = f"/{total:g}" if total is not None else ""
        say(f"   <- notifications/progress: {progress:g}{of_total} {message or ''}")

    long_running = await client.call_tool(
        "longRunningOperation", {"duration": 1.5, "steps": 3}, progress_callback=on_progress
    )
    say(f"   longRunningOperation -> {text_of(long_running)}")
    sampled = await client.call_tool("sampleLLM", {"prompt": "Why is the sky blue?", "maxTokens": 50})
    say(f"   sampleLLM -> {text_of(sampled)}")
    elicited = await client.call_tool("elicitInputs", {})
    say(f"   elicitInputs -> {text_of(elicited).splitlines()[0]}")
    say(f"   getTinyImage -> {text_of(await client.call_tool('getTinyImage', {}))}")
    annotated = await client.call_tool("annotatedMessage", {"messageType": "success", "includeImage": False})
    say(f"   annotatedMessage -> {text_of(annotated)}")
    say(f"   getResourceReference -> {text_of(await client.call_tool('getResourceReference', {'resourceId': 7}))}")
    weather = await client.call_tool("getWeather", {"location": "London"})
    if weather.is_error or weather.structured_content is None:
        raise RuntimeError("getWeather returned no structured content")
    say(f"   getWeather (structured) -> {json.dumps(weather.structured_content)}")

    say("== resources")
    first = await client.list_resources()
    second = await client.list_resources(cursor=first.next_cursor) if first.next_cursor else None
    say(
        f"   resources/list: page 1 has {len(first.resources)} ({first.resources[0].uri} …), "
        f"page 2 starts at {second.resources[0].uri if second else 'nothing'}"
    )
    for uri in ("test://static/resource/1", "test://static/resource/2"):
        contents = (await client.read_resource(uri)).contents[0]
        if isinstance(contents, types.TextResourceContents):
            say(f"   resources/read {uri} -> text {contents.text!r}")
        elif isinstance(contents, types.BlobResourceContents):
            say(f"   resources/read {uri} -> blob {base64.b64decode(contents.blob)!r}")
    templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    say(f"   resources/templates/list: {', '.join(templates)}")
    template = "test://static/resource/{id}"
    if template not in templates:
        raise RuntimeError(f"the resource template {template} is not listed")
    watched = "test://static/resource/3"
    await client.subscribe_resource(watched)
    say(f"   resources/subscribe {watched}; waiting for an update (up to {wait:g} s)")

    say("== logging")
    await client.set_logging_level("debug")
    say(f"   logging/setLevel debug; waiting for a log message (up to {wait:g} s)")

    say("== prompts")
    prompts = (await client.list_prompts()).prompts
    say(f"   prompts/list: {', '.join(p.name for p in prompts)}")
    simple = await client.get_prompt("simple_prompt")
    say(f"   prompts/get simple_prompt -> {len(simple.messages)} message(s)")
    complex_ = await client.get_prompt("complex_prompt", {"temperature": "0.7", "style": "formal"})
    say(f"   prompts/get complex_prompt -> {[m.content.type for m in complex_.messages]}")
    embedded = await client.get_prompt("resource_prompt", {"resourceId": "4"})
    say(f"   prompts/get resource_prompt -> {[m.content.type for m in embedded.messages]}")

    say("== completions")
    styles = await client.complete(types.PromptReference(name="complex_prompt"), {"name": "style", "value": "f"})
    say(f"   completion/complete complex_prompt style 'f' -> {styles.completion.values}")
    ids = await client.complete(types.ResourceTemplateReference(uri=template), {"name": "id", "value": "9"})
    say(f"   completion/complete {template} id '9' -> {ids.completion.values[:5]} …")

    say("== notifications")
    with anyio.fail_after(wait):
        await callbacks.updated.wait()
        await callbacks.logged.wait()
    await client.unsubscribe_resource(watched)
    say(f"   resources/unsubscribe {watched}")


async def main(args: argparse.Namespace) -> int:
    callbacks = Callbacks()
    if args.token:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {args.token}"}, timeout=httpx2.Timeout(30, read=300)
        )
        say("== OAuth: using the given access token")
    else:
        http = httpx2.AsyncClient(auth=oauth_provider(args.url, args.user), timeout=httpx2.Timeout(30, read=300))
        say(f"== OAuth: signing in as {args.user!r} (the SDK does discovery, registration, PKCE, token exchange)")
    try:
        async with (
            http,
            Client(
                streamable_http_client(args.url, http_client=http),
                mode="legacy",  # the initialize handshake of the 2025 protocol versions refserver speaks
                sampling_callback=callbacks.sampling,
                elicitation_callback=callbacks.elicitation,
                logging_callback=callbacks.logging,
                message_handler=callbacks.messages,
                read_timeout_seconds=60,
            ) as client,
        ):
            await tour(client, callbacks, args.wait)
    except Exception as exc:
        traceback.print_exc()
        say(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    say("== done: every feature worked")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:3232/mcp", help="the MCP endpoint")
    parser.add_argument("--user", default="alice", help="who to sign in as at the mock identity provider")
    parser.add_argument("--token", help="an access token to use instead of the OAuth flow")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for a resource update and a log message"
    )
    sys.exit(anyio.run(main, parser.parse_args()))
