"""Notifications tied to no request, sent on each session's standalone stream (the seed's demo traffic)."""

from __future__ import annotations

from refserver.config import Settings
from refserver.features import reference
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.lifecycle import log_level_allows
from refserver.registry import PeriodicNotifier
from refserver.session import Session, is_ready


async def send_subscription_updates(session: Session) -> None:
    if not is_ready(session):
        return
    for uri in sorted(session.state.subscriptions):
        await session.send_standalone(Notification("notifications/resources/updated", {"uri": uri}))


async def send_random_log_message(session: Session) -> None:
    if not is_ready(session):
        return
    level, text = reference.random_log_message()
    if log_level_allows(session.state.log_level, level):
        await session.send_standalone(
            Notification("notifications/message", {"level": level, "logger": "refserver.demo", "data": text})
        )


def periodic_notifiers(settings: Settings) -> list[PeriodicNotifier]:
    if "reference" not in settings.features:
        return []
    return [
        PeriodicNotifier("subscription-updates", settings.subscription_update_interval, send_subscription_updates),
        PeriodicNotifier("demo-log-messages", settings.log_message_interval, send_random_log_message),
    ]
