"""The AMQP 0-9-1 listener: the asyncio adapter around the sans-I/O connection, and the
resource alarms that block publishers."""
