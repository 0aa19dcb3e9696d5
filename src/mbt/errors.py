"""Errors shared by every layer (configs of the model, the data, training and the command line)."""


class ConfigError(ValueError):
    """A configuration field has an invalid value; the message names the field."""
