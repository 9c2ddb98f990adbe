"""A real mosquitto configured like a 2Smart cloud broker, on a free loopback port.

Users are added with their e-mail (``wsp``) and token; the broker user name is
sha256(wsp) as the hub will present it. The ACL (:data:`ACCOUNT_ACL`, documented in
docs/cloud.md) confines each user to its own tree: its devices, their errors and
notifications; REQ/RES per device, told apart by the MQTT client id (the hub's device id,
as every hub of an account shares the user): a client publishes requests only under
``<user>/req/<client id>/`` and reads responses only under ``<user>/res/<client id>/``.
The platform user answers every account's requests. A superuser (``monitor``) may read
everything: tests subscribe with it to see what the hub published.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from gatewayd.credentials import mqtt_username
from gatewayd.simulator.procs import Child, free_port, mqtt_connack, port_open, wait_until

MONITOR_USER = "monitor"
PLATFORM_USER = "platform"
# What a cloud user may do (mosquitto grants when any line matches, so REQ/RES cannot sit
# under a blanket %u/# line).
ACCOUNT_ACL = """\
pattern readwrite %u/sweet-home/#
pattern readwrite %u/errors/#
pattern readwrite %u/notifications/#
pattern write %u/req/%c/#
pattern read %u/res/%c/#
"""
PLATFORM_ACL = """\
user platform
topic read +/req/#
topic write +/res/#
topic read +/notifications/#
topic read +/sweet-home/#
"""


@dataclass
class TlsFiles:
    """Server side TLS material; ``port`` is the mqtts listener."""

    cafile: Path
    certfile: Path
    keyfile: Path
    port: int = 0


@dataclass
class Account:
    wsp: str
    token: str

    @property
    def username(self) -> str:
        return mqtt_username(self.wsp)


@dataclass
class Broker:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    tls: TlsFiles | None = None
    accounts: list[Account] = field(default_factory=list)
    monitor_password: str = "monitor-secret"  # noqa: S105 - a local test broker
    platform_password: str = "platform-secret"  # noqa: S105 - a local test broker
    debug_log: bool = False  # log every packet, e.g. "Denied PUBLISH" lines for ACL checks
    child: Child | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.passwd_file = self.workdir / "passwd"
        self.acl_file = self.workdir / "acl"
        self.conf_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"

    def add_account(self, wsp: str, token: str) -> Account:
        account = Account(wsp, token)
        self.accounts.append(account)
        if self.child is not None:
            self._write_auth()
            self.reload()
        return account

    def _write_auth(self) -> None:
        exe = shutil.which("mosquitto_passwd")
        if exe is None:
            raise RuntimeError("mosquitto_passwd not found: install 'mosquitto' "
                               "(scripts/setup.sh does)")
        self.passwd_file.write_text("")
        self.passwd_file.chmod(0o600)
        users = [(MONITOR_USER, self.monitor_password),
                 (PLATFORM_USER, self.platform_password)]
        users += [(a.username, a.token) for a in self.accounts]
        for user, password in users:
            subprocess.run([exe, "-b", str(self.passwd_file), user, password], check=True,
                           capture_output=True)
        self.acl_file.write_text(
            f"user {MONITOR_USER}\ntopic readwrite #\n\n{PLATFORM_ACL}\n"
            f"# every cloud user owns the tree named after it\n{ACCOUNT_ACL}")
        self.acl_file.chmod(0o600)

    def _write_conf(self) -> None:
        lines = [
            # mosquitto started as root drops to user 'mosquitto', which could not read
            # our files; stay whoever started us.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            # Cloud brokers send each packet at once (EMQX's default); mosquitto's default
            # (Nagle on) adds delayed-ACK waits of up to 40 ms to what the hub publishes.
            "set_tcp_nodelay true",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "connection_messages true",
            *(["log_type debug"] if self.debug_log else []),
            f"listener {self.port} {self.host}",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls.port} {self.host}",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
        self.conf_file.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not found: install 'mosquitto' (scripts/setup.sh does)")
        if self.port == 0:
            self.port = free_port(self.host)
        if self.tls is not None and self.tls.port == 0:
            self.tls.port = free_port(self.host)
        self._write_auth()
        self._write_conf()
        self.child = Child("mosquitto", [exe, "-c", str(self.conf_file)],
                           self.workdir / "mosquitto.stdout")
        # A listening port is not a broker that has read its users: wait for a CONNACK.
        wait_until(lambda: mqtt_connack(self.host, self.port, MONITOR_USER,
                                        self.monitor_password), 10,
                   "mosquitto to accept a login (CONNACK)", self.child)
        if self.tls is not None:
            tls_port = self.tls.port
            wait_until(lambda: port_open(self.host, tls_port), 10, "mosquitto TLS listener",
                       self.child)
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def kill(self) -> None:
        """Die without a clean shutdown, the way a broker host crashes."""
        if self.child is not None:
            self.child.proc.kill()
            self.child.proc.wait(5)
            self.child.stop()
            self.child = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read password and ACL files (SIGHUP), as a cloud adds users live."""
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                self.child.proc.send_signal(1)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def make_test_pki(directory: Path, server_names: list[str],
                  ca_name: str = "gatewayd test CA") -> TlsFiles:
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
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

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
