"""Errors a user can act on. The CLI prints them as one line and exits with `exit_code`; no traceback."""


class UserError(Exception):
    """Bad input or environment: message says what is wrong and how to fix it."""

    exit_code = 2


class StoreError(UserError):
    """The SQL store cannot be used (unreachable, behind the code, driver error)."""

    exit_code = 3


class RunError(UserError):
    """The job itself failed (a rank crashed, the model raised): exit code 1, one line naming what failed."""

    exit_code = 1
