"""The optional C part of linebus: everything else is in pyproject.toml.

``bus._speedups`` (the subscriber's event decoding, see bus/_calls.py) and ``bus._zmqcalls``
(non-blocking libzmq calls with the GIL held, see bus/_zmqio.py) are built when a C compiler and
Python's headers are there. When they are not, the build goes on without them
(``optional=True``) and linebus does the same through Python and pyzmq.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bus._speedups",
            sources=["bus/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "bus._zmqcalls",
            sources=["bus/_zmqcalls.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
