"""MCP Apps (the `io.modelcontextprotocol/ui` extension, SEP-1865, stable 2026-01-26): a `ui://` view for `getWeather`.

The view is one self-contained HTML5 document: no external scripts, styles, fonts or connections (so the host's
restrictive default CSP fits it, and the resource declares an empty `csp`). It talks to its host with JSON-RPC
over `postMessage`: `ui/initialize`, then `ui/notifications/initialized`; it renders the arguments of
`ui/notifications/tool-input` and the `structuredContent` of `ui/notifications/tool-result`, and can ask for
another place through the host (`tools/call getWeather`). Everything it shows is set with `textContent`, never
parsed as HTML, so a location such as `<img onerror=...>` is shown as the text it is.

The tool carries `_meta.ui.resourceUri` for every client: a host without MCP Apps ignores it and uses the text
and structured content, which stay complete (the extension's graceful degradation), and the tool list stays the
same for everyone (it is cached publicly, see `LISTING_CACHE`).
"""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types

from refserver.features.catalog import Resource, ResourceContents
from refserver.features.context import FeatureContext
from refserver.protocol.core import CacheHint

MCP_APP_MIME_TYPE: Final = "text/html;profile=mcp-app"
APPS_EXTENSION: Final = "io.modelcontextprotocol/ui"
WEATHER_CARD_URI: Final = "ui://refserver/weather-card"
VIEW_CACHE: Final = CacheHint(300_000, "public")
"""The view is static: a host may prefetch it and keep it five minutes."""

RESOURCE_UI_META: Final[dict[str, Any]] = {
    "ui": {
        "csp": {"connectDomains": [], "resourceDomains": [], "frameDomains": [], "baseUriDomains": []},
        "prefersBorder": True,
    }
}
"""No external origin of any kind, and a host-drawn border around the card."""

WEATHER_TOOL_UI_META: Final[dict[str, Any]] = {"ui": {"resourceUri": WEATHER_CARD_URI, "visibility": ["model", "app"]}}
"""On `getWeather`: results render in the weather card; the card may call the tool again (visibility `app`)."""

