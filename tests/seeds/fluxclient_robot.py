"""fluxclient seed, 4.1.1 FluxRobot: the page's example (its address, lost in typesetting, is the
demo line's printer p1) and both of its "Case"s, then every method the page lists, called with
its documented arguments. The page's `uuid` and `metadata` are the device's: the uuid is the
script's first argument, the metadata as discovery gives it. job.fc (an FCode task) and
firmware.bin are files in the working directory, as the page assumes. Run it with
`linebus compat fluxclient_robot.py UUID`."""

import io
import os
import sys
import time
from uuid import UUID

from fluxclient.commands.misc import get_or_create_default_key
from fluxclient.device import discover_device
from fluxclient.robot import FluxRobot

uuid = UUID(sys.argv[1])

client_key = get_or_create_default_key("./sdk_connection.pem")
robot = FluxRobot(("127.0.0.2", 23811), client_key)

# Case 1: Get device from uuid
device = discover_device(uuid)
robot = device.connect_robot(client_key)

# Case 2: Connect to robot directly
metadata = device.to_old_dict()
robot = FluxRobot((metadata["ipaddr"], 23811), client_key)


def progress(robot, done, total):
    print(f"progress {done}/{total}")


def wait_status(*st_ids):
    while robot.report_play()["st_id"] not in st_ids:
        time.sleep(0.05)


print("deviceinfo", robot.deviceinfo["nickname"])
config = robot.config
config["autoresume"] = "Y"
print("config autoresume", config["autoresume"])
del config["autoresume"]

# Files
robot.mkdir("/SD/seed")
robot.upload_file("job.fc", upload_to="/SD/seed/job.fc", process_callback=progress)
print("list_files", robot.list_files("/SD/seed"))
info, images = robot.file_info("/SD/seed/job.fc")
print("file_info", sorted(info), len(images))
print("file_md5", robot.file_md5("/SD/seed/job.fc"))
robot.cpfile("/SD/seed/job.fc", "/SD/seed/copy.fc")
stream = io.BytesIO()
robot.download_file("/SD/seed/copy.fc", stream, process_callback=progress)
with open("job.fc", "rb") as f:
    assert stream.getvalue() == f.read(), "the downloaded copy differs"
robot.rmfile("/SD/seed/copy.fc")

size = os.path.getsize("job.fc")
with open("job.fc", "rb") as f:
    robot.upload_stream(f, "application/fcode", size, "/SD/seed/stream.fc", progress)
with open("job.fc", "rb") as f:
    buffer = f.read()
for feeder in robot.yihniwimda_upload_stream("application/fcode", size, "/SD/seed/feed.fc"):
    recived_size = feeder(buffer)
    print(f"{recived_size} bytes sent")
print("after uploads", sorted(name for _, name in robot.list_files("/SD/seed")))
for name in ("job.fc", "stream.fc", "feed.fc"):
    robot.rmfile(f"/SD/seed/{name}")
robot.rmdir("/SD/seed")

# A task: select, start, pause, resume, report, info, abort, quit
robot.upload_file("job.fc", upload_to="/SD/job.fc")
robot.select_file("/SD/job.fc")
robot.start_play()
wait_status(16)
robot.pause_play()
wait_status(36, 48)
print("paused", robot.report_play()["st_id"])
robot.resume_play()
wait_status(16)
print("play_info", sorted(robot.play_info()[0]))
robot.abort_play()
wait_status(128)
print("aborted", robot.report_play()["st_id"])
robot.quit_play()
wait_status(0)
robot.rmfile("/SD/job.fc")

# Maintain and scan tasks
task = robot.maintain()
print("maintain head_info", sorted(task.head_info()))
task.quit()
task = robot.scan()
print("scan oneshot", task.oneshot()[:2] == b"\xff\xd8")
task.quit()

robot.kick()

with open("firmware.bin", "rb") as f:
    robot.update_firmware(f, os.path.getsize("firmware.bin"), process_callback=progress)
print("firmware sent")
robot.close()
print("robot done")
