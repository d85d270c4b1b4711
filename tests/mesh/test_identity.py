import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mesh.identity import Identity, IdentityError, VerifyCache, node_id_of, verify


def test_save_load_round_trip_owner_only(tmp_path: Path) -> None:
    ident = Identity.from_seed(bytes(range(32)))
    path = tmp_path / "node.key"
    ident.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = Identity.load(path)
    assert loaded.public_key == ident.public_key
    assert loaded.node_id == node_id_of(ident.public_key) and len(loaded.node_id) == 8
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_world_readable_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)


def test_corrupt_missing_and_foreign_keys_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    corrupt.chmod(0o600)
    with pytest.raises(IdentityError, match="not a readable PEM"):
        Identity.load(corrupt)
    with pytest.raises(IdentityError, match="cannot read"):
        Identity.load(tmp_path / "absent.key")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    foreign = tmp_path / "rsa.key"
    foreign.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    foreign.chmod(0o600)
    with pytest.raises(IdentityError, match="not Ed25519"):
        Identity.load(foreign)


def test_signatures_and_cache() -> None:
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    sig = a.sign(b"msg")
    assert verify(a.public_key, sig, b"msg")
    assert not verify(b.public_key, sig, b"msg")
    assert not verify(a.public_key, sig, b"msG")
    assert not verify(a.public_key, sig[:10], b"msg")
    cache = VerifyCache(capacity=2)
    assert cache.verify(a.public_key, sig, b"msg") and cache.verify(a.public_key, sig, b"msg")
    assert (cache.hits, cache.misses) == (1, 1)
    for i in range(5):
        cache.verify(a.public_key, sig, bytes([i]))
    assert len(cache._results) == 2  # bounded


def test_vouched_signatures_skip_verification_but_bind_the_message() -> None:
    a = Identity.from_seed(b"a" * 32)
    cache = VerifyCache()
    sig = a.sign(b"ctx" + b"msg")
    cache.vouch(a.public_key, sig, b"msg", b"ctx")
    assert cache.verify(a.public_key, sig, b"msg", b"ctx")
    assert (cache.hits, cache.misses) == (1, 0)
    # Anything else about the frame differs: the cryptography decides, and says no.
    assert not cache.verify(a.public_key, sig, b"msG", b"ctx")
    assert not cache.verify(a.public_key, sig, b"msg", b"xtc")
    assert cache.misses == 2
