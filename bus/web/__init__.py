"""``linebus web``: the dashboard page and the HTTP/JSON gateway, one Starlette app.

A client of the bus like any other (it reaches the broker through ``bus.aio`` only), run by
``linebus web`` or, with a ``[web]`` table in the line's config, by ``linebus up``. Needs the
``web`` extra (``pip install 'linebus[web]'``: starlette, uvicorn, python-multipart).

- ``app``: ``create_app``, the app with its lifespan (bus connections opened and closed);
- ``state``: ``WebSettings`` and ``WebState``, the bus connections, one per identity;
- ``auth``: bearer tokens mapped to bus identities;
- ``gateway``: ``/api/*``, the HTTP/JSON gateway and its OpenAPI document;
- ``dashboard``: the page and its live stream (``/``, ``/ui/*``);
- ``static/``: the page's files, shipped in the package.
"""
