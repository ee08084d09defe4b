"""The release tool's operator-facing error, importable without MLflow (``judge`` needs none)."""


class ReleaseError(Exception):
    """A release operation cannot be done; the message is one line meant for the operator."""
