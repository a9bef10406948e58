"""The error a bad run specification raises, shared by the plugins (a task's bad data) and
planning (a bad value in a config or spec)."""


class SpecError(ValueError):
    """A bad run specification; the message names the bad value and the valid choices."""
