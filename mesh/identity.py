"""Node identities: Ed25519 key pairs, short node ids, key files, signature checks.

Signing and verification go through libsodium (PyNaCl): it is about twice as fast as
OpenSSL's Ed25519 here, and Ed25519 is the hot path of a signed protocol. Key files are
PKCS#8 PEM, so `openssl pkey -in node.key` reads them. An unencrypted PKCS#8 v1 Ed25519 key
is a fixed 16-byte DER prefix and the 32-byte seed (RFC 8410), which is read and written here
without `cryptography`: that library brings its own OpenSSL (about 8 MB resident) that an
agent would carry only to read its key once. Any other PEM is handed to `cryptography`, so
that a foreign key gets a precise error.
The same key also yields an X25519 key (the standard Ed25519 -> Curve25519 map) so that
end-to-end encryption is bound to the node identity without a second key to manage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

NODE_ID_LEN = 8
"""Bytes of a node id: the first 8 bytes of SHA-256(public key)."""
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
"""DER of PrivateKeyInfo v1 {version 0, algorithm id-Ed25519, privateKey OCTET STRING {OCTET
STRING (32 bytes)}}, up to the seed (RFC 8410 section 7)."""
PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
PEM_END = b"-----END PRIVATE KEY-----"


class IdentityError(Exception):
    """A key file is missing, unreadable, corrupt, of the wrong type, or readable by others."""


def node_id_of(public_key: bytes) -> bytes:
    """The short node id of a public key (what frames and routing tables carry)."""
    return hashlib.sha256(public_key).digest()[:NODE_ID_LEN]


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's Ed25519 key pair. Build with `from_seed`, `generate` or `load`."""

    seed: bytes = field(repr=False)
    public_key: bytes
    node_id: bytes
    _secret: bytes = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (simulators derive seeds from their RNG)."""
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        public, secret = sodium.crypto_sign_seed_keypair(seed)
        return cls(seed=seed, public_key=public, node_id=node_id_of(public), _secret=secret)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's randomness (the edge, not a core)."""
        return cls.from_seed(secrets.token_bytes(32))

    def sign(self, message: bytes) -> bytes:
        return sodium.crypto_sign(message, self._secret)[:SIGNATURE_LEN]

    def x25519_private(self) -> bytes:
        """The Curve25519 private scalar that matches this Ed25519 key."""
        return sodium.crypto_sign_ed25519_sk_to_curve25519(self._secret)

    @property
    def hex_id(self) -> str:
        return self.node_id.hex()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as PKCS#8 PEM, readable by its owner only (created 0600, atomically)."""
        body = base64.b64encode(PKCS8_ED25519_PREFIX + self.seed)
        pem = PEM_BEGIN + b"\n" + body + b"\n" + PEM_END + b"\n"  # 64 base64 chars: one line
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file; refuse one that others can read or that is not an Ed25519 key."""
        target = Path(path)
        try:
            st = target.stat()
            data = target.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read key file {target}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"key file {target} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {target}"
            )
        seed = _ed25519_seed_of_pem(data)
        if seed is None:
            seed = _seed_via_cryptography(data, target)
        return cls.from_seed(seed)


def _ed25519_seed_of_pem(data: bytes) -> bytes | None:
    """The seed of an unencrypted PKCS#8 v1 Ed25519 PEM; None for anything else."""
    lines = data.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != PEM_BEGIN or lines[-1].strip() != PEM_END:
        return None
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(PKCS8_ED25519_PREFIX) + 32 or not der.startswith(PKCS8_ED25519_PREFIX):
        return None
    return der[len(PKCS8_ED25519_PREFIX):]


def _seed_via_cryptography(data: bytes, target: Path) -> bytes:
    """Other PEM encodings (a v2 key with its public key, ...) or a precise refusal."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"key file {target} is not a readable PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"key file {target} holds a {type(key).__name__}, not Ed25519")
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        sodium.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def x25519_public_of(public_key: bytes) -> bytes:
    """The Curve25519 public key that matches an Ed25519 public key."""
    return sodium.crypto_sign_ed25519_pk_to_curve25519(public_key)


class VerifyCache:
    """Remembers verification results, bounded (oldest out).

    Verification is a pure function of (key, message, signature), so one cache may be
    shared by all the nodes a simulator runs in one process: a flooded RREQ is then
    verified once, not once per receiver. The key is the triple itself (a valid signature
    must not vouch for another message), and hashing bytes that are already in the cache
    costs no cryptography. The insertion order is kept in a deque beside the dict: evicting
    with `next(iter(dict))` scans the deleted slots at the front, which cost more per miss
    than the verification itself once the cache was full.
    """

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._results: dict[tuple[bytes, bytes, bytes, bytes], bool] = {}
        self._order: deque[tuple[bytes, bytes, bytes, bytes]] = deque()
        self.hits = 0
        self.misses = 0

    def verify(self, public_key: bytes, signature: bytes, message: bytes,
               prefix: bytes = b"") -> bool:
        """Check `signature` over `prefix + message`.

        Passing a constant `prefix` apart lets a hit skip building and hashing the joined
        message: the other parts are bytes objects whose hashes Python has cached already.
        """
        key = (public_key, signature, prefix, message)
        cached = self._results.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        ok = verify(public_key, signature, prefix + message)
        self._remember(key, ok)
        return ok

    def vouch(self, public_key: bytes, signature: bytes, message: bytes,
              prefix: bytes = b"") -> None:
        """Record a signature just made in this process with the key's own secret.

        Ed25519 signing is deterministic and always verifies, so a simulator whose cores
        share this cache need not verify again what one of them signed: only frames from
        outside (forged, corrupted, or signed elsewhere) reach the cryptography.
        """
        key = (public_key, signature, prefix, message)
        if key not in self._results:
            self._remember(key, True)

    def _remember(self, key: tuple[bytes, bytes, bytes, bytes], ok: bool) -> None:
        self._results[key] = ok
        self._order.append(key)
        if len(self._order) > self.capacity:
            del self._results[self._order.popleft()]