WEATHER_CARD_HTML: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Weather card</title>
<style>
:root {
  color-scheme: light dark;
  --color-background-primary: light-dark(#ffffff, #171717);
  --color-text-primary: light-dark(#171717, #fafafa);
  --color-text-secondary: light-dark(#525252, #a3a3a3);
  --color-border-primary: light-dark(#d4d4d4, #404040);
  --font-sans: system-ui, sans-serif;
  --border-radius-md: 8px;
}
body { margin: 0; font-family: var(--font-sans); background: var(--color-background-primary);
       color: var(--color-text-primary); }
main { padding: 16px; }
h1 { font-size: 1.1rem; margin: 0 0 4px; overflow-wrap: anywhere; }
#status { color: var(--color-text-secondary); margin: 0 0 12px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0 0 12px; }
dt { color: var(--color-text-secondary); }
dd { margin: 0; }
form { display: flex; gap: 8px; }
input, button { font: inherit; padding: 4px 8px; border: 1px solid var(--color-border-primary);
                border-radius: var(--border-radius-md); }
</style>
</head>
<body>
<main>
  <h1 id="location">Weather</h1>
  <p id="status">Waiting for the host…</p>
  <dl>
    <dt>Temperature</dt><dd id="temperature">&#8211;</dd>
    <dt>Conditions</dt><dd id="conditions">&#8211;</dd>
    <dt>Humidity</dt><dd id="humidity">&#8211;</dd>
  </dl>
  <form id="ask">
    <input id="place" name="place" placeholder="Another place" maxlength="200" autocomplete="off">
    <button type="submit">Show</button>
  </form>
</main>
<script>
"use strict";
(function () {
  const REQUEST_TIMEOUT_MS = 15000;
  const pending = new Map();
  let nextId = 1;
  const $ = (id) => document.getElementById(id);
  // Everything shown goes through textContent: the card never parses what it is given as HTML.
  const show = (id, value) => { $(id).textContent = value === undefined || value === null ? "\u2013" : String(value); };

  function send(message) { window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*"); }

  function request(method, params) {
    const id = nextId++;
    send({ id: id, method: method, params: params });
    return new Promise(function (resolve, reject) {
      const timer = setTimeout(function () {
        pending.delete(id);
        reject(new Error(method + " timed out"));
      }, REQUEST_TIMEOUT_MS);
      pending.set(id, { resolve: resolve, reject: reject, timer: timer });
    });
  }

  function render(result) {
    if (!result || result.isError) {
      const text = result && result.content && result.content[0] && result.content[0].text;
      show("status", "The weather could not be fetched" + (text ? ": " + text : "."));
      return;
    }
    const weather = result.structuredContent || {};
    const temperature = Number(weather.temperature);
    const humidity = Number(weather.humidity);
    show("temperature", Number.isFinite(temperature) ? temperature.toFixed(1) + " °C" : undefined);
    show("conditions", typeof weather.conditions === "string" ? weather.conditions : undefined);
    show("humidity", Number.isFinite(humidity) ? humidity + " %" : undefined);
    show("status", "Made-up weather, the same for a place every time.");
    reportSize();
  }

  function showInput(args) {
    const place = args && typeof args.location === "string" ? args.location : "";
    show("location", place ? "Weather in " + place : "Weather");
  }

  function reportSize() {
    const box = document.documentElement.getBoundingClientRect();
    const size = { width: Math.ceil(box.width), height: Math.ceil(box.height) };
    send({ method: "ui/notifications/size-changed", params: size });
  }

  function applyHostContext(context) {
    const variables = context && context.styles && context.styles.variables;
    if (variables && typeof variables === "object") {
      for (const name of Object.keys(variables)) {
        if (/^--[a-z0-9-]+$/.test(name) && typeof variables[name] === "string") {
          document.documentElement.style.setProperty(name, variables[name]);
        }
      }
    }
    if (context && (context.theme === "light" || context.theme === "dark")) {
      document.documentElement.style.colorScheme = context.theme;
    }
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) { return; }
    const message = event.data;
    if (!message || message.jsonrpc !== "2.0") { return; }
    if (message.id !== undefined && pending.has(message.id) && !message.method) {
      const waiter = pending.get(message.id);
      pending.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.error) { waiter.reject(new Error(String(message.error.message || "error"))); }
      else { waiter.resolve(message.result); }
      return;
    }
    switch (message.method) {
      case "ui/notifications/tool-input": showInput(message.params && message.params.arguments); break;
      case "ui/notifications/tool-result": render(message.params); break;
      case "ui/notifications/tool-cancelled": show("status", "The call was cancelled."); break;
      case "ui/notifications/host-context-changed": applyHostContext(message.params); break;
      case "ui/resource-teardown": if (message.id !== undefined) { send({ id: message.id, result: {} }); } break;
      case "ping": if (message.id !== undefined) { send({ id: message.id, result: {} }); } break;
      default:
        if (message.id !== undefined && message.method) {
          send({ id: message.id, error: { code: -32601, message: "Method not found" } });
        }
    }
  });

  $("ask").addEventListener("submit", function (event) {
    event.preventDefault();
    const place = $("place").value.trim();
    if (!place) { return; }
    showInput({ location: place });
    show("status", "Asking…");
    request("tools/call", { name: "getWeather", arguments: { location: place } })
      .then(render, function (error) { show("status", "The host refused: " + error.message); });
  });

  request("ui/initialize", {
    appInfo: { name: "refserver weather card", version: "1.0.0" },
    appCapabilities: { availableDisplayModes: ["inline"] },
    protocolVersion: "2026-01-26"
  }).then(function (result) {
    applyHostContext(result && result.hostContext);
    send({ method: "ui/notifications/initialized", params: {} });
    show("status", "Waiting for the weather…");
    reportSize();
  }, function (error) { show("status", "The host did not answer: " + error.message); });
})();
</script>
</body>
</html>
"""


async def _read_weather_card(ctx: FeatureContext) -> list[ResourceContents]:
    return [
        types.TextResourceContents(
            uri=WEATHER_CARD_URI, mime_type=MCP_APP_MIME_TYPE, text=WEATHER_CARD_HTML, meta=RESOURCE_UI_META
        )
    ]


def app_resources() -> list[Resource]:
    definition = types.Resource(
        uri=WEATHER_CARD_URI,
        name="weather_card",
        title="Weather card",
        description="An MCP Apps view of getWeather's result, with a field to ask for another place",
        mime_type=MCP_APP_MIME_TYPE,
        meta=RESOURCE_UI_META,
    )
    # Unlisted (the extension allows it): the seed's listing keeps its 100 resources in ten pages, and hosts find
    # the view through getWeather's `_meta.ui.resourceUri`.
    return [Resource(definition=definition, read=_read_weather_card, cache=VIEW_CACHE, listed=False)]
