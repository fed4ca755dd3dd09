"""The JSON API routes, one module per kind of object."""
