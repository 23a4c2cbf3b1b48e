"""Exceptions of the core.

Every error caused by the user's input is an :class:`InputError` whose message names the
file, the object and what is wrong; the ``sbrt`` command turns it into ``error: ...`` and
exit status 2, the Slicer modules show it in a message box.
"""


class SbrtError(Exception):
    """Base class of the errors raised by the core."""


class InputError(SbrtError):
    """Bad input: missing or unreadable file, wrong object type, inconsistent data."""


class GeometryError(InputError):
    """Image or dose geometry that the operation cannot use (missing/uneven slices, non-axial)."""


class FrameOfReferenceError(InputError):
    """Objects that must share a DICOM Frame of Reference do not."""
