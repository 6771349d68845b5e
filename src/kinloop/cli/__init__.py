"""The `kinloop` command line."""
