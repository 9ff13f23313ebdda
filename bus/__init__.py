"""linebus: the message bus of a production-line controller.

The client API is ``bus.client.Client`` (sync) and ``bus.aio.AsyncClient`` (asyncio); actors
subclass ``bus.actor.Actor``. This package's ``__init__`` imports nothing so that the client core
stays a two-dependency import (pyzmq, msgpack).
"""

__version__ = "0.1.0"
