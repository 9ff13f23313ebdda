"""The C client's codec (clients/c) against every golden vector in tests/vectors/.

One C program (clients/c/tests/vectors.c) decodes each vector's frames and encodes its
``decoded`` form; this driver feeds it every ``*.json`` file found (new vectors are picked up
without a change here) and checks, as docs/PROTOCOL.md §15 asks: a valid vector decodes to its
``decoded`` (types included: a bool is not an int, an int not a float), a vector that is not
``decode_only`` encodes to exactly its ``frames_hex``, and an invalid one is refused with its
code at its stage (``decode``: the header; ``value``: the payload).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import ROOT, scaled

pytestmark = [pytest.mark.integration, pytest.mark.interop]

#: The ``problem`` of a refused payload's details (docs/PROTOCOL.md §4).
PAYLOAD_PROBLEMS = {
    "truncated",
    "trailing_bytes",
    "invalid_byte",
    "invalid_utf8",
    "map_key_not_str",
    "too_deep",
    "ext_type",
    "bulk_reference",
    "invalid",
}
VECTORS = sorted((ROOT / "tests" / "vectors").glob("*.json"))


def _from_json(value: Any) -> Any:
    """The vectors' JSON form as values: {"hex": ...} becomes bytes."""
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _same(got: Any, want: Any) -> bool:
    """Equal, and of the same types all the way down (True == 1 and 1 == 1.0 in Python)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return set(got) == set(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


@pytest.fixture(scope="module")
def c_results(c_client_build: Path) -> dict[str, dict[str, Any]]:
    """What the C codec made of every vector, by vector name (one run of the C program)."""
    packer = msgpack.Packer()
    stream = b"".join(
        packer.pack(
            {
                "name": vector["name"],
                "channel": vector["channel"],
                "frames": [bytes.fromhex(frame) for frame in vector["frames_hex"]],
                "decoded": _from_json(vector["decoded"]),
            }
        )
        for vector in (json.loads(path.read_text()) for path in VECTORS)
    )
    run = subprocess.run(
        [str(c_client_build / "test-vectors")],
        input=stream,
        capture_output=True,
        timeout=scaled(60),
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    results = {r["name"]: r for r in msgpack.Unpacker(io.BytesIO(run.stdout))}
    assert len(results) == len(VECTORS)
    return results


@pytest.mark.parametrize("path", VECTORS, ids=[path.stem for path in VECTORS])
def test_c_codec_matches_vector(path: Path, c_results: dict[str, dict[str, Any]]) -> None:
    """The C codec decodes, encodes or refuses this vector as docs/PROTOCOL.md §15 says."""
    vector = json.loads(path.read_text())
    got = c_results[vector["name"]]
    if vector["error"] is not None:
        assert got["decoded"] is None, f"accepted an invalid vector: {got['decoded']}"
        error = got["error"]
        assert (error["code"], error["stage"]) == (
            vector["error"]["code"],
            vector["error"]["stage"],
        ), error["message"]
        if error["stage"] == "value":  # §4: why the payload is refused, in its details
            assert error["details"]["reason"] == "invalid_payload"
            assert error["details"]["problem"] in PAYLOAD_PROBLEMS, error["details"]
        return
    assert got["error"] is None, f"refused a valid vector: {got['error']}"
    want = _from_json(vector["decoded"])
    assert _same(got["decoded"], want), f"decoded {got['decoded']!r}, want {want!r}"
    if not vector["decode_only"]:
        assert got["encode_error"] is None, got["encode_error"]
        assert [frame.hex() for frame in got["encoded"]] == vector["frames_hex"]
