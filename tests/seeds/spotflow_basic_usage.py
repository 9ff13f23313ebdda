"""spotflow-device seed, "Basic Usage" with its "Logging" snippet (the loop of 60 x 5 s cut to
3 x 0.1 s; the demo line's provisioning token). Run it with `linebus compat`."""

import datetime
import json
import logging
import time

from spotflow_device import DeviceClient

logging.basicConfig()
logging.getLogger().setLevel(logging.DEBUG)

# Connect to the Platform (starts Device Provisioning if the Device is not already registered)
client = DeviceClient.start(
    device_id="my-device", provisioning_token="demo-factory-token", db="spotflow.db"
)

# Create a sender to the default stream
sender = client.create_stream_sender(stream_group="default-stream-group", stream="default-stream")

for i in range(3):
    # Send and display the measured data
    payload = json.dumps(
        {
            "timestamp": datetime.datetime.now().astimezone().isoformat(),
            "temperatureCelsius": 21 + (i * 0.05),
            "humidityPercent": 50 + (i * 0.1),
        }
    )
    sender.send_message(payload.encode())
    print(payload)

    # Pause till next iteration
    time.sleep(0.1)
