"""Robot protocol 3 (``FLUX0003`` + TLS, a printer set ``bare=Y``) against the simulator.

The driver picks the protocol from the banner: the same driver reaches a default simulator over
protocol 2 and a bare one over protocol 3. Real sockets on a loopback address of its own; no bus.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.driver import FluxDriver
from actors.flux.simulator import FluxSimulator
from actors.fluxfamily import crypto
from bus.errors import DeviceFault
from tests.integration.test_flux_driver import JOB, config, make_sim

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    keys = {name: crypto.new_key(1024) for name in ("client", "other", "slave")}
    keys["master"] = crypto.new_key(2048)  # it signs the TLS certificate: OpenSSL wants >= 2048
    return keys


@pytest.fixture
async def bare(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FluxSimulator]:
    async with make_sim(keys, bare=True) as simulator:
        yield simulator


@pytest.mark.parametrize("is_bare", [False, True], ids=["protocol2", "protocol3"])
async def test_same_driver_either_protocol(
    keys: dict[str, rsa.RSAPrivateKey], is_bare: bool
) -> None:
    """Upload (raw bytes after ``continue``), download (``binary`` frames), md5 and config:
    the same calls over AES (protocol 2) and over TLS (protocol 3)."""
    data = bytes(range(256)) * 40
    async with (
        make_sim(keys, bare=is_bare) as sim,
        FluxDriver(sim.address, keys["client"], config(sim)) as driver,
    ):
        assert driver.protocol == (3 if is_bare else 2)
        await driver.upload_file(data, "/SD/blob.gcode")
        assert await driver.file_md5("/SD/blob.gcode") == hashlib.md5(data).hexdigest()
        assert (await driver.download_file("/SD/blob.gcode")).data == data
        assert await driver.config_get("bare") == ("Y" if is_bare else None)
        assert (await driver.file_info("/SD/job.fc"))[0]["HEAD_TYPE"] == "EXTRUDER"


async def test_untrusted_key_refused(bare: FluxSimulator) -> None:
    """The device refuses an access id it does not trust: ``AUTH_ERROR`` (space-padded status)."""
    with pytest.raises(DeviceFault) as caught:
        await FluxDriver(bare.address, crypto.new_key(1024), config(bare)).open()
    assert caught.value.device_code == "AUTH_ERROR"


async def test_pins_on_the_certificate(
    bare: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    """With the device's uuid and master key known (from discovery) the certificate must carry
    both; a mismatch fails before our key is shown, as ``REMOTE_IDENTIFY_ERROR``."""
    good = FluxDriver(
        bare.address,
        keys["client"],
        config(bare),
        device_uuid=bare.uuid,
        master_key=keys["master"].public_key(),
    )
    async with good:
        assert (await good.deviceinfo())["uuid"] == bare.uuid.hex
    wrong_key = FluxDriver(
        bare.address, keys["client"], config(bare), master_key=keys["other"].public_key()
    )
    wrong_uuid = FluxDriver(
        bare.address, keys["client"], config(bare), device_uuid=uuidlib.UUID(int=1)
    )
    for driver in (wrong_key, wrong_uuid):
        with pytest.raises(DeviceFault) as caught:
            await driver.open()
        assert caught.value.device_code == "REMOTE_IDENTIFY_ERROR"


async def test_job_and_kick_over_tls(
    bare: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    """Two TLS sessions at once: one holds maintain, the other kicks it (``error KICKED``), and
    the kicked one reconnects over TLS."""
    async with (
        FluxDriver(bare.address, keys["client"], config(bare)) as first,
        FluxDriver(bare.address, keys["other"], config(bare)) as second,
    ):
        await first.maintain()
        await second.kick()
        with pytest.raises(DeviceFault) as caught:
            await first.maintain_home()
        assert caught.value.device_code == "KICKED"
        await first.upload_file(JOB)  # reconnected
        assert first.protocol == 3 and first.reconnects >= 1
