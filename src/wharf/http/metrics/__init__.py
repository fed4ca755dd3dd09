"""Prometheus exposition: the scrape-time collector and the latency families it renders."""
