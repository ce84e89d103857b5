"""Self-signed certificates made with openssl, for the gateway's own TLS (and nginx's)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(
    folder: Path, name: str = "server", host: str = "127.0.0.1", password: str | None = None
) -> tuple[Path, Path]:
    """A certificate for ``host`` (an IP address or a DNS name, in its subjectAltName, as
    clients check) and its key, unencrypted unless ``password`` is given."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    kind = "IP" if host.replace(".", "").isdigit() else "DNS"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1"]
    command += ["-subj", f"/CN={host}", "-addext", f"subjectAltName={kind}:{host}"]
    command += ["-keyout", str(key), "-out", str(cert)]
    command += ["-passout", f"pass:{password}"] if password else ["-nodes"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key
