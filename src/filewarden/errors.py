"""The errors a user can see, in one tree.

    FilewardenError                 one readable line; the CLI prints it, no traceback
    +-- UsageError (ValueError)     bad input: exit code 2
    |   +-- ConfigError             config.py: a bad file, key or value
    |   +-- GlobError               globs.py: a pattern that cannot be matched
    +-- BackendError                backends/: no backend can start or run here
    +-- OutputError                 pipeline/sinks.py: an output cannot be opened or written
    +-- ControlError                service/control.py: no agent answered on the socket
    +-- StoreError                  fleet/pgstore.py: the fleet's store cannot be reached or read

Everything else is a defect and keeps its traceback. This module imports
nothing, so the CLI can name these classes without loading the agent.
"""

from __future__ import annotations


class FilewardenError(Exception):
    """Something the user can act on; str() is one readable line."""


class UsageError(FilewardenError, ValueError):
    """Bad input from the user (command line or configuration): exit code 2."""


class BackendError(FilewardenError, RuntimeError):
    """A backend cannot start or run; the message says why, with the fix."""


class OutputError(FilewardenError, RuntimeError):
    """An output cannot be opened or written."""


class ControlError(FilewardenError, RuntimeError):
    """The agent could not be asked over its control socket."""


class StoreError(FilewardenError, RuntimeError):
    """The fleet's event store (PostgreSQL) cannot be reached or read."""
