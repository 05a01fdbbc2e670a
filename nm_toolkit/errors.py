"""The base class of errors a user can cause and fix; the CLI prints them as one line."""


class UserError(Exception):
    """Raised with a message that says what went wrong and how to fix it."""
