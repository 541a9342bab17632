"""How to install an extra of this toolkit, said right for how it was installed.

Every hint the toolkit prints ("... is not installed: pip install ...") comes from
`install_hint`, because the right command depends on the install: the distribution is named
`eva4-toolkit` (the name `toolkit` on the package index belongs to an unrelated project, so a
hint naming it would install someone else's code); a source tree installed with `pip install -e`
(or run from its checkout) takes `pip install -e '<tree>[extra]'`; a tree or a wheel file
installed without `-e` takes `pip install '<tree or wheel>[extra]'`; a wheel by URL takes
`pip install 'eva4-toolkit[extra] @ <url>'`; only an install from a package index is hinted by
name alone, since that index is where the name came from.
The tree comes from pip's own record of the install (`direct_url.json`, PEP 610). The command
is `pip` when the pip on PATH is this interpreter's, else `<this python> -m pip` (a virtual
environment run without activating it: `pip` would install into another Python).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "eva4-toolkit"


def source_of(record: object) -> tuple[str, bool] | None:
    """(what pip installed from, editable?) from pip's `direct_url.json` record: a source tree, a
    wheel or archive file, or a URL; None for an install from a package index (no record)."""
    if not isinstance(record, dict) or not record.get("url"):
        return None
    url = str(record["url"])
    dir_info = record.get("dir_info")
    if url.startswith("file://"):
        return unquote(urlparse(url).path), bool(isinstance(dir_info, dict) and dir_info.get("editable"))
    return url, False  # a wheel or archive by URL: `name[extra] @ url` installs its extra


@lru_cache(maxsize=1)
def _source() -> tuple[str, bool] | None:
    """Where this toolkit was installed from (see `source_of`); a checkout run without an
    install counts as an editable tree."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        tree = Path(__file__).resolve().parents[2]  # toolkit/core/install.py -> the tree
        return (str(tree), True) if (tree / "pyproject.toml").is_file() else None
    try:
        return source_of(json.loads(dist.read_text("direct_url.json") or "null"))
    except ValueError:
        return None


def pip_command(executable: str | None = None, pip_on_path: str | None = None) -> str:
    """`pip` when the pip on PATH sits beside the interpreter (`executable`, default this one),
    else that interpreter's `python -m pip`."""
    executable = executable or sys.executable
    found = pip_on_path if pip_on_path is not None else shutil.which("pip")
    if found and Path(found).absolute().parent == Path(executable).absolute().parent:
        return "pip"
    return f"{shlex.quote(executable)} -m pip"


def hint_for(source: tuple[str, bool] | None, extra: str | None = None, pip: str = "pip") -> str:
    """The pip command that installs `extra` (None: the base install) for an install from `source`."""
    suffix = f"[{extra}]" if extra else ""
    if source is None:
        return f"{pip} install {shlex.quote(DISTRIBUTION + suffix)}"
    where, editable = source
    if "://" in where:
        return f"{pip} install {shlex.quote(f'{DISTRIBUTION}{suffix} @ {where}')}"
    return f"{pip} install {'-e ' if editable else ''}{shlex.quote(where + suffix)}"


def install_hint(extra: str | None = None) -> str:
    """'pip install ...' for the `extra` (None: the base install) in this toolkit's own install."""
    return hint_for(_source(), extra, pip_command())
