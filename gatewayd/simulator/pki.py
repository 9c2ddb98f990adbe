"""Throw-away TLS material for the simulated broker and the tests' TLS listeners.

cryptography is imported inside the functions: the simulator's plain-MQTT users (and the
benches that time its start) should not pay for it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TlsFiles:
    """Server side TLS material; ``port`` is the mqtts listener."""

    cafile: Path
    certfile: Path
    keyfile: Path
    port: int = 0


def sim_pki(directory: Path, server_names: tuple[str, ...] = ("127.0.0.1", "localhost")
            ) -> TlsFiles:
    """The simulator's CA and server certificate in ``directory``: made once, then reused,
    so a hub that trusts ``ca.pem`` keeps trusting the broker across restarts."""
    from cryptography import x509  # here for the same reason as in make_test_pki

    files = TlsFiles(cafile=directory / "ca.pem", certfile=directory / "server.pem",
                     keyfile=directory / "server.key")
    try:
        cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
        usable = files.cafile.exists() and files.keyfile.exists() and (
            cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
            > datetime.timedelta(days=1))
    except (OSError, ValueError):
        usable = False
    if usable:
        return files
    return make_test_pki(directory, list(server_names), ca_name="gatewayd simulator CA",
                         days=3650)


def make_test_pki(directory: Path, server_names: list[str],
                  ca_name: str = "gatewayd test CA", days: int = 1) -> TlsFiles:
    """A throw-away CA and a server certificate for ``server_names`` (DNS names or IPs).

    Tests use it to run the TLS listener; a certificate for some other name lets them check
    that the hub refuses a host name mismatch.
    """
    # Imported here: the simulator's plain-MQTT users should not pay for cryptography.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in server_names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]))
        .issuer_name(ca_subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(cafile=directory / "ca.pem", certfile=directory / "server.pem",
                     keyfile=directory / "server.key")
    files.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    files.keyfile.chmod(0o600)
    return files
