"""Errors that reach the user as one line and a non-zero exit."""


class UserError(Exception):
    """Bad input or environment: the message names the culprit (file, field, value)."""
