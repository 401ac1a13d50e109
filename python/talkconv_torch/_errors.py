"""talkconv's named errors as a Python exception (no import of the extension here: _C imports this)."""
import enum


class Status(enum.IntEnum):
    """talkconv::status: why a call was refused."""

    success = 0
    invalid_shape = 1
    invalid_window = 2
    invalid_length = 3
    invalid_dropout = 4
    null_pointer = 5
    workspace_too_small = 6
    size_overflow = 7
    invalid_layout = 8
    cuda_error = 9


class TalkConvError(ValueError):
    """A talkconv::error: ``code`` is a :class:`Status`, ``argument`` names the argument as talkconv's
    SPEC writes it (``"C"``, ``"max_left"``, ``"lengths[3]"``, ``"weight"``...), ``str(e)`` is
    ``what()``, e.g. ``talkconv: invalid_shape: C = 10 is not divisible by H = 3``."""

    def __init__(self, message, code, argument):
        super().__init__(message)
        self.code = Status(int(code))
        self.argument = str(argument)

    @property
    def status_name(self):
        return self.code.name

    def __reduce__(self):
        return (type(self), (str(self), int(self.code), self.argument))
