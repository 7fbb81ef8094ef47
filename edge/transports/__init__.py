"""Network transports of the edge: MQTT over TCP, TLS and WebSocket, listening sockets that
several worker processes share (SO_REUSEPORT). Each adapter only moves bytes into the same
sans-I/O :class:`~edge.mqtt.connection.MqttConnection` and the same broker."""
