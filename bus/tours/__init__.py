"""The tours of ``linebus demo``: what each part of the line does, shown in plain words.

``bus.demo`` (the runner) brings the line up and hands each part to its tour, in this order:

* ``line``: the bus itself (services, a call through the broker, progress, events with
  sequence numbers, typed errors, a crash the supervisor repairs), then, after the actors, the
  broker's counters;
* one module per actor kind with ``tour(bus, service, say)``: ``flux``, ``discovery``,
  ``flashrunner``, ``telemetry``; a kind without one gets ``line.generic`` (ping and describe).

Tours are client code: they drive the line through the facades in ``clients/`` and the client
core, as a user's program would, and print with ``say``. They sit in the top layer with their
runner rather than in ``clients/`` (the facades, which never import actors): a tour may need an
actor package's file format (the FLUX tour builds its print job with ``actors.flux.fcode``).
No actor or facade imports a tour (the import-linter contracts in pyproject.toml). They wait
for the line with ``bus.testing.wait_until`` (a ``BusError`` counting as "not yet").
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Say"]

#: Prints one line of the tour.
Say = Callable[[str], None]
