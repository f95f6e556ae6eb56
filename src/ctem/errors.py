"""``CtemInputError``: the base of every error in what the user gave (a setting, a data or
task file, a model folder, a checkpoint, an output name). The commands turn any of them into
one line ``<command>: error: <message>`` and exit status 1 (``ctem.cli.error_message``); a
new kind of input error derives from it and needs nothing else.

The kinds live beside the code that raises them: ``ctem.settings.SettingError``,
``ctem.rows.DataFormatError`` / ``DataSizeError``, ``ctem.evaluation.tasks.TaskFormatError``,
``ctem.files.OutputPathError`` / ``IncompleteFolderError``, ``ctem.checkpoint_io.CheckpointError``,
``ctem.finite.NonFiniteError`` and ``ctem.remote_code.RemoteCodeError``.
"""

from __future__ import annotations


class CtemInputError(Exception):
    """An error the user can fix; its text is the whole message (no traceback is shown)."""
