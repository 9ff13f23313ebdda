"""rerobots seed, chapter 2 "Tutorial", as written (the API token read from jwt.txt stays in this
process: the remote-lab actor uses its own). Matplotlib's window is left out: the ndarray's shape
is printed instead. The waits for READY and for the cam add-on, which the text describes in
words, are written as loops. Run it with `linebus compat`."""

import time

import numpy as np
import rerobots.api

with open("jwt.txt") as fp:
    apic = rerobots.api.APIClient(api_token=fp.read())

print(apic.get_wdeployments(query="misty"))

print(apic.get_wdeployment_info("3a65acd4-4aef-4ffc-b7f9-d50e48fc5541"))

rri = rerobots.Instance(wdeployment_id="3a65acd4-4aef-4ffc-b7f9-d50e48fc5541", apic=apic)

print(rri.get_status())
while rri.get_status() != "READY":
    time.sleep(0.1)
print(rri.get_details())

rri.activate_addon_cam()
while rri.status_addon_cam()["status"] != "active":
    time.sleep(0.1)

res = rri.get_snapshot_cam(dformat="ndarray")

print("snapshot", type(res["data"]).__name__, np.shape(res["data"]))

rri.start_sshclient()

print(rri.exec_ssh("pwd"))

rri.get_file("/etc/hosts", "hosts")

rri.terminate()
print("tutorial done")
