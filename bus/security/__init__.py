"""Security of a linebus line: CURVE keys, the ZAP handler, access lists, the audit log.

Each module has one job and knows nothing of the broker; the broker wires them together:

- ``keys``: generate key pairs as certificate files (secret 0600), load keys from a file, the
  environment or a config value.
- ``keyring``: the known public keys and the identity name of each.
- ``curve``: the socket options of a CURVE server (broker) and client, and the ZAP domains.
- ``zap``: the ZAP handler that lets known keys in under their identity name, reloads, and tells
  which connections a reload revoked.
- ``acl``: who may register, publish, subscribe and call what; decisions with reasons.
- ``audit``: the append-only audit log of privileged calls, and its queries.
- ``files``: files created 0600 atomically, or brought to 0600.
- ``ratelimit``: bounded, summarised logging of rejected input.
- ``exposure``: safe by default: an exposed broker without CURVE refuses to start.
- ``errors``: ``KeyFileError`` and ``AclError`` (both ``ConfigError``).

Import the modules themselves (``from bus.security import acl``); this package imports nothing,
so the client core can use ``keys`` and ``curve`` without the server-side modules.
"""
