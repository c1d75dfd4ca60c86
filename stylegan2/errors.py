"""The errors of this package, in its lowest layer (imported by every other module, importing none).

`UserError` is the one base class of errors meant for the person at the keyboard; the checkpoint
errors below are its family for model files. They are re-exported from `stylegan2.safe_pickle` and
`stylegan2.checkpoints`, where they used to live, so `from stylegan2.checkpoints import
CheckpointError` keeps working.
"""


class UserError(Exception):
    """Bad input or a missing resource, caused by what a user or script asked for.

    The message is one line that says what to do. The command line prints it once (in
    `draggan.__main__`) and the app shows it once (beside the image, which stays as it was);
    every other exception is a bug and keeps its traceback.
    """


class CheckpointError(UserError):
    """A checkpoint could not be found, read or used. The message says what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle names a global outside the allowlist (it may try to run code)."""


class UnsupportedCheckpointError(CheckpointError):
    """A readable checkpoint of a kind this app cannot run (an unknown network, a setting we do not compute)."""


class ModelNotAllowedError(CheckpointError):
    """The spec names something other than a catalog model, where only catalog models may be loaded."""
