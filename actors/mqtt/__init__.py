"""The plant uplink: the ``mqtt`` bridge actor puts the line on the plant's MQTT broker.

Modules, bottom up: ``config`` (the options), ``uns`` (Unified Namespace topics and payloads,
sans-io), ``sparkplug`` (Sparkplug B payloads, topics and counters, sans-io), ``link`` (the
paho-mqtt connection with back-off), ``requests`` (exposed commands and the calls they make),
``edge`` (the Sparkplug B profile), ``actor`` (the bridge and its UNS profile).
"""
