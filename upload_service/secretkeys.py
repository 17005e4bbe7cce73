"""Server secrets listed by key id, from a setting and/or a ``key_id=secret`` file.

Upload tokens sign with such secrets and webhook endpoint secrets are encrypted with them; both
rotate the same way: several key ids verify (or decrypt), one active id signs (or encrypts).
This module reads and checks them once, for both; it never echoes a secret in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from upload_service.settings import check_token_secret


def load_secret_keys(
    inline: Mapping[str, SecretStr],
    file: Path | None,
    active_key_id: str | None,
    *,
    setting: str,
    missing: str,
    error: type[Exception],
) -> tuple[dict[str, str], str]:
    """``(secrets by key id, the active key id)`` from ``inline`` plus ``file``.

    ``setting`` names the settings section in messages (``tokens.secrets``), ``missing`` is the
    message when there is no secret at all; every refusal raises ``error``.
    """
    section = setting.split(".")[0]
    found = {key_id: secret.get_secret_value() for key_id, secret in inline.items()}
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise error(f"{setting}_file cannot be read ({exc.strerror})") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, sep, secret = line.partition("=")
            if not sep:
                raise error(f"{setting}_file line {number}: expected key_id=secret")
            found[key_id.strip()] = secret.strip()
    if not found:
        raise error(missing)
    for key_id, secret in found.items():
        try:
            check_token_secret(key_id, secret)
        except ValueError as exc:
            raise error(str(exc).replace("token", section.rstrip("s"))) from None
    active = active_key_id
    if active is None:
        if len(found) > 1:
            raise error(f"several keys in {setting}: set {section}.active_key_id to the one in use")
        active = next(iter(found))
    if active not in found:
        raise error(f"{section}.active_key_id {active!r} is not among the key ids of {setting}")
    return found, active
