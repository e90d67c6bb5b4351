"""User and session identifiers that look like personal data are keyed-hashed or refused.

Clients should send pseudonymous ids, but some send an e-mail address or a phone number as
``user_id``. Per ``privacy.pii_ids`` such an id is replaced by ``h:`` + HMAC-SHA256 of its
normalized form (``hash``), refused with a 400 naming the field (``reject``), or stored as
is (``keep``). The HMAC key comes from the environment variable named by
``privacy.id_hash_key_env`` (filled from a Kubernetes Secret); without it a per-install key
is generated once under ``<paths.home>/secrets/`` (a warning says so), unless
``privacy.require_id_hash_key`` makes that an error at start-up. Every process that hashes
(server, ingest, ``caprank privacy delete-user``) must share the key so the same person
gets the same pseudonym; docs/security.md explains.

``canonical`` is what opt-out and deletion compare: the keyed hash of the normalized id
(NFKC, stripped, casefolded), or the stored hashed form itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from caprank.config import CaprankConfig, PrivacyConfig
from caprank.errors import CaprankError
from caprank.files import atomic_write_bytes
from caprank.scrub import contains_pii

log = logging.getLogger(__name__)

HASH_PREFIX = "h:"
_HASHED = re.compile(r"^h:[0-9a-f]{32}$")
KEY_FILE = Path("secrets") / "id_hash.key"


class PiiIdError(CaprankError):
    """An identifier looks like personal data and the policy is ``reject``."""

    reason = "looks like personal data (e-mail, phone, card or IP address); send a pseudonymous id"

    def __init__(self, field: str):
        super().__init__(f"{field} {self.reason}")
        self.field = field


def normalize_id(value: str) -> str:
    """The form ids are compared in: NFKC, surrounding whitespace removed, casefolded."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def is_hashed(value: str) -> bool:
    return bool(_HASHED.match(value))


@dataclass(frozen=True)
class IdProtector:
    """Applies ``privacy.pii_ids`` to identifiers with one HMAC key."""

    mode: str
    key: bytes

    def hash(self, value: str) -> str:
        digest = hmac.new(self.key, normalize_id(value).encode(), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:32]

    def canonical(self, value: str) -> str:
        """The key opt-out and deletion match on (same for raw and hashed forms)."""
        return value if is_hashed(value) else self.hash(value)

    def protect(self, value: str | None, field: str) -> str | None:
        """``value`` as it may be stored; raises ``PiiIdError`` in reject mode."""
        if value is None or self.mode == "keep" or is_hashed(value) or not contains_pii(value):
            return value
        if self.mode == "reject":
            raise PiiIdError(field)
        return self.hash(value)


def _create_key(path: Path) -> None:
    """Write a random key once: the first of several starting processes wins, all read it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    atomic_write_bytes(tmp, secrets.token_hex(32).encode())
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)  # fails if another process created the key meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def load_key(privacy: PrivacyConfig, home: Path) -> bytes:
    """The HMAC key: from the environment, else the per-install key file (created once)."""
    from_env = os.environ.get(privacy.id_hash_key_env, "")
    if from_env:
        return from_env.encode()
    if privacy.require_id_hash_key:
        raise CaprankError(
            f"privacy.require_id_hash_key is set but ${privacy.id_hash_key_env} is empty: "
            "mount the id-hash Secret into that variable"
        )
    path = home / KEY_FILE
    if not path.exists():
        _create_key(path)
    log.warning(
        "$%s is not set: identifiers are hashed with the per-install key %s; set the variable "
        "(from a Secret) so every process shares one key",
        privacy.id_hash_key_env,
        path,
    )
    return path.read_bytes().strip()


def id_protector(cfg: CaprankConfig) -> IdProtector:
    """The protector for ``cfg`` (reads or creates the key; fails loudly if required)."""
    return IdProtector(cfg.privacy.pii_ids, load_key(cfg.privacy, cfg.paths.home))
