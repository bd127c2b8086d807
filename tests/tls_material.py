"""Throwaway certificates for TLS tests, made with the openssl command (a CA, a server, a client)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _signed(
    folder: Path, name: str, subject: str, extensions: str, ca: tuple[Path, Path]
) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", subject)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


def make_tls_material(folder: Path) -> TlsMaterial:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2", "-subj", "/CN=esnode test CA")  # fmt: skip
    server = _signed(folder, "server", "/CN=127.0.0.1",
                     "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", (ca_cert, ca_key))  # fmt: skip
    client = _signed(folder, "client", "/CN=prometheus", "extendedKeyUsage=clientAuth\n", (ca_cert, ca_key))
    return TlsMaterial(ca_cert, server[0], server[1], client[0], client[1])
