"""The pytest plugin's own tests run inner test sessions with pytester (this directory only)."""

pytest_plugins = ["pytester"]
