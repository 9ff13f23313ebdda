"""What the ``linebus`` command line draws on a terminal: progress of a call (``progress``),
aligned tables (``tables``), and ``linebus top``, the live view of a line (``top``).

Only the CLI imports this package, and these modules import rich (a dependency of linebus,
pure Python) only here: the client core and the actor runtime never load it.
"""
