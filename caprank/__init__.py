"""caprank: learn to rank capabilities (compositions of tools) for a natural-language intent."""

__version__ = "0.1.0"
