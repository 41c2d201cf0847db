"""The bus messages' wire form: compact JSON, `{"t": kind, "sid": session id, ...}`.

The one encode/decode pair of the bus. The Lua scripts build `event` messages themselves (`scripts`), in the
same form. A message this instance cannot read (another version's, or malformed) decodes to None and is dropped.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from refserver.backend.messages import (
    BusResynced,
    CancelRequest,
    ClientReply,
    EventAppended,
    GlobalMessage,
    ListenNotice,
    SessionDeleted,
    SessionMessage,
    StateChanged,
    TaskCancelled,
    TokenRevoked,
)
from refserver.backend.sessions import SessionRecord
from refserver.protocol.jsonrpc import is_request_id

logger = logging.getLogger(__name__)


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def encode_session_message(session_id: str, message: SessionMessage) -> str:
    document: dict[str, Any]
    match message:
        case EventAppended(stream_id, seq):
            document = {"t": "event", "s": stream_id, "n": seq}
        case CancelRequest(request_id):
            document = {"t": "cancel", "id": request_id}
        case ClientReply(reply):
            document = {"t": "reply", "message": reply}
        case SessionDeleted():
            document = {"t": "delete"}
        case StateChanged(record):
            document = {"t": "state", "record": json.loads(record.to_json())}
    return _dumps({**document, "sid": session_id})


def decode_session_message(document: dict[str, Any]) -> tuple[str, SessionMessage] | None:
    """(session id, message), or None for a message that is not one of ours."""
    session_id = document.get("sid")
    if not isinstance(session_id, str):
        return None
    kind = document.get("t")
    message: SessionMessage
    try:
        if kind == "event":
            message = EventAppended(str(document["s"]), int(document["n"]))
        elif kind == "cancel":
            request_id = document.get("id")
            if not is_request_id(request_id):
                return None
            assert isinstance(request_id, (int, str))
            message = CancelRequest(request_id)
        elif kind == "reply":
            reply = document.get("message")
            if not isinstance(reply, dict):
                return None
            message = ClientReply(reply)
        elif kind == "delete":
            message = SessionDeleted()
        elif kind == "state":
            message = StateChanged(SessionRecord(**document["record"]))
        else:
            return None
    except (KeyError, TypeError, ValueError):
        logger.warning("ignoring a malformed bus message")
        return None
    return session_id, message


def encode_global_message(message: GlobalMessage) -> str:
    match message:
        case TokenRevoked(jti, grant_id):
            return _dumps({"t": "revoked", "jti": jti, "grant": grant_id})
        case ListenNotice(kind, uri, task_id):
            return _dumps({"t": "listen", "k": kind, "u": uri, "i": task_id})
        case TaskCancelled(task_id):
            return _dumps({"t": "task-cancel", "id": task_id})
        case BusResynced():
            return _dumps({"t": "resync"})


def decode_global_message(document: dict[str, Any]) -> GlobalMessage | None:
    kind = document.get("t")
    if kind == "revoked":
        jti, grant = document.get("jti"), document.get("grant")
        return TokenRevoked(jti if isinstance(jti, str) else None, grant if isinstance(grant, str) else None)
    if kind == "listen":
        notice_kind, uri = document.get("k"), document.get("u")
        if not isinstance(notice_kind, str):
            return None
        task_id = document.get("i")
        return ListenNotice(
            notice_kind, uri if isinstance(uri, str) else None, task_id if isinstance(task_id, str) else None
        )
    if kind == "task-cancel":
        task_id = document.get("id")
        return TaskCancelled(task_id) if isinstance(task_id, str) else None
    if kind == "resync":
        return BusResynced()
    return None
