"""Deployment credentials: a TLS CA, a SuperLink server certificate, and SuperNode EC key pairs.

Flower 1.39 wants PEM files for the SuperLink's TLS (``--ssl-ca-certfile/--ssl-certfile/
--ssl-keyfile``), the CA certificate on every client (``--root-certificates`` for SuperNodes,
``root-certificates`` in the ``flwr`` CLI's SuperLink connection), and, for SuperNode
authentication, an EC key pair per node in OpenSSH format (private key for
``flower-supernode --auth-supernode-private-key``, public key for ``flwr supernode register``).
All keys come from the OS CSPRNG (via ``cryptography``); private keys are written mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from recommender.model_store import atomic_write_bytes


@dataclass(frozen=True)
class ServerCredentials:
    """Paths of the SuperLink's TLS files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKeys:
    """Paths of one SuperNode's authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path


def _write_private(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def make_ca(directory: Path, common_name: str = "fedrec deployment CA", days: int = 30,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:  # fmt: skip
    """Create a self-signed CA (P-384) and write ``ca.crt`` / ``ca.key``; returns (cert, key, cert path)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.crt"
    atomic_write_bytes(path, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))  # fmt: skip
    return cert, key, path


def make_server_credentials(directory: Path, hosts: list[str] | None = None, days: int = 30) -> ServerCredentials:
    """A fresh CA and a SuperLink server certificate for ``hosts`` (IP addresses or DNS names).

    Parameters
    ----------
    directory : Path
        Where ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` are written.
    hosts : list of str
        Subject alternative names; default ``["127.0.0.1", "localhost"]``. For a real
        deployment pass the SuperLink's public address (e.g. ``["203.0.113.10", "link.example.org"]``).
    days : int
        Validity.
    """
    hosts = hosts or ["127.0.0.1", "localhost"]
    ca_cert, ca_key, ca_path = make_ca(directory, days=days)
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )  # fmt: skip
    server_cert, server_key = directory / "server.pem", directory / "server.key"
    atomic_write_bytes(server_cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(server_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))  # fmt: skip
    return ServerCredentials(ca_path, server_cert, server_key)


def make_node_keys(directory: Path, name: str) -> NodeKeys:
    """An EC P-384 key pair for SuperNode authentication: ``<name>`` (private) and ``<name>.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    directory.mkdir(parents=True, exist_ok=True)
    priv, pub = directory / name, directory / f"{name}.pub"
    _write_private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))  # fmt: skip
    atomic_write_bytes(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                          serialization.PublicFormat.OpenSSH) + b"\n")  # fmt: skip
    return NodeKeys(priv, pub)
