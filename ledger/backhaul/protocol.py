"""Framing and the authentication handshake of the backhaul link. Pure: bytes in, bytes out.

A frame is a 4-byte big-endian length, then one type byte, then the payload (deterministic
CBOR). The conversation:

    server -> HELLO     [server key, server nonce]
    client -> AUTH      [client key, client nonce, sig(AUTH_CONTEXT + server nonce + server key),
                         [authors the client wants checkpoint proofs for]]
    server -> OK        [sig(OK_CONTEXT + client nonce + client key)]   or ERROR [reason]
    client <-> SYNC     sync session messages (`ledger.sync`), client first
    server -> CHECKPOINT [checkpoint, [proofs]]   after the session completed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.errors import AuthError, CodecError

F_HELLO, F_AUTH, F_OK, F_ERROR, F_SYNC, F_CHECKPOINT = 1, 2, 3, 4, 5, 6
HEADER = 4
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_PROOF_REQUESTS = 1024
AUTH_CONTEXT = b"manet-backhaul-auth/1"
OK_CONTEXT = b"manet-backhaul-ok/1"


class FrameTooBig(AuthError):
    """A frame header announced more than MAX_FRAME_BYTES."""


def frame(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + payload
    return len(body).to_bytes(HEADER, "big") + body


def frame_value(kind: int, value: Any) -> bytes:
    return frame(kind, codec.encode(value))


def frame_length(header: bytes, limit: int = MAX_FRAME_BYTES) -> int:
    n = int.from_bytes(header, "big")
    if n == 0 or n > limit:
        raise FrameTooBig(f"frame of {n} bytes (limit {limit})")
    return n


def split(body: bytes) -> tuple[int, bytes]:
    return body[0], body[1:]


def parse_value(payload: bytes) -> Any:
    try:
        return codec.decode(payload, MAX_FRAME_BYTES)
    except CodecError as exc:
        raise AuthError(f"malformed frame: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Auth:
    client_key: bytes
    client_nonce: bytes
    signature: bytes
    proofs_for: list[bytes]


def parse_hello(payload: bytes) -> tuple[bytes, bytes]:
    value = parse_value(payload)
    if (type(value) is not list or len(value) != 2 or type(value[0]) is not bytes
            or len(value[0]) != 32 or type(value[1]) is not bytes or len(value[1]) != 32):
        raise AuthError("malformed HELLO")
    return value[0], value[1]


def auth_message(server_nonce: bytes, server_key: bytes) -> bytes:
    return AUTH_CONTEXT + server_nonce + server_key


def ok_message(client_nonce: bytes, client_key: bytes) -> bytes:
    return OK_CONTEXT + client_nonce + client_key


def parse_auth(payload: bytes) -> Auth:
    value = parse_value(payload)
    if (type(value) is not list or len(value) != 4
            or type(value[0]) is not bytes or len(value[0]) != 32
            or type(value[1]) is not bytes or len(value[1]) != 32
            or type(value[2]) is not bytes or len(value[2]) != 64
            or type(value[3]) is not list or len(value[3]) > MAX_PROOF_REQUESTS
            or not all(type(a) is bytes and len(a) == 32 for a in value[3])):
        raise AuthError("malformed AUTH")
    return Auth(value[0], value[1], value[2], list(value[3]))
