"""The simulator's in-memory SD card and USB stick, with the device's file errors (flux.md §1.5).

Paths are relative to an entry (``SD`` or ``USB``); ``..`` escaping the root is the device's
``NOT_EXIST SECURITY_ISSUE``. Writes go to SD only (``BAD_PARAMS USB_NOT_ACCESSABLE``).
"""

from __future__ import annotations

__all__ = ["SimError", "SimStorage"]


class SimError(Exception):
    """A device error answer: ``error <symbols...>``."""

    def __init__(self, *symbols: str) -> None:
        super().__init__(" ".join(symbols))
        self.symbols = symbols


Tree = dict[str, "bytes | Tree"]


class SimStorage:
    """Two file trees; folders are dicts, files are bytes.

    Args:
        sd: Initial SD files, ``{"dir/name.fc": data}``.
        usb: Initial USB files, or None for no stick.
    """

    def __init__(
        self, sd: dict[str, bytes] | None = None, usb: dict[str, bytes] | None = None
    ) -> None:
        self.sd: Tree = {}
        self.usb: Tree | None = None
        for path, data in (sd or {}).items():
            self.put("SD", path, data)
        if usb is not None:
            self.mount_usb(usb)

    def mount_usb(self, files: dict[str, bytes]) -> None:
        """Plug in a USB stick with these files."""
        self.usb = {}
        for path, data in files.items():
            self.put("USB", path, data)

    def unmount_usb(self) -> None:
        """Pull the USB stick out."""
        self.usb = None

    def _root(self, entry: str) -> Tree:
        if entry == "SD":
            return self.sd
        if entry == "USB":
            if self.usb is None:
                raise SimError("NOT_EXIST", "BAD_NODE")
            return self.usb
        raise SimError("NOT_EXIST", "BAD_ENTRY")

    @staticmethod
    def _parts(path: str) -> list[str]:
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:  # stricter than the device, which only refuses paths that end up outside
            raise SimError("NOT_EXIST", "SECURITY_ISSUE")
        return parts

    def _node(self, entry: str, path: str) -> bytes | Tree:
        node: bytes | Tree = self._root(entry)
        for part in self._parts(path):
            if not isinstance(node, dict) or part not in node:
                raise SimError("OSERR_ENOENT")
            node = node[part]
        return node

    def _parent(self, entry: str, path: str, *, write: bool) -> tuple[Tree, str]:
        if write and entry == "USB":
            raise SimError("BAD_PARAMS", "USB_NOT_ACCESSABLE")
        parts = self._parts(path)
        if not parts:
            raise SimError("BAD_PARAMS")
        node = self._node(entry, "/".join(parts[:-1]))
        if not isinstance(node, dict):
            raise SimError("NOT_EXIST", "NOT_DIR")
        return node, parts[-1]

    def put(self, entry: str, path: str, data: bytes) -> None:
        """Store a file, creating parent folders (fixtures; not a device command)."""
        node = self._root(entry)
        *folders, name = self._parts(path)
        for folder in folders:
            child = node.setdefault(folder, {})
            if not isinstance(child, dict):
                raise SimError("NOT_EXIST", "NOT_DIR")
            node = child
        node[name] = data

    def list(self, entry: str, path: str) -> list[tuple[bool, str]]:
        """Folders, ``.fc`` and ``.gcode`` files, as the device shows them."""
        try:
            node = self._node(entry, path)
        except SimError as exc:
            raise (
                SimError("NOT_EXIST", "NOT_DIR") if exc.symbols == ("OSERR_ENOENT",) else exc
            ) from None
        if not isinstance(node, dict):
            raise SimError("NOT_EXIST", "NOT_DIR")
        return [
            (isinstance(child, dict), name)
            for name, child in sorted(node.items())
            if isinstance(child, dict) or name.endswith((".fc", ".gcode"))
        ]

    def read(self, entry: str, path: str) -> bytes:
        """A file's bytes (``NOT_EXIST NOT_FILE`` otherwise)."""
        try:
            node = self._node(entry, path)
        except SimError as exc:
            raise (
                SimError("NOT_EXIST", "NOT_FILE") if exc.symbols == ("OSERR_ENOENT",) else exc
            ) from None
        if isinstance(node, dict):
            raise SimError("NOT_EXIST", "NOT_FILE")
        return node

    def write(self, entry: str, path: str, data: bytes) -> None:
        """Write a file on SD."""
        parent, name = self._parent(entry, path, write=True)
        if isinstance(parent.get(name), dict):
            raise SimError("OSERR_EISDIR")
        parent[name] = data

    def mkdir(self, entry: str, path: str) -> None:
        """Create a folder on SD."""
        parent, name = self._parent(entry, path, write=True)
        if name in parent:
            raise SimError("OSERR_EEXIST")
        parent[name] = {}

    def rmdir(self, entry: str, path: str) -> None:
        """Remove a folder recursively on SD."""
        parent, name = self._parent(entry, path, write=True)
        if not isinstance(parent.get(name), dict):
            raise SimError("NOT_EXIST", "NOT_DIR")
        del parent[name]

    def remove(self, entry: str, path: str) -> None:
        """Delete a file on SD."""
        parent, name = self._parent(entry, path, write=True)
        if name not in parent or isinstance(parent[name], dict):
            raise SimError("NOT_EXIST", "NOT_FILE")
        del parent[name]
