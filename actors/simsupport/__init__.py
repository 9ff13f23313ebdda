"""What the simulators share that is no part of any device's protocol: JPEG frames for now.

The remote-lab and FLUX simulators both serve camera images that a standard decoder must read.
One baseline JPEG encoder (``jpeg``) serves both, here, in a package that is not an actor kind
(it has no ``actor.py``) and imports no actor package. The import-linter contracts in
pyproject.toml allow exactly the simulators to import it (``actor-packages``).
"""
