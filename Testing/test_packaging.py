"""The extension's packaging: CMake lists match the disk, .s4ext and index JSON agree, pure core."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SBRTStandards"


def _cmake_listed_files() -> set[str]:
    """Every file the module CMakeLists installs, read from the CMake text itself."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    listed = set(re.findall(r"(sbrtstandards/[\w/.\-]+)", text))
    listed |= set(re.findall(r"(?<![\w/$])(SegmentEditor\w*(?:Lib/[\w/]+)?\.py)", text))
    modules = re.search(r"set\(SBRT_MODULES(.*?)\)", text, re.S)
    assert modules, "SBRT_MODULES list missing from SBRTStandards/CMakeLists.txt"
    for name in modules.group(1).split():
        listed |= {f"{name}.py", f"Resources/UI/{name}.ui", f"Resources/Icons/{name}.png"}
    return listed


def test_every_python_file_of_the_module_folder_is_listed_in_cmake() -> None:
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts
    }
    listed = _cmake_listed_files()
    assert on_disk - listed == set(), (
        "not listed in SBRTStandards/CMakeLists.txt (run tools/cmake_file_lists.py)"
    )
    missing = {f for f in listed if not (MODULE_DIR / f).exists()}
    assert missing == set(), "listed in CMakeLists.txt but missing on disk"


def test_package_data_files_are_listed_as_resources() -> None:
    data = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in (MODULE_DIR / "sbrtstandards").rglob("*")
        if p.is_file()
        and p.suffix in {".toml", ".json", ".html", ".j2", ".css", ".typed"}
        and "__pycache__" not in p.parts
    }
    assert data - _cmake_listed_files() == set()


def test_generated_cmake_blocks_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "cmake_file_lists.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _s4ext() -> dict[str, str]:
    fields = {}
    for line in (ROOT / "SlicerExtension.s4ext").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def test_s4ext_has_every_field_the_index_needs() -> None:
    fields = _s4ext()
    required = {
        "scm",
        "scmurl",
        "scmrevision",
        "depends",
        "build_subdirectory",
        "homepage",
        "contributors",
        "category",
        "iconurl",
        "status",
        "tier",
        "description",
        "screenshoturls",
        "enabled",
    }
    assert required - fields.keys() == set()
    assert all(fields[k] for k in required), "empty .s4ext fields"
    assert "SlicerRT" in fields["depends"].split()
    assert fields["category"] == "Radiotherapy"


def test_s4ext_agrees_with_index_json_and_cmake() -> None:
    fields = _s4ext()
    entry = json.loads((ROOT / "SBRTStandards.json").read_text(encoding="utf-8"))
    assert entry["category"] == fields["category"]
    assert entry["scm_url"] == fields["scmurl"]
    assert entry["scm_revision"] == fields["scmrevision"]
    assert entry["build_dependencies"] == fields["depends"].split()
    assert entry["build_subdirectory"] == fields["build_subdirectory"]
    assert str(entry["tier"]) == fields["tier"]
    assert "schema-v1.0.2" in entry["$schema"]
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_DEPENDS "SlicerRT"\)', cmake)
    desc = re.search(r'set\(EXTENSION_DESCRIPTION "(.*?)"\)', cmake)
    assert desc and desc.group(1) == fields["description"]
    contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "(.*?)"\)', cmake)
    assert contributors and contributors.group(1) == fields["contributors"]
    assert re.fullmatch(r"[^()]+ \([^()]+\)(, [^()]+ \([^()]+\))*", fields["contributors"])
    assert "find_package(Slicer REQUIRED)" in cmake and "add_subdirectory(SBRTStandards)" in cmake


def test_icon_and_license_exist() -> None:
    from PIL import Image  # matplotlib's dependency

    with Image.open(ROOT / "Resources" / "SBRTStandards.png") as icon:
        assert icon.size == (128, 128)
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]


def test_core_imports_without_slicer_qt_or_vtk() -> None:
    """The core runs where Slicer, Qt and VTK are absent (architecture: one direction of dependency)."""
    code = (
        "import sys, importlib, pkgutil\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'slicer', 'qt', 'ctk', 'vtk', 'PythonQt'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sbrtstandards\n"
        "for m in pkgutil.walk_packages(sbrtstandards.__path__, 'sbrtstandards.'):\n"
        "    if m.name.startswith('sbrtstandards.slicer'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sbrtstandards", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sbrt, version")
