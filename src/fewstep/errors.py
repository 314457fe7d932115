"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class FewstepError(Exception):
    """A user-facing error: bad input, a bad file, an impossible request."""


class CheckpointError(FewstepError):
    """A checkpoint file that is missing, unsafe, corrupt or does not fit the model."""


class ArgError(FewstepError):
    """A bad command-line argument (exit code 2)."""
