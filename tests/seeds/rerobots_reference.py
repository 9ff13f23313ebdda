"""rerobots seed, chapters 4 and 5: the examples of 4.1 and 5.1 as written, then each method of
"API client objects" and of the Instance class called as documented. Run it with
`linebus compat`."""

import time

import rerobots
import rerobots.api

# 4.1 Example
apic = rerobots.api.APIClient()

wdeployments = apic.get_wdeployments()
print(apic.get_wdeployment_info(wdeployments[0]["id"]))

# 5.1 Example
inst = rerobots.Instance(["fixed_misty2"])
print(inst.get_status())


def wait_ready(instance_id):
    while apic.get_instance_info(instance_id)["status"] != "READY":
        time.sleep(0.1)


def wait_active(status):
    while status()["status"] != "active":
        time.sleep(0.1)


# 4.2 Create a new client object; 4.3 Workspace deployments
apic = rerobots.api.APIClient(api_token=None, headers=None, ignore_env=False)
print(apic.get_wdeployments(query="misty", maxlen=5, types=["fixed_misty2"]))
print(apic.get_wdeployments(page=1, max_per_page=2))

# 4.4 Instance creation and management: the instance of 5.1 is the one listed
(instance_id,) = apic.get_instances()
print(apic.get_instances(include_terminated=False, page=1, max_per_page=10))
wait_ready(instance_id)
print(apic.get_instance_info(instance_id)["status"])

# 4.6 add-on: mistyproxy
apic.activate_addon_mistyproxy(instance_id)
wait_active(lambda: apic.status_addon_mistyproxy(instance_id))
print("mistyproxy", sorted(apic.status_addon_mistyproxy(instance_id)))
apic.deactivate_addon_mistyproxy(instance_id)

# 4.5 add-on: cam
apic.activate_addon_cam(instance_id)
wait_active(lambda: apic.status_addon_cam(instance_id))
snapshot = apic.get_snapshot_cam(instance_id, camera_id=0, coding="base64", dformat=None)
print("snapshot", snapshot["data"][:8])
apic.terminate_instance(instance_id)

# request_instance with a VPN, and its OpenVPN client
booked = apic.request_instance(
    "f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51", sshkey=None, vpn=True, reserve=False, duration=600
)
wait_ready(booked["id"])
print("vpn client", sorted(apic.get_vpn_newclient(booked["id"])))

# 5.2 Instance class, attached to that instance
rri = rerobots.Instance(instance_id=booked["id"], apic=apic)
print("deployment", rri.get_wdeployment_info()["id"])
rri.start_sshclient()
print(rri.exec_ssh("pwd", timeout=10))
stdin, stdout, stderr = rri.exec_ssh("echo from the seed", get_files=True)
print(stdout.read())
with open("local.txt", "w") as f:
    f.write("put by the seed\n")
rri.put_file("local.txt", "remote.txt")
rri.get_file("remote.txt", "back.txt")
with open("back.txt") as f:
    assert f.read() == "put by the seed\n"
try:
    rri.sftp_client()
except rerobots.api.Error as error:  # not offered over linebus: put_file and get_file are
    print("sftp_client:", error)
rri.terminate()
print("reference done")
