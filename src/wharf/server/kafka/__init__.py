"""The Kafka listener: the asyncio adapter around the sans-I/O Kafka codec and handlers."""
