"""extctl: the developer CLI of the extension platform."""
