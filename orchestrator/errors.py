"""Errors a user sees as one clear line (the CLI prints them without a stack trace)."""


class UserError(Exception):
    """Bad input or an environment problem the user can fix; the message names the culprit."""
