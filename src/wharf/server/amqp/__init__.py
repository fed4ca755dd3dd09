"""The AMQP 0-9-1 front end: the listener, the asyncio adapter around each sans-I/O
connection, and the resource alarms that block publishers."""
