"""fr_comm seed: "Verify the installation", "Flexible Connection Options", "Device Operations",
"Built-In Data Encryption" and the six public symbols, called as the page shows them (the demo
line's LAN unit; local paths in the working directory instead of C:\\FlashRunner). The page's
files are made first (its snippets assume they exist), and the channels' run of
"RUN Project.prj" is let finish before FR_RunProject uses them. Run it with `linebus compat`."""

import os
import time

from fr_comm import FlashRunner, FR_Comm_Exception, FR_FileType, FR_GetDllVersion, ProgressHandler

# Verify the installation
print(FR_GetDllVersion())

# Flexible Connection Options: the demo line has no serial unit, so these fail the fr_comm way.
for port, settings in (("COM3", "115200"), ("/dev/ttyUSB0", "115200")):
    try:
        FlashRunner(port, settings)
    except FR_Comm_Exception as exc:
        print(f"{port}: FR_Comm_Exception: {exc}")
    else:
        raise SystemExit(f"{port}: a unit that is not on the line answered")


class Progress(ProgressHandler):
    def on_progress(self, percent, done, total):
        print(f"progress {percent}% ({done}/{total})")


os.makedirs("dest", exist_ok=True)
with open("app.frb", "wb") as f:
    f.write(bytes(range(256)) * 64)
for name in ("Project.prj", "demo.prj"):
    with open(name, "w") as f:
        f.write(f"; {name}\n")

# LAN - the most common production setup
with FlashRunner("LAN", "127.0.0.1:21234") as fr:
    for name in ("Project.prj", "demo.prj"):
        fr.FR_SendFile(name, FR_FileType.PRJ)

    # Device Operations
    fr.FR_SendCommand("#GETENGSTATUS")
    answer = fr.FR_GetAnswer(1500)  # timeout in ms
    print(answer)

    fr.FR_SendCommand_Ex([1, 2], "RUN Project.prj")
    answer = fr.FR_GetAnswer(1500)
    print(answer)
    answer = fr.FR_GetAnswer(1500)  # one answer per channel
    print(answer)

    fr.FR_SendFile("app.frb", FR_FileType.FRB, Progress())
    fr.FR_GetFile("app.frb", "dest", FR_FileType.FRB)

    while True:  # until the channels of "RUN Project.prj" are no longer running
        fr.FR_SendCommand("#GETENGSTATUS")
        if "R" not in fr.FR_GetAnswer(1500).split("|")[1]:
            break
        time.sleep(0.1)

    def on_done(channel: int, result: bool) -> None:
        print(f"channel {channel}: {'OK' if result else 'FAIL'}")

    fr.FR_RunProject("demo.prj", [1, 2, 3], 120000, on_done)

    # Built-In Data Encryption for Dynamic Memory
    public_key = fr.FR_GetPublicKey()
    print("public key", public_key.splitlines()[0])
    single = fr.FR_EncryptData(b"\x00" * 32)
    print("single-shot", len(single.header), len(single.payload))
    header = fr.FR_DynMemBeginEncryption()
    blocks = [fr.FR_DynMemEncryptData(bytes([i]) * 32) for i in range(3)]
    print("session", len(header), [len(block) for block in blocks])
    fr.FR_DynMemResetEncryption()

    # FR_Logger: the independent real-time logger client, over LAN
    with fr.FR_Logger() as logger:
        logger.open()
        fr.FR_SendFile("Project.prj", FR_FileType.PRJ)
        print("log:", logger.read_line(timeout=10))
print("operations done")
