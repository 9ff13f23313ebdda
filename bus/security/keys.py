"""CURVE key pairs: generate them as certificate files, load them from a file, a variable or a value.

Files are ZeroMQ certificates, readable by ``zmq.auth.load_certificate`` and by every CZMQ
tool: ``NAME.key`` holds the public key, ``NAME.key_secret`` both keys::

    curve
        public-key = "<40 z85 characters>"
        secret-key = "<40 z85 characters>"      (secret file only)

Unlike ``zmq.auth.create_certificates`` (which writes both files 0644 under the usual umask),
``generate_keypair`` creates the secret file 0600 from its first instant, atomically, and never
replaces an existing file unless told to. Loading a secret refuses a file that its group or
other users can read, as OpenSSH does: a key that others could have copied is not a secret.

Where a key comes from, one of (the config decides; exactly one)::

    load_keypair(file="keys/fr1.key_secret")         # a secret certificate file
    load_keypair(env="LINEBUS_KEY")                  # 40 z85 characters of the secret key
    load_keypair(value="...")                        # the same, inline in a config (tests)
    load_public_key(file="keys/broker.key")          # the broker's public key, for clients

Every failure is a ``KeyFileError`` naming the file or variable and the problem, never a
fallback to plaintext. This module imports only the standard library, pyzmq and ``bus.errors``
(through ``bus.security.errors``), so the client core may use it.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from bus.security.errors import KeyFileError
from bus.security.files import mode_problem, write_private_file

__all__ = [
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "KeyFiles",
    "KeyPair",
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "parse_certificate",
    "parse_z85_key",
    "validate_key_name",
]

#: File name suffixes, as CZMQ and pyzmq name certificates.
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"

# Key names become file names and identity names: no separators, no leading dot or dash.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_Z85_KEY_LENGTH = 40  # 32 bytes of key in Z85
_KEY_LINE = re.compile(rb"^(public-key|secret-key)\s*=\s*(.*)$")

_BANNER = """#   ****  Generated on {now} by linebus keys generate  ****
#   ZeroMQ CURVE {kind} Certificate of {name!r}
#   {advice}

"""
_PUBLIC_ADVICE = "Give this file to the broker (its keys directory) and to clients of this peer."
_SECRET_ADVICE = "DO NOT SHARE THIS FILE nor change its permissions (0600): it is the identity."


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as pyzmq's socket options take it: Z85 text as bytes.

    ``secret`` is None for a public certificate; it never appears in ``repr``.
    """

    public: bytes
    secret: bytes | None = field(default=None, repr=False)

    def require_secret(self, source: str) -> bytes:
        """The secret key, or ``KeyFileError`` saying ``source`` held only a public key."""
        if self.secret is None:
            raise KeyFileError(source, "malformed", "holds a public key only, not a secret key")
        return self.secret


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """What ``generate_keypair`` wrote: the two files and the new public key."""

    public_path: Path
    secret_path: Path
    public_key: bytes


def validate_key_name(name: str) -> str:
    """Return ``name`` if it can name a key file and an identity; raise ``KeyFileError`` if not."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise KeyFileError(
            repr(name),
            "malformed",
            "not a valid key name (letters, digits, '_', '.', '-', up to 128, "
            "starting with a letter or digit)",
        )
    return name


def generate_keypair(
    directory: str | os.PathLike[str],
    name: str,
    *,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> KeyFiles:
    """Create ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``.

    Args:
        directory: Where the files go; created (0700) if missing.
        name: The key's name, which becomes the identity name in the broker's keyring.
        overwrite: Replace existing files; without it an existing file of either name is an error
            and nothing is written.
        metadata: ``key = value`` lines for the secret certificate's metadata section.

    Raises:
        KeyFileError: ``exists`` (a file is there and ``overwrite`` is false), ``unreadable``
            (the directory cannot be created or written).
    """
    validate_key_name(name)
    folder = Path(directory)
    public_path = folder / f"{name}{PUBLIC_SUFFIX}"
    secret_path = folder / f"{name}{SECRET_SUFFIX}"
    if not overwrite:
        for path in (secret_path, public_path):
            if path.exists():
                raise KeyFileError(
                    str(path), "exists", "already exists; pass overwrite to replace the key pair"
                )
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    secret_text = _certificate(
        _BANNER.format(now=now, kind="**Secret**", name=name, advice=_SECRET_ADVICE),
        public,
        secret,
        metadata,
    )
    public_text = _certificate(
        _BANNER.format(now=now, kind="Public", name=name, advice=_PUBLIC_ADVICE), public, None, None
    )
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(secret_path, secret_text, overwrite=overwrite)
        write_private_file(public_path, public_text, overwrite=overwrite)
        os.chmod(public_path, 0o644)  # public by nature: the broker and clients read it
    except FileExistsError as exc:
        raise KeyFileError(
            str(exc.filename or secret_path),
            "exists",
            "already exists; pass overwrite to replace the key pair",
        ) from None
    except OSError as exc:
        raise KeyFileError(
            str(exc.filename or folder), "unreadable", f"cannot write: {exc.strerror}"
        ) from None
    return KeyFiles(public_path, secret_path, public)


def _certificate(
    banner: str, public: bytes, secret: bytes | None, metadata: Mapping[str, str] | None
) -> bytes:
    lines = [banner, "metadata\n"]
    for key, value in (metadata or {}).items():
        if not _NAME.match(key) or "\n" in value:
            raise KeyFileError(repr(key), "malformed", "not a valid metadata name or value")
        lines.append(f"    {key} = {value}\n")
    lines.append("curve\n")
    lines.append(f'    public-key = "{public.decode()}"\n')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    return "".join(lines).encode()


def parse_z85_key(text: str | bytes, source: str) -> bytes:
    """Check that ``text`` is a Z85 CURVE key (40 characters, 32 bytes) and return it as bytes.

    Raises:
        KeyFileError: ``malformed``, naming ``source``; the text itself is never quoted.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    if len(raw) != _Z85_KEY_LENGTH:
        raise KeyFileError(
            source,
            "malformed",
            f"a CURVE key is {_Z85_KEY_LENGTH} Z85 characters, found {len(raw)}",
        )
    try:
        z85.decode(raw)
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(source, "malformed", "not a Z85-encoded key") from None
    return raw


