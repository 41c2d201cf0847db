"""Notifications tied to no request, sent on each session's standalone stream (the seed's demo traffic).

A notifier composes one session's messages from its protocol state alone; the registry runs the rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from refserver.config import Settings
from refserver.features import reference
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.lifecycle import log_level_allows
from refserver.protocol.session_state import SessionState


@attrs.frozen
class PeriodicNotifier:
    """Messages for every ready session every `interval` seconds, on its standalone stream.

    `compose` says what one session gets this round (often nothing); the round appends them all as one batch.
    """

    name: str
    interval: float
    compose: Callable[[SessionState], Sequence[Notification]]


def subscription_updates(state: SessionState) -> list[Notification]:
    if not state.ready:
        return []
    return [Notification("notifications/resources/updated", {"uri": uri}) for uri in sorted(state.subscriptions)]


def random_log_message(state: SessionState) -> list[Notification]:
    if not state.ready:
        return []
    level, text = reference.random_log_message()
    if not log_level_allows(state.log_level, level):
        return []
    return [Notification("notifications/message", {"level": level, "logger": "refserver.demo", "data": text})]


def periodic_notifiers(settings: Settings) -> list[PeriodicNotifier]:
    if "reference" not in settings.features:
        return []
    return [
        PeriodicNotifier("subscription-updates", settings.subscription_update_interval, subscription_updates),
        PeriodicNotifier("demo-log-messages", settings.log_message_interval, random_log_message),
    ]
