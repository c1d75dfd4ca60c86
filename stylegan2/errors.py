"""The one base class of errors meant for the person at the keyboard."""


class UserError(Exception):
    """Bad input or a missing resource, caused by what a user or script asked for.

    The message is one line that says what to do. The command line prints it once (in
    `draggan.__main__`) and the app shows it once (beside the image, which stays as it was);
    every other exception is a bug and keeps its traceback.
    """
