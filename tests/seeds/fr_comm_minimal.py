"""fr_comm seed, "Getting Started": the minimal example, as written (the demo line's LAN unit).
Run it with `linebus compat`."""

from fr_comm import FlashRunner, FR_Comm_Exception

try:
    with FlashRunner("LAN", "127.0.0.1:21234") as fr:
        fr.FR_SendCommand("#GETENGSTATUS")
        print(fr.FR_GetAnswer(1500))
except FR_Comm_Exception as exc:
    print(exc)
