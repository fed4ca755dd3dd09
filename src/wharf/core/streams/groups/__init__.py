"""Kafka consumer groups without the wire format: membership, assignment hand-off,
subscriptions and the snapshot that lets members carry on across a restart."""
