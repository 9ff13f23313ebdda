"""The rerobots remote-lab API: sans-io protocol, driver, actor and a simulator of the service."""
