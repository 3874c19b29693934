"""Where the package's data files are: `sql/`, `expectations/` and `dagster.yaml`.

They are kept at the top of the repository (the layout users know) and shipped inside the
package by the wheel (`[tool.hatch.build.targets.wheel.force-include]` in `pyproject.toml`).
An installed wheel finds them in the package folder; a checkout (an editable install) finds
them beside it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def package_data_path(name: str) -> Path:
    """`sql`, `expectations` or `dagster.yaml`: in the installed package, else in the checkout."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{name} is neither in the installed package ({_PACKAGE_DIR}) nor beside it"
    )
