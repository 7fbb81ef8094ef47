"""A sans-I/O MQTT 3.1.1 / 5.0 codec, the broker logic, and the Twisted protocol around it."""
