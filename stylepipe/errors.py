class StageError(RuntimeError):
    """A failure the user can act on (bad input, missing upstream output). Stages print the message
    and exit 1 instead of showing a traceback."""
