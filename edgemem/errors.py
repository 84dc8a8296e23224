"""User-facing errors: the CLI prints them as one line and exits non-zero, never a traceback."""


class EdgememError(Exception):
    """A user mistake or an unsupported request (bad input, missing file, foreign checkpoint)."""


class StateError(EdgememError, ValueError):
    """A streaming state that does not match the model's state contract."""


class InputError(EdgememError, ValueError):
    """Frames, reset flags or other step inputs of the wrong shape or dtype."""


class CheckpointError(EdgememError):
    """An unreadable, foreign or mismatching checkpoint."""


class UnsupportedError(EdgememError):
    """A configuration option or request edgemem does not support."""


class NonFiniteError(EdgememError, ValueError):
    """NaN or infinity in a state file, a checkpoint or a step's outputs: never passed on."""
