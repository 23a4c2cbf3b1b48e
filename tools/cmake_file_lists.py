"""Rewrite the generated file lists of SBRTStandards/CMakeLists.txt from the disk.

Run after adding or removing a file of the core package or a module:
``python tools/cmake_file_lists.py`` (``--check`` only reports, with exit status 1 on a difference).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "SBRTStandards"
CMAKE = MODULE_DIR / "CMakeLists.txt"
RESOURCE_SUFFIXES = {".toml", ".json", ".html", ".j2", ".css", ".typed", ".txt", ".png"}


def core_files() -> tuple[list[str], list[str]]:
    scripts, resources = [], []
    for path in sorted((MODULE_DIR / "sbrtstandards").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(MODULE_DIR).as_posix()
        if path.suffix == ".py":
            scripts.append(rel)
        elif path.suffix in RESOURCE_SUFFIXES:
            resources.append(rel)
    return scripts, resources


def module_names() -> list[str]:
    """Top-level module files: SBRT*.py with a .ui of the same name."""
    return sorted(
        p.stem for p in MODULE_DIR.glob("SBRT*.py") if (MODULE_DIR / "Resources/UI" / f"{p.stem}.ui").exists()
    )


def effect_files() -> list[str]:
    """Segment Editor effects: SegmentEditor*.py and the files of their *Lib packages."""
    files = [p for p in MODULE_DIR.glob("SegmentEditor*.py")]
    files += [
        p for lib in MODULE_DIR.glob("SegmentEditor*Lib") for p in lib.rglob("*.py") if "__pycache__" not in p.parts
    ]
    return sorted(p.relative_to(MODULE_DIR).as_posix() for p in files)


def render(text: str) -> str:
    scripts, resources = core_files()
    blocks = {
        "core scripts": scripts,
        "core resources": resources,
        "modules": module_names(),
        "effect scripts": effect_files(),
    }
    for name, items in blocks.items():
        pattern = re.compile(rf"(  # BEGIN GENERATED {name}\n).*?(  # END GENERATED {name}\n)", re.S)
        body = "".join(f"  {item}\n" for item in items)
        text, count = pattern.subn(lambda m, body=body: m.group(1) + body + m.group(2), text)
        if count != 1:
            raise SystemExit(f"{CMAKE}: block 'GENERATED {name}' not found")
    return text


def main() -> int:
    old = CMAKE.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in sys.argv:
        if new != old:
            print(f"{CMAKE} is out of date: run python tools/cmake_file_lists.py")
            return 1
        return 0
    if new != old:
        CMAKE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