def parse_certificate(data: bytes, source: str) -> KeyPair:
    """Read the keys of a ZeroMQ certificate (the rules of ``zmq.auth.load_certificate``).

    A secret key must belong to the public key beside it.

    Raises:
        KeyFileError: ``malformed`` (no public key, a key that is not Z85, a mismatched pair).
    """
    found: dict[bytes, bytes] = {}
    for line in data.splitlines():
        match = _KEY_LINE.match(line.strip())
        if match is not None:
            found.setdefault(match.group(1), match.group(2).strip(b" \t'\""))
    if b"public-key" not in found:
        raise KeyFileError(source, "malformed", "no public-key line: not a CURVE certificate")
    public = parse_z85_key(found[b"public-key"], source)
    if b"secret-key" not in found:
        return KeyPair(public)
    secret = parse_z85_key(found[b"secret-key"], source)
    if zmq.curve_public(secret) != public:
        raise KeyFileError(source, "malformed", "the secret key does not match the public key")
    return KeyPair(public, secret)


def _read(path: Path) -> tuple[bytes, int]:
    """The bytes and the mode of a key file, or ``KeyFileError`` (missing, unreadable)."""
    source = str(path)
    try:
        return path.read_bytes(), path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(source, "missing", "key file not found") from None
    except IsADirectoryError:
        raise KeyFileError(source, "unreadable", "is a directory, not a key file") from None
    except OSError as exc:
        raise KeyFileError(source, "unreadable", f"cannot read: {exc.strerror}") from None


def _secret_from_file(path: Path) -> KeyPair:
    """The key pair of a secret certificate that only its owner can read."""
    data, mode = _read(path)
    pair = parse_certificate(data, str(path))
    pair.require_secret(str(path))
    problem = mode_problem(mode)
    if problem is not None:
        raise KeyFileError(
            str(path), "permissions", f"secret key file is {problem}; run: chmod 600 {path}"
        )
    return pair


def _one_source(file: object, env: object, value: object) -> None:
    given = [name for name, v in (("file", file), ("env", env), ("value", value)) if v is not None]
    if len(given) != 1:
        raise TypeError(f"give exactly one of file, env, value (got {given or 'none'})")


def load_keypair(
    *,
    file: str | os.PathLike[str] | None = None,
    env: str | None = None,
    value: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> KeyPair:
    """Load an own key pair (secret included) from exactly one place.

    Args:
        file: A secret certificate (``NAME.key_secret``); it must not be readable by group or others.
        env: The name of an environment variable holding the 40-character Z85 secret key.
        value: The Z85 secret key itself (from a config value; prefer a file or the environment).
        environ: Where ``env`` is looked up; ``os.environ`` by default.

    Raises:
        KeyFileError: missing, unreadable, too open (``permissions``) or malformed, with the file
            or ``$VARIABLE`` named.
    """
    _one_source(file, env, value)
    if file is not None:
        return _secret_from_file(Path(file))
    if env is not None:
        source = f"${env}"
        text = (os.environ if environ is None else environ).get(env)
        if not text:
            raise KeyFileError(source, "missing", "environment variable is not set or empty")
        return _from_secret(parse_z85_key(text, source))
    assert value is not None
    return _from_secret(parse_z85_key(value, "config value"))


def _from_secret(secret: bytes) -> KeyPair:
    return KeyPair(zmq.curve_public(secret), secret)


def load_public_key(
    *,
    file: str | os.PathLike[str] | None = None,
    env: str | None = None,
    value: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """Load a peer's public key (the broker's, for a client) from exactly one place.

    A certificate file may be public (``.key``) or secret (``.key_secret``; then it must be
    private like any secret); a variable or value holds the 40-character Z85 public key.

    Raises:
        KeyFileError: missing, unreadable or malformed, with the file or ``$VARIABLE`` named.
    """
    _one_source(file, env, value)
    if file is not None:
        path = Path(file)
        if path.name.endswith(SECRET_SUFFIX):
            return _secret_from_file(path).public
        return parse_certificate(_read(path)[0], str(path)).public
    if env is not None:
        source = f"${env}"
        text = (os.environ if environ is None else environ).get(env)
        if not text:
            raise KeyFileError(source, "missing", "environment variable is not set or empty")
        return parse_z85_key(text, source)
    assert value is not None
    return parse_z85_key(value, "config value")
