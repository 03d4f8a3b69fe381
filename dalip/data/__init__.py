"""Data: the embedded Twemoji dataset (art: Twemoji, CC-BY 4.0)."""

from .twemoji import EmojiRecord, load_emoji_image, twemoji_index

__all__ = ["EmojiRecord", "load_emoji_image", "twemoji_index"]
