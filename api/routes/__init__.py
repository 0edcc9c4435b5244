"""One router per module, each with its prefix and tags."""
