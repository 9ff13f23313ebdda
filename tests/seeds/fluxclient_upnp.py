"""fluxclient seed, "Discover and manage the device": discover devices with UpnpDiscover (the
metadata checked against the page's list of keys and types), then authorize and manage one with
UpnpTask, by password (a string, then a callable) and with device_metadata, as the page
describes. The demo line's printer p2 (password "demo") is managed; its name and password are
put back at the end. Run it with `linebus compat`."""

import json
import uuid as uuidlib

from fluxclient.upnp import UpnpDiscover, UpnpTask

# Discover devices: the callback gets each device's metadata
found = {}
devices = {}


def on_device(discover, **metadata):
    found[metadata["name"]] = metadata
    devices[metadata["name"]] = metadata.get("device")  # fluxclient 1.3's Device, also given
    if {"p1", "p2"} <= set(found):
        discover.stop()


UpnpDiscover().discover(on_device)

# Device metadata: at least these keys, of these types
REQUIRED = {
    "uuid": uuidlib.UUID,
    "name": str,
    "serial": str,
    "model_id": str,
    "version": str,
    "ipaddr": str,
    "endpoint": tuple,
}
OPTIONAL = {"st_id": int, "st_ts": int, "st_prog": float, "head_module": str, "error_label": str}
for name, metadata in sorted(found.items()):
    for key, kind in REQUIRED.items():
        assert isinstance(metadata[key], kind), (name, key, metadata[key])
    host, port = metadata["endpoint"]
    assert isinstance(host, str) and isinstance(port, int), metadata["endpoint"]
    for key, kind in OPTIONAL.items():
        if key in metadata:
            assert isinstance(metadata[key], kind), (name, key, metadata[key])
    # head_module "only appear when device is running task"; error_label only on an error
    if metadata.get("st_id") == 0:
        assert "head_module" not in metadata and "error_label" not in metadata, metadata
    print("found", name, metadata["ipaddr"], metadata.get("st_id"))

p2 = found["p2"]

# The same device by uuid, and by address
only = []
UpnpDiscover(uuid=p2["uuid"]).discover(
    lambda discover, **metadata: (only.append(metadata["name"]), discover.stop())
)
UpnpDiscover(device_ipaddr=p2["ipaddr"]).discover(
    lambda discover, **metadata: (only.append(metadata["name"]), discover.stop())
)
print("filtered", only)

# fluxclient 1.3's names for the same: a Device as JSON, and a poke of an address
print("serialized", json.loads(json.dumps(devices["p2"].to_dict(serialized=True)))["uuid"])
discover = UpnpDiscover()
discover.poke(p2["ipaddr"])

# Authorize with password
lookups = []
task = UpnpTask(
    p2["uuid"],
    backend_options={"password": "demo"},
    lookup_callback=lambda task: lookups.append(task),
    lookup_timeout=10,
)
print("task", task.name, task.serial, task.model_id, task.version, task.ipaddr)

# Manage device name, network and security
task.rename("p2-renamed")
task.modify_network(method="dhcp", ssid="plant-floor", security="WPA2-PSK", psk="secret-psk")
print("wifi", [ap["ssid"] for ap in task.get_wifi_list()])
task.modify_password("demo", "changed-by-seed", reset_acl=False)

# device_metadata skips the discovery; the password given as a callable
task = UpnpTask(
    p2["uuid"],
    device_metadata=p2,
    backend_options={"password": lambda instance: "changed-by-seed"},
)
print("with metadata", task.name)
task.modify_password("changed-by-seed", "demo", reset_acl=False)
task.rename("p2")
print("upnp done")
