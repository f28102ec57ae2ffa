"""The one base of every error a user fixes by changing their input (a config, a file, a flag, an address).

The CLI prints such an error as one line and exits 2. It lives in a module that imports nothing, so the
CLI can catch it without importing torch, MLflow or Ray first: a bad input is refused in a fraction of a
second."""


class BadInputError(Exception):
    """An input the user can fix; its message names the input and what is expected."""
