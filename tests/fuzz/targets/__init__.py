"""One fuzzing harness per parser that reads bytes from outside the process.

Every module here is a *target*: ``ERRORS`` names the exceptions the parser documents for bad
input, and ``fuzz_one(data)`` feeds it one input, catching exactly those. Anything else that
escapes (an IndexError, a TypeError, a RecursionError...) is a defect of the parser: atheris
(``tests/fuzz/run.py``) stops on it and writes the input out, and the replay test fails on it.

``TARGETS`` lists them by name; the seed corpus of target ``NAME`` is ``tests/fuzz/corpus/NAME``
(``tests/fuzz/make_corpus.py`` writes it).
"""

TARGETS = (
    "codec",
    "flux_handshake",
    "flux_framing",
    "discovery_datagram",
    "manage_protocol",
    "flashrunner",
    "ingest_request",
    "telemetry_codec",
    "config",
    "remotelab",
)
