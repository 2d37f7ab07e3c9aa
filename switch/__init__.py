"""A trio payment switch: POS (ISO 8583) and online (MessagePack) channels to bank links."""

__version__ = "0.1.0"
