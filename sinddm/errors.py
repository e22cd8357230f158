"""The exceptions the CLI turns into a one-line message and an exit code (no traceback)."""

import re
import signal
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: the message names the input and what to do (exit code 2)."""


class TrainingStopped(Exception):
    """Training stopped early on SIGINT/SIGTERM after saving the state at `step` (exit 128 + signum)."""

    def __init__(self, step: int, signum: int, out_dir: Path, image: str | None = None):
        self.step, self.signum, self.out_dir, self.image = step, signum, out_dir, image
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")


def check_readable(path: Path, what: str) -> None:
    """A file we may not read is said to be so, not reported as missing or corrupt by its parser."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        raise UserError(f"{what} '{path}': cannot be read (permission denied); check the file's permissions") from None


class ParameterError(UserError):
    """Bad input named by the API's parameter (`param`); doors rename it (`renamed`) for their users.
    `message` may name other parameters as {name}: each door spells them its own way too."""

    def __init__(self, param: str, message: str):
        self.param, self.message = param, message
        super().__init__(f"{param}: {_spell(message, str)}")

    def renamed(self, name: str, spell=None) -> UserError:
        """The same refusal with the parameter called `name` (and the others `spell(param)`)."""
        return UserError(f"{name}: {_spell(self.message, spell or str)}")


def _spell(message: str, spell) -> str:
    return re.sub(r"\{([a-z_0-9]+)\}", lambda m: spell(m.group(1)), message)
