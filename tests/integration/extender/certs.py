"""Throwaway X.509 material for TLS tests, made with ``cryptography``: a CA, server certificates for
``localhost``/``127.0.0.1`` and client certificates, written as PEM files the way a mounted Secret holds them.

Each call makes fresh keys (EC P-256: fast), so a test can tell two certificates apart by serial number.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Ca", "Issued", "new_ca"]

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    serial: int


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_pem(path: Path, data: bytes) -> Path:
    """Write by rename, as the kubelet swaps a Secret's files: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Ca:
    """A self-signed CA that issues server and client certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.path = _write_pem(directory / f"{name}.crt", self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, *, client: bool = False, directory: Path | None = None) -> Issued:
        """A certificate for ``localhost``/``127.0.0.1`` (server) or CN ``stem`` (client), as ``<stem>.crt`` and
        ``<stem>.key`` (replacing any earlier pair of that name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem if client else "localhost"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        where = directory or self.directory
        return Issued(
            cert=_write_pem(where / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            key=_write_pem(where / f"{stem}.key", _key_pem(key)),
            serial=cert.serial_number,
        )


def new_ca(directory: Path, name: str = "test-ca") -> Ca:
    return Ca(directory, name)
