"""spotflow-device seed, its Reference section: every class, method and property it lists, called
as documented, with the types it documents checked (None where it returns None). Run it with
`linebus compat`."""

import sys
import threading

from spotflow_device import (
    Compression,
    DesiredProperties,
    DeviceClient,
    ProvisioningOperation,
    SpotflowError,
    StreamSender,
)

updates = []
called = threading.Event()


def on_desired(desired):
    updates.append(desired)
    called.set()


def on_provisioning(operation):
    print("provisioning:", operation.id, operation.verification_code, operation.expiration_time)


client = DeviceClient.start(
    device_id="line3-controller",
    provisioning_token="demo-factory-token",
    db="spotflow.db",
    instance=None,
    display_provisioning_operation_callback=on_provisioning,
    desired_properties_updated_callback=on_desired,
)
assert isinstance(client, DeviceClient)
assert issubclass(ProvisioningOperation, object)
# "called right after DeviceClient.start with the current version of the Desired Properties"
assert called.wait(10), "desired_properties_updated_callback was not called after start"
assert isinstance(updates[0], DesiredProperties)
assert isinstance(updates[0].version, int) and isinstance(updates[0].values, dict)

print("device_id:", client.device_id)
assert isinstance(client.device_id, str) and client.device_id
print("workspace_id:", client.workspace_id)
assert isinstance(client.workspace_id, str)

desired = client.get_desired_properties()
assert isinstance(desired, DesiredProperties)
# "if their version is higher than version or if version is None. Otherwise, return None."
current = client.get_desired_properties_if_newer(None)
assert isinstance(current, DesiredProperties) and current.version == desired.version
assert client.get_desired_properties_if_newer(desired.version) is None
print("desired:", desired.version, desired.values)

assert client.update_reported_properties({"firmware": "1.2.3", "seed": "reference"}) is None
pending_reported = client.any_pending_reported_properties_updates
assert isinstance(pending_reported, bool)

default_sender = client.create_stream_sender()
assert isinstance(default_sender, StreamSender)
sender = client.create_stream_sender(
    stream_group="seed-group", stream="seed-stream", compression=Compression.FASTEST
)
for compression in (Compression.UNCOMPRESSED, Compression.FASTEST, Compression.SMALLEST_SIZE):
    client.create_stream_sender(stream="seed-compression", compression=compression)

assert sender.enqueue_message('{"reading": 1}', batch_id="batch-1", message_id="m-1") is None
sender.enqueue_message(b'{"reading": 2}', batch_id="batch-1", message_id="m-2")
# Message Chunking: two chunks of one Message, then its manual completion.
sender.enqueue_message(b"chunk-a", batch_id="batch-1", message_id="m-3", chunk_id="c-1")
sender.enqueue_message(
    b"chunk-b", batch_id="batch-1", message_id="m-3", batch_slice_id="s-1", chunk_id="c-2"
)
assert sender.enqueue_message_completion("batch-1", "m-3") is None
assert sender.enqueue_batch_completion("batch-1") is None
pending = client.pending_messages_count
assert isinstance(pending, int) and pending >= 0
print("pending before wait:", pending)
assert sender.send_message("last", batch_id="batch-2", message_id="m-4") is None
assert client.wait_enqueued_messages_sent() is None
print("pending after wait:", client.pending_messages_count)

try:
    sender.enqueue_batch_completion("")
except SpotflowError as error:
    print("SpotflowError:", error)
else:
    sys.exit("an empty batch id was accepted")
print("reference done")
