"""docs/architecture.md names every module of refserver: a new module without a line there fails the build."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "refserver"
DOC = ROOT / "docs" / "architecture.md"


def modules() -> list[str]:
    """Every module by its path under refserver/ (`backend/events.py`); packages by their folder (`backend/`)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        names.append(relative[: -len("__init__.py")] if path.name == "__init__.py" else relative)
    return [name for name in names if name]  # refserver/__init__.py is the package itself


def test_architecture_doc_names_every_module() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [name for name in modules() if f"`{name}`" not in text and f"`refserver/{name}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_the_module_list_sees_nested_packages() -> None:
    names = modules()
    assert "protocol/core.py" in names and "features/reference/" in names
