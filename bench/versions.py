"""Which switch code a run measures: the working tree, and with ``--baseline REF`` the
switch of another commit, materialised from git into the run dir.

Both run on the bench's interpreter (the dependencies are the same packages); they
differ only in where ``python -m switch`` imports its code from: ``PYTHONPATH`` and the
working directory, and for the baseline without the editable install's finder of the
working tree. Each version's config is cut to the keys its own config schema knows,
since the switch refuses unknown keys and the two may differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from bench.runconfig import REPO, TomlTable, fit_to_schema
from switch.config import SwitchConfig

Side = Literal["current", "baseline"]

OLDER_VERSIONS_KEYS: Final[frozenset[str]] = frozenset()
"""Config keys the bench generates only for older switches (keys the current code no
longer knows, which an older one requires): left out of the current's config without
an error. Any other key the current code does not know is a bug of the bench."""

_WITHOUT_EDITABLE_INSTALL: Final = (
    "import sys; sys.meta_path[:] = [finder for finder in sys.meta_path"
    " if not getattr(finder, '__module__', '').startswith('__editable__')]"
)
"""First in a baseline's process: ``pip install -e`` put a finder of the working tree's
``switch`` on sys.meta_path, which would hand a baseline every module its own tree lacks
(``switch.cli`` of today under an older ``switch``); without it, such a module fails."""
_SWITCH_LAUNCHER: Final = (
    f"{_WITHOUT_EDITABLE_INSTALL}; import runpy;"
    " runpy.run_module('switch', run_name='__main__', alter_sys=True)"
)
"""``python -m switch``, for a baseline (its arguments follow)."""
_SCHEMA_SCRIPT: Final = f"""{_WITHOUT_EDITABLE_INSTALL}
import json, msgspec, switch, switch.config
print(json.dumps({{"module": switch.config.__file__,
                  "schema": msgspec.json.schema(switch.config.SwitchConfig)}}))
"""
"""Run with a version's code first on the path: its config schema, and where it was
imported from (to check that it is that version's code, not the bench's)."""

GIT_TIMEOUT_S: Final = 60.0


class BaselineError(Exception):
    """The baseline commit cannot be found, materialised or read."""


class SwitchVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One switch code in the run: where its tree is, and its config schema."""

    side: Side
    tree: str
    """The folder whose ``switch`` package runs (the repository for the current)."""
    ref: str | None
    """The git revision as given (None for the current: the working tree)."""
    sha: str | None
    """The commit it resolved to; for the current, HEAD (None outside git)."""
    dirty: bool | None = None
    """The current only: uncommitted changes under switch/ or conf/ (so not HEAD's)."""
    schema: dict[str, Any]
    """Its SwitchConfig as JSON Schema (msgspec.json.schema)."""

    def label(self, name: str) -> str:
        """A switch's label in the run dir (configs, logs, journals) and in the report."""
        return name if self.side == "current" else f"baseline-{name}"

    @property
    def dialects_dir(self) -> Path:
        """The version's own ISO 8583 field tables: dialects are data, part of its code."""
        return Path(self.tree) / "conf" / "dialects"

    @property
    def card_keys(self) -> Path:
        own = Path(self.tree) / "conf" / "card-keys.toml"
        return own if own.exists() else REPO / "conf" / "card-keys.toml"

    def environment(self) -> dict[str, str]:
        return child_environment(Path(self.tree))

    def switch_command(self, *arguments: str) -> list[str]:
        """``python -m switch ARGUMENTS`` of this version, on the bench's interpreter."""
        if self.side == "current":
            return [sys.executable, "-m", "switch", *arguments]
        return [sys.executable, "-c", _SWITCH_LAUNCHER, *arguments]

    def fit(self, config: Mapping[str, Any]) -> tuple[TomlTable, list[str]]:
        """``config`` cut to the keys this version knows, and the keys left out."""
        fitted, dropped = fit_to_schema(config, self.schema)
        if self.side == "current":
            unknown = sorted(set(dropped) - OLDER_VERSIONS_KEYS)
            if unknown:
                raise ValueError(
                    f"the bench generates switch config keys the switch does not know: "
                    f"{', '.join(unknown)}"
                )
        return fitted, dropped


def child_environment(tree: Path = REPO) -> dict[str, str]:
    """The bench's environment with ``tree`` first on the import path (``bench`` is not
    an installed package, and a baseline's ``switch`` must win over the installed one),
    Python's output unbuffered and no card keys."""
    env = dict(os.environ)
    # The switch would take card keys from this variable over the config's key file: the
    # bench's generated cards use the demo keys, whatever the operator's shell holds.
    env.pop("SWITCH_CARD_KEYS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def current_version() -> SwitchVersion:
    """The working tree's switch, as imported by the bench itself."""
    sha = _git("rev-parse", "--verify", "--quiet", "HEAD", check=False)
    dirty = None
    if sha is not None:
        changes = _git(
            "status", "--porcelain", "--untracked-files=no", "--", "switch", "conf", check=False
        )
        dirty = None if changes is None else bool(changes)
    return SwitchVersion(
        side="current",
        tree=str(REPO),
        ref=None,
        sha=sha,
        dirty=dirty,
        schema=msgspec.json.schema(SwitchConfig),
    )


def resolve_commit(ref: str) -> str:
    """The full sha of ``ref`` (any git revision of the bench's repository)."""
    revision = f"{ref}^{{commit}}"
    sha = _git("rev-parse", "--verify", "--quiet", "--end-of-options", revision, check=False)
    if not sha:
        raise BaselineError(f"--baseline {ref}: not a commit of {REPO}")
    return sha


def baseline_version(ref: str, sha: str, run_dir: Path) -> SwitchVersion:
    """Materialises commit ``sha`` into ``<run_dir>/baseline`` (``git archive``: the
    repository itself is not touched, and the tree goes with the run dir) and reads
    its config schema."""
    tree = run_dir / "baseline"
    tree.mkdir()
    archive = run_dir / "baseline.tar"
    _git("archive", "--format=tar", f"--output={archive}", sha)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    archive.unlink()
    if not (tree / "switch" / "__init__.py").exists():
        raise BaselineError(f"--baseline {ref} ({sha[:12]}): its tree has no switch package")
    version = SwitchVersion(side="baseline", tree=str(tree), ref=ref, sha=sha, schema={})
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _SCHEMA_SCRIPT],
            cwd=tree,
            env=version.environment(),
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
        found = json.loads(completed.stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        stderr = getattr(exc, "stderr", None) or ""
        raise BaselineError(
            f"--baseline {ref} ({sha[:12]}): cannot read its config schema: {exc}\n{stderr[-2000:]}"
        ) from None
    module = Path(found["module"]).resolve()
    if not module.is_relative_to(tree.resolve()):
        raise BaselineError(f"--baseline {ref}: python imported the switch from {module}")
    return msgspec.structs.replace(version, schema=found["schema"])


def _git(*arguments: str, check: bool = True) -> str | None:
    """A git command's output in the bench's repository (None if it failed, unchecked)."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(REPO), *arguments],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=check,
        )
    except FileNotFoundError:
        if check:
            raise BaselineError("git is not installed") from None
        return None
    except subprocess.CalledProcessError as exc:
        raise BaselineError(f"git {' '.join(arguments)}: {exc.stderr.strip()}") from None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()
