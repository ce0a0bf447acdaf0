"""The SSH key pair test hosts trust, kept in `.hosts/` (git-ignored, mode 0600).

Generated with `cryptography` (a paramiko dependency, so always in the venv) rather than
`ssh-keygen`, so the harness needs no OpenSSH client on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_NAME = "id_ed25519"


def ensure_keypair(hosts_dir: Path) -> tuple[Path, str]:
    """Return (private key path, public key line), creating the pair once."""
    hosts_dir.mkdir(parents=True, exist_ok=True)
    private = hosts_dir / KEY_NAME
    public = hosts_dir / f"{KEY_NAME}.pub"
    if not (private.exists() and public.exists()):
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public.write_text(pub.decode() + " infra-test-harness\n")
    os.chmod(private, 0o600)  # ssh refuses keys readable by others
    return private, public.read_text().strip()
