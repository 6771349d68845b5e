"""The pure core: decides what happens, from plain data, with no I/O and no clock.

Only the standard library and the CEL binding may be imported here; a test enforces it.
"""
