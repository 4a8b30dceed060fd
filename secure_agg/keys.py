"""Server RSA key files: generate (private PEM mode 0600, public PEM beside it) and load."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from secure_agg.errors import SecAggConfigError

#: Smallest RSA modulus accepted for the envelope key.
MIN_KEY_BITS = 2048


def public_key_path(private_path: str | os.PathLike) -> Path:
    """Where the public PEM of ``private_path`` lives: ``<stem>.pub.pem`` beside it."""
    p = Path(private_path)
    return p.with_name(p.stem + ".pub.pem")


def generate_server_keypair(
    path: str | os.PathLike, *, key_size: int = 2048, overwrite: bool = False
) -> rsa.RSAPublicKey:
    """Create an RSA key pair: private PEM at ``path`` (mode 0600), public PEM beside it.

    The private file is created with ``os.open(..., 0o600)`` (and fchmod'ed to 0600, in case it
    pre-existed), never through a symlink; it is refused if it exists unless ``overwrite``.
    """
    if key_size < MIN_KEY_BITS:
        raise SecAggConfigError(f"key_size={key_size} must be >= {MIN_KEY_BITS}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    fd = os.open(os.fspath(path), flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub = key.public_key()
    public_key_path(path).write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub


def load_private_key(path: str | os.PathLike) -> rsa.RSAPrivateKey:
    """Load the server's private key, refusing a file readable by group or others."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise SecAggConfigError(
            f"private key {path} has mode {mode:04o}, readable beyond its owner; chmod 600 it"
        )
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecAggConfigError(f"{path} does not hold an RSA private key")
    return key


def load_public_key(path: str | os.PathLike) -> rsa.RSAPublicKey:
    """Load an RSA public key from a PEM file."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise SecAggConfigError(f"{path} does not hold an RSA public key")
    return key
