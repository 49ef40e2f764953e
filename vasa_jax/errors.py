"""User-facing errors: raised for bad input, printed by the CLI as one line."""


class UserError(Exception):
  """A problem with what the user gave us (a file, a flag, a config key).

  The message is one line that names the thing, says what was wrong and what is
  accepted. Commands print it as `error: <message>` and exit with status 2.
  """
