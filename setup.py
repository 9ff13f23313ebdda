"""The optional C part of linebus: everything else is in pyproject.toml.

``bus._speedups`` (the subscriber's event decoding, see bus/_calls.py) is built when a C
compiler and Python's headers are there. When they are not, the build goes on without it
(``optional=True``) and linebus runs the same code in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bus._speedups",
            sources=["bus/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
