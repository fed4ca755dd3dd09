"""Read-only view models over the broker that the API routes and the metrics share."""
