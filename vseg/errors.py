"""User-facing errors.

Anything a user can cause (a bad file, a wrong option) raises :class:`VsegError` with one
line naming the file and what is wrong. The CLI prints that line and exits non-zero; no
traceback reaches the user. Bugs stay ordinary exceptions so they are not hidden.
"""

from __future__ import annotations


class VsegError(Exception):
    """A mistake in the user's input, reported as one line and exit code 2."""

    exit_code = 2


class InputError(VsegError):
    """An input file that cannot be used (not a video, truncated, wrong size...)."""


class AmbiguousMotionError(VsegError):
    """A stream whose motion vectors cannot be composed exactly (B-frames, several refs)."""
