"""The one base class of errors a user can cause: the CLI prints their message as one line and exits 2."""


class UserError(ValueError):
    """Bad input (file, image, key, value or size); the message names it and says what was expected."""
