"""What the FLUX family of actors shares: the ``flux`` and ``discovery`` actors import it, not each other.

A FLUX Delta speaks on three channels (flux.md): the robot protocol on TCP 23811 (the ``flux``
actor), the discovery datagrams on UDP 1901 and device management over TLS on TCP 1901 (the
``discovery`` actor, and the ``flux`` actor when it authorises its key with a password). Both
actors, and the printer simulator that serves all three channels, need the same pieces; they live
here, in a package that is not an actor kind (it has no ``actor.py``) and imports no actor package:

* ``crypto``: the RSA and AES primitives every channel uses (keys, access ids, signatures, OAEP,
  AES-CFB8);
* ``keys``: where an actor keeps its client key and how it loads it (``DEFAULT_KEY``, ``load_key``);
* ``framing``: the length-prefixed text frames and binary bodies of both TCP channels, and the
  device's ``error SYMBOL ...`` answers;
* ``errors``: the one mapping from those answers to ``bus.errors`` (``device_error``);
* ``datagram``: the discovery datagrams on UDP 1901 (announcements, touch requests and answers);
* ``manage_protocol``: the sans-io management protocol on TLS 1901 (requests, answers, identity);
* ``tls``: what the TLS channels share (robot protocol 3 of a ``bare=Y`` device, the camera,
  management): TLS contexts for the self-signed device certificate, and the key handshake
  inside TLS (``ClientIdentify`` / ``ServerIdentify``), with what the client verifies;
* ``manager``: ``FluxManager``, a management session over TLS.

The import-linter contracts in pyproject.toml keep it that way: actor packages are independent of
each other, except that ``flux`` and ``discovery`` may import this package.
"""
