"""The one exception type rowflow raises, and the warning category of run.json's warnings."""

from __future__ import annotations

from typing import Optional


class RowflowError(RuntimeError):
    """A rowflow run failed: the binary exited non-zero, or the data could not be turned into rows.

    Attributes:
        exit_code: the binary's exit code — 64 usage or manifest error, 65 bad input data, 66 input or manifest
            not found, 70 internal error, 74 cannot write the output; a negative number when the binary was
            killed by a signal (-9: SIGKILL). Errors found in Python before the binary reads a row use the
            same codes (65 for a non-numeric column, 64 for a manifest that is not a mapping).
        message: the binary's one-line error (`rowflow: error: <where>: <what>`), or the Python-side reason.
        stderr: everything the binary printed on stderr ("" for Python-side errors).
        path: the run's output directory when there is one (run.json there says `failed`).

    Example:
        >>> try:
        ...     rowflow.run({"version": 1, "operators": []}, np.ones((3, 2)))
        ... except rowflow.RowflowError as e:
        ...     print(e.exit_code, e.message)
        64 rowflow: error: /tmp/rowflow-0qbfj32y/manifest.yaml:3:16: operators: the list is empty
    """

    def __init__(self, exit_code: int, message: str, stderr: str = "", path: Optional[str] = None):
        self.exit_code = exit_code
        self.message = message
        self.stderr = stderr
        self.path = path
        super().__init__(f"rowflow exit code {exit_code}: {message}")


class RowflowWarning(UserWarning):
    """A warning a run reported (one `rowflow: warning: …` line, one entry of run.json `warnings`).

    Example:
        >>> import warnings
        >>> warnings.simplefilter("error", rowflow.RowflowWarning)   # make warnings fail the notebook cell
    """
