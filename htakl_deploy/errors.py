"""The one exception type for user mistakes (bad flags, files, data, checkpoints).

The CLI turns a ``UserError`` into a one-line message on stderr and exit code 2, with no
traceback. Library code raises it (or ``ValueError`` for programming-level misuse) with a
message naming the flag or file and what was expected.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and what is accepted."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program was (like Ctrl-C) so that every ``finally``
    runs: temporary files and folders are removed, the Lava worker is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
