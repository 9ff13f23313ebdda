"""The broker's keyring: every known public key and the identity name it stands for.

A keyring is read from a directory of public certificates, where ``NAME.key`` makes the key in it
identity ``NAME`` (the files ``linebus keys generate NAME`` writes), and/or from a table of
``name = "<z85 public key>"`` in the config. It is immutable: a reload builds a new one and hands
it to the ZAP handler, which swaps it in one assignment.

The ZAP handler looks keys up in their 32-byte binary form (what ZAP requests carry), so the
lookup on each handshake is one dict access with no encoding.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from zmq.utils import z85

from bus.security.errors import KeyFileError
from bus.security.keys import PUBLIC_SUFFIX, parse_certificate, parse_z85_key, validate_key_name

__all__ = ["Keyring"]


class Keyring(Mapping[str, bytes]):
    """Identity name -> Z85 public key, with the reverse lookup by binary key.

    Two names for one key are refused: a connection must have exactly one identity.

    Args:
        keys: Identity name -> Z85 public key (bytes or str).
        source: Where the keys came from, for error messages.
    """

    __slots__ = ("_by_binary", "_by_name", "source")

    def __init__(self, keys: Mapping[str, bytes | str] | None = None, *, source: str = "") -> None:
        self.source = source or "keyring"
        self._by_name: dict[str, bytes] = {}
        self._by_binary: dict[bytes, str] = {}
        for name, key in (keys or {}).items():
            self._add(name, key, f"{self.source}: {name}")

    def _add(self, name: str, key: bytes | str, where: str) -> None:
        validate_key_name(name)
        public = parse_z85_key(key, where)
        binary = z85.decode(public)
        other = self._by_binary.get(binary)
        if other is not None and other != name:
            raise KeyFileError(
                where, "malformed", f"the same public key is already identity {other!r}"
            )
        if name in self._by_name and self._by_name[name] != public:
            raise KeyFileError(where, "malformed", f"identity {name!r} is given two keys")
        self._by_name[name] = public
        self._by_binary[binary] = name

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Keyring:
        """Read every ``*.key`` file of ``directory``; the file's stem is the identity name.

        Secret files (``*.key_secret``) and other files are ignored. A directory that other
        users may write to is refused: whoever can add a file there can add an identity.

        Raises:
            KeyFileError: the directory is missing, unreadable or world-writable, a file is
                malformed, or two files hold the same key.
        """
        folder = Path(directory)
        source = str(folder)
        try:
            st = folder.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise KeyFileError(source, "unreadable", "is not a directory of public keys")
            if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
                raise KeyFileError(
                    source,
                    "permissions",
                    f"keys directory is writable by other users; run: chmod o-w {folder}",
                )
            paths = sorted(p for p in folder.iterdir() if p.name.endswith(PUBLIC_SUFFIX))
        except FileNotFoundError:
            raise KeyFileError(source, "missing", "keys directory not found") from None
        except OSError as exc:
            raise KeyFileError(source, "unreadable", f"cannot read: {exc.strerror}") from None
        ring = cls(source=source)
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KeyFileError(
                    str(path), "unreadable", f"cannot read: {exc.strerror}"
                ) from None
            name = path.name[: -len(PUBLIC_SUFFIX)]
            ring._add(name, parse_certificate(data, str(path)).public, str(path))
        return ring

    def merged(self, other: Keyring) -> Keyring:
        """A keyring with the keys of both; the same conflicts as within one are refused."""
        ring = Keyring(self._by_name, source=self.source)
        for name, key in other.items():
            ring._add(name, key, f"{other.source}: {name}")
        return ring

    def identity_of(self, binary_key: bytes) -> str | None:
        """The identity of a 32-byte binary public key (as ZAP carries it), or None."""
        return self._by_binary.get(binary_key)

    @property
    def names(self) -> frozenset[str]:
        """Every identity name in the keyring."""
        return frozenset(self._by_name)

    def __getitem__(self, name: str) -> bytes:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<Keyring {self.source}: {len(self)} identities>"
