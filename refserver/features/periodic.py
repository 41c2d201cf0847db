"""Notifications tied to no request, sent on each session's standalone stream (the seed's demo traffic)."""

from __future__ import annotations

from refserver.config import Settings
from refserver.features import reference
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.lifecycle import log_level_allows
from refserver.registry import PeriodicNotifier
from refserver.session import Session, is_ready


def subscription_updates(session: Session) -> list[Notification]:
    if not is_ready(session):
        return []
    uris = sorted(session.state.subscriptions)
    return [Notification("notifications/resources/updated", {"uri": uri}) for uri in uris]


def random_log_message(session: Session) -> list[Notification]:
    if not is_ready(session):
        return []
    level, text = reference.random_log_message()
    if not log_level_allows(session.state.log_level, level):
        return []
    return [Notification("notifications/message", {"level": level, "logger": "refserver.demo", "data": text})]


def periodic_notifiers(settings: Settings) -> list[PeriodicNotifier]:
    if "reference" not in settings.features:
        return []
    return [
        PeriodicNotifier("subscription-updates", settings.subscription_update_interval, subscription_updates),
        PeriodicNotifier("demo-log-messages", settings.log_message_interval, random_log_message),
    ]
