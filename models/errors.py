"""Errors raised by the model code. Each carries the fix an artist should apply.

Nodes turn these into messages that also name the node (see ``nodes/errors.py``).
"""


class FaceSnapError(Exception):
    """Base class. ``fix`` tells the user what to do about it."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class MissingDependencyError(FaceSnapError):
    """An optional Python package (insightface, dlib, onnxruntime, ...) is not installed."""


class ModelFileError(FaceSnapError):
    """A weight or model file is missing, incomplete, corrupt or of the wrong kind."""


class NoFaceError(FaceSnapError):
    """No face was found where one was required."""


class InvalidInputError(FaceSnapError):
    """An input has the wrong shape, size or content."""
