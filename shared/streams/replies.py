"""Reading Redis replies, whose strings arrive as bytes unless the client decodes them."""


def as_text(value: object) -> str:
    """Return a reply value as text: bytes are decoded as UTF-8, anything else str()."""
    return value.decode() if isinstance(value, bytes) else str(value)
