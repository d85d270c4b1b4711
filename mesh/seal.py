"""End-to-end sealing of application payloads between two node identities.

X25519 between the two nodes' identity keys (the Ed25519 keys mapped to Curve25519) gives a
shared secret bound to both identities; each direction gets its own ChaCha20-Poly1305 key,
so that the sender's message counter is a unique nonce. Forwarders see only the routing
header, which is authenticated as associated data.

The AEAD is libsodium's IETF ChaCha20-Poly1305 (RFC 8439, the same construction as
`cryptography`'s ChaCha20Poly1305, so sealed payloads are unchanged): the core then needs no
second OpenSSL in memory.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import nacl.bindings as sodium
import nacl.exceptions

from mesh.identity import Identity, node_id_of, x25519_public_of

TAG_LEN = 16


class SealError(Exception):
    """A sealed payload failed authentication (forged, altered, or sealed to someone else)."""


class Sealer:
    """Seals to and opens from peers, caching one pair of AEAD keys per peer (bounded)."""

    def __init__(self, identity: Identity, capacity: int = 1024) -> None:
        self._identity = identity
        self._x_private = identity.x25519_private()
        self._capacity = capacity
        self._keys: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()

    def _pair(self, peer_pk: bytes) -> tuple[bytes, bytes]:
        """(outbound key, inbound key) for a peer."""
        pair = self._keys.get(peer_pk)
        if pair is not None:
            self._keys.move_to_end(peer_pk)
            return pair
        try:
            shared = sodium.crypto_scalarmult(self._x_private, x25519_public_of(peer_pk))
        except Exception as exc:  # libsodium rejects low-order points with a RuntimeError
            raise SealError(f"unusable peer key: {exc}") from exc
        me, peer = self._identity.node_id, node_id_of(peer_pk)
        outbound = hashlib.sha256(b"manet-e2e/1" + shared + me + peer).digest()
        inbound = hashlib.sha256(b"manet-e2e/1" + shared + peer + me).digest()
        pair = (outbound, inbound)
        self._keys[peer_pk] = pair
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return pair

    def seal(self, peer_pk: bytes, counter: int, payload: bytes, header: bytes) -> bytes:
        return _encrypt(payload, header, _nonce(counter), self._pair(peer_pk)[0])

    def open(self, peer_pk: bytes, counter: int, sealed: bytes, header: bytes) -> bytes:
        try:
            return _decrypt(sealed, header, _nonce(counter), self._pair(peer_pk)[1])
        except nacl.exceptions.CryptoError as exc:
            raise SealError("payload failed authentication") from exc


_encrypt = sodium.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = sodium.crypto_aead_chacha20poly1305_ietf_decrypt


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(8, "big") + b"\x00\x00\x00\x00"
