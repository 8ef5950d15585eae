"""Errors a user can fix. The CLI prints them in one or two lines and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (recipe, data file, plugin name): shown without a traceback, exit status 2."""

    exit_code = 2


class RecipeError(UserError):
    """A problem at a known place in a recipe file: `file: key.path: message`."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class RecipeErrors(UserError):
    """Several recipe problems found in one validation pass; all are shown."""

    def __init__(self, errors: list[RecipeError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class PluginError(UserError):
    """A plugin could not be loaded or two plugins claim one component name."""
