"""Certificates and keys for a local kube-apiserver: a CA, serving and admin certs, SA keys.

A real API server insists on TLS and on service-account signing keys; clients authenticate with
a certificate whose organisation `system:masters` makes them cluster-admin under RBAC. All of it
is made fresh per sandbox, lives only in the sandbox folder, and is valid on loopback only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a sandbox left up for weeks of local work, short enough not to matter.
VALIDITY = dt.timedelta(days=365)
# Clocks of test machines drift; a cert that starts a little in the past is valid at once.
BACKDATE = dt.timedelta(minutes=5)
# Kubernetes requires RSA or ECDSA service-account keys; 2048-bit RSA is its documented default.
SA_KEY_BITS = 2048
ADMIN_GROUP = "system:masters"


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of everything the API server and its clients need."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attributes)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    is_ca = usage is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def create(folder: Path) -> Pki:
    """Make a CA and everything signed by it in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fog-sandbox-ca")
    ca = _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, usage=None, sans=[])
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _issue(
        subject=_name("kube-apiserver"),
        key=serving_key,
        issuer=ca_name,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        subject=_name("fog-admin", ADMIN_GROUP),
        key=admin_key,
        issuer=ca_name,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=[],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=SA_KEY_BITS)
    pem = serialization.Encoding.PEM
    keys = existing(folder)
    _write(keys.ca_cert, ca.public_bytes(pem))
    _write(keys.serving_cert, serving.public_bytes(pem))
    _write(keys.serving_key, _pem_key(serving_key))
    _write(keys.admin_cert, admin.public_bytes(pem))
    _write(keys.admin_key, _pem_key(admin_key))
    public = sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(keys.sa_public, public)
    _write(keys.sa_private, _pem_key(sa_key))
    return keys


def existing(folder: Path) -> Pki:
    """The paths `create` writes in `folder` (to restart a server with the same keys)."""
    return Pki(
        ca_cert=folder / "ca.crt",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        admin_cert=folder / "admin.crt",
        admin_key=folder / "admin.key",
        sa_public=folder / "sa.pub",
        sa_private=folder / "sa.key",
    )
