"""The SBRT Contour QA Slicer module: its logic on real MRML nodes of a headless scene (slicer-core).

The module file is imported with the Slicer stand-ins of ``test_slicer_modules.py``. Expected values:
two spheres of radius r whose centres are d apart overlap in a lens, Dice = 1 - 3d/(4r) + d^3/(16 r^3)
(the lens volume over the sphere volume, in closed form); identical segmentations agree perfectly
(Dice 1, Hausdorff 0); and the module's numbers equal :func:`sbrtstandards.compare.compare_planes`
run directly on contours outlined here from masks computed independently with numpy.
"""

from __future__ import annotations

import shutil
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

slicer = pytest.importorskip("slicer", reason="needs the PyPI slicer-core package (headless MRML)")

from test_batch import tiny  # noqa: E402
from test_slicer_modules import MODULE_DIR, slicer_stubs  # noqa: E402

from sbrtstandards import compare  # noqa: E402
from sbrtstandards.batch import COLUMNS, IDENTIFIER_COLUMNS, BatchRun, read_rows  # noqa: E402
from sbrtstandards.errors import InputError  # noqa: E402
from sbrtstandards.grid import Grid  # noqa: E402
from sbrtstandards.margins import mask_to_planes  # noqa: E402
from sbrtstandards.slicer import (  # noqa: E402
    add_masks_to_segmentation,
    new_scene,
    rows_from_table_node,
    volume_node_from_image,
)

pytestmark = pytest.mark.slicer
NAME = "SBRTContourQA"
GRID = Grid((-16.0, -14.0, -14.0), (1.0, 1.0, 1.0), (33, 29, 29))
RADIUS_MM = 10.0
SHIFT_MM = 4.0


@pytest.fixture(scope="module")
def mod() -> Iterator[types.ModuleType]:
    with slicer_stubs() as loaded:
        yield loaded[NAME]


@pytest.fixture
def scene() -> Any:
    return new_scene()


@pytest.fixture
def logic(mod: types.ModuleType) -> Any:
    return mod.SBRTContourQALogic()


def ball(centre_mm: tuple[float, float, float], radius_mm: float = RADIUS_MM) -> np.ndarray:
    """Voxel centres of GRID within ``radius_mm`` of ``centre_mm`` (LPS), computed here independently."""
    z, y, x = np.meshgrid(*(GRID.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    cx, cy, cz = centre_mm
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius_mm**2


def _setup(scene: Any, reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
    volume = volume_node_from_image(scene, (np.zeros(GRID.shape), GRID), "CT")
    ref = add_masks_to_segmentation(None, scene, reference, GRID, name="Expert")
    tst = add_masks_to_segmentation(None, scene, test, GRID, name="Trainee")
    return ref, tst, volume


def _rows(table: Any) -> list[dict[str, Any]]:
    columns, rows = rows_from_table_node(table)
    return [dict(zip(columns, row)) for row in rows]


def test_module_registers_in_radiotherapy_with_help_and_five_parts(mod: types.ModuleType) -> None:
    parent = types.SimpleNamespace(path=str(MODULE_DIR / f"{NAME}.py"))
    mod.SBRTContourQA(parent)
    assert parent.title == "SBRT Contour QA"
    assert parent.categories == ["Radiotherapy"]
    assert "SBRT4DCT" in parent.dependencies and "Segmentations" in parent.dependencies
    for word in ("Dice", "HD95", "surface Dice", "Score sheet", "RTSTRUCT"):
        assert word in parent.helpText
    source = (MODULE_DIR / f"{NAME}.py").read_text(encoding="utf-8")
    parts = [f"class {NAME}(", f"class {NAME}ParameterNode:", f"class {NAME}Widget(", f"class {NAME}Logic(",
             f"class {NAME}Test("]
    positions = [source.index(p) for p in parts]
    assert positions == sorted(positions)


def test_default_tolerance_is_the_cores(mod: types.ModuleType) -> None:
    """The module repeats the core's default (to declare the parameter node before importing the core)."""
    assert mod.DEFAULT_TOLERANCE_MM == compare.DEFAULT_TOLERANCE_MM
    assert mod.SBRTContourQAParameterNode().toleranceMm == compare.DEFAULT_TOLERANCE_MM


def test_shifted_spheres_give_the_lens_dice_and_the_cores_numbers(logic, scene) -> None:
    """r = 10 mm, centres 4 mm apart: Dice = 1 - 3d/(4r) + d^3/(16 r^3) = 0.704."""
    ref_mask, test_mask = ball((-2.0, 0.0, 0.0)), ball((2.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": ref_mask}, {"GTV": test_mask})
    table = logic.compareSegmentations(ref, tst, volume, toleranceMm=2.0)
    d, r = SHIFT_MM, RADIUS_MM
    lens = 1.0 - 3.0 * d / (4.0 * r) + d**3 / (16.0 * r**3)
    (name_ref, name_test, how, agreement), = logic.lastAgreements
    assert (name_ref, name_test, how) == ("GTV", "GTV", "name")
    assert agreement.dice == pytest.approx(lens, abs=0.02)
    assert agreement.centroid_shift_mm == pytest.approx(SHIFT_MM, abs=0.1)
    assert agreement.volume_ratio == pytest.approx(1.0, abs=0.02)

    direct = compare.compare_planes(mask_to_planes(ref_mask, GRID), mask_to_planes(test_mask, GRID),
                                    tolerance_mm=2.0)
    (row,) = _rows(table)
    assert row["Reference"] == "GTV" and row["Test"] == "GTV" and row["Matched by"] == "name"
    for column, key in (("Dice", "dice"), ("Jaccard", "jaccard"), ("HD95 [mm]", "hd95_mm"), ("HD [mm]", "hd_mm"),
                        ("MSD [mm]", "msd_mm"), ("Surface Dice", "surface_dice"), ("Volume ratio", "volume_ratio"),
                        ("Centroid shift [mm]", "centroid_shift_mm")):
        assert row[column] == pytest.approx(getattr(direct, key), abs=1e-9), column
    assert row["Tolerance [mm]"] == 2.0


def test_identical_segmentations_agree_perfectly_and_the_table_is_reused(mod, logic, scene) -> None:
    sphere = ball((0.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": sphere}, {"GTV": sphere})
    p = mod.SBRTContourQAParameterNode()
    p.referenceSegmentation, p.testSegmentation, p.referenceVolume = ref, tst, volume
    first = logic.compareFromParameters(p)
    (row,) = _rows(first)
    assert row["Dice"] == pytest.approx(1.0, abs=1e-9)
    assert row["HD [mm]"] == pytest.approx(0.0, abs=1e-9)
    assert row["Surface Dice"] == pytest.approx(1.0, abs=1e-9)
    assert logic.compareFromParameters(p) is first
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


def test_structures_are_paired_by_role_and_unpaired_ones_reported(logic, scene) -> None:
    """'Cord' pairs with 'SpinalCord' (same TG-263 role); a structure without partner gets no row."""
    cord = ball((0.0, 0.0, 0.0), 4.0)
    ref, tst, volume = _setup(scene, {"SpinalCord": cord, "Heart": ball((6.0, 0.0, 0.0), 5.0)}, {"Cord": cord})
    table = logic.compareSegmentations(ref, tst, volume)
    rows = _rows(table)
    assert [(r["Reference"], r["Test"]) for r in rows] == [("SpinalCord", "Cord")]
    assert rows[0]["Dice"] == pytest.approx(1.0, abs=1e-9)
    assert logic.lastUnmatchedReference == ["Heart"] and logic.lastUnmatchedTest == []
    assert "Heart" in logic.summary()


def test_bad_inputs_are_named(logic, scene) -> None:
    sphere = ball((0.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": sphere}, {"GTV": np.zeros(GRID.shape, bool)})
    with pytest.raises(InputError, match="'Expert' is both the reference and the test"):
        logic.compareSegmentations(ref, ref, volume)
    with pytest.raises(ValueError, match="reference volume"):
        logic.compareSegmentations(ref, tst, None)
    # An empty test structure: the distance metrics are None with the reason, the row says why.
    (row,) = _rows(logic.compareSegmentations(ref, tst, volume))
    assert row["Dice"] == 0.0 and row["Test volume [cc]"] == 0.0
    assert np.isnan(row["HD [mm]"]) and "hd_mm: one structure has no surface" in row["Notes"]
    with pytest.raises(InputError, match="no reference RTSTRUCT"):
        logic.exportScoreSheet("", "trainee.dcm", "sheet.html")


# --------------------------------------------------------------------------------------------
# Batch audit (``sbrt batch`` from the module)
# --------------------------------------------------------------------------------------------

PROTOCOL = "cn-lung-sbrt"
TINY_CASES = ("siteB/c1", "siteB/c2")


def _tiny_tree(root: Path, patient: tuple[str, str] | None = None) -> Path:
    """Two header-only cases (RTSTRUCT + RTPLAN, no dose): each is a failed case ``no RTDOSE in <case>``."""
    for case in TINY_CASES:
        for name, modality in (("RS.dcm", "RTSTRUCT"), ("RP.dcm", "RTPLAN")):
            path = tiny(root / case / name, modality)
            if patient is not None:
                ds = pydicom.dcmread(path)
                ds.PatientID, ds.PatientName = patient
                ds.save_as(path)
    return root


def _table_rows(table: Any) -> tuple[list[str], list[list[Any]]]:
    columns, rows = rows_from_table_node(table)
    return columns, rows


def _csv_rows(path: Path, columns: Sequence[str]) -> list[list[str]]:
    """results.csv read with the core's own reader (csv.DictReader), cells in ``columns`` order."""
    return [[row[c] for c in columns] for row in read_rows(path)]


def _batch_node(mod: types.ModuleType, source: Path | str, out: Path, **fields: Any) -> Any:
    p = mod.SBRTContourQAParameterNode()
    p.batchSource, p.batchProtocol, p.batchOutputDirectory = str(source), PROTOCOL, str(out)
    for name, value in fields.items():
        setattr(p, name, value)
    return p


def test_default_calling_aet_is_the_cores(mod: types.ModuleType) -> None:
    from sbrtstandards.archive.connect import DEFAULT_CALLING_AET

    assert mod.DEFAULT_CALLING_AET == DEFAULT_CALLING_AET
    assert mod.SBRTContourQAParameterNode().batchCallingAet == DEFAULT_CALLING_AET
    assert mod.SBRTContourQAParameterNode().batchIncludeIdentifiers is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   ", []),
        ("StudyDate=20250101-20251231; Modality=RTPLAN", ["StudyDate=20250101-20251231", "Modality=RTPLAN"]),
        ("PatientID=SBRT*\nSeriesDescription=Plan 1\r\n", ["PatientID=SBRT*", "SeriesDescription=Plan 1"]),
        (";; StudyDate=2025\n\n ; ;Modality=RTDOSE;", ["StudyDate=2025", "Modality=RTDOSE"]),
        ("PatientName=DOE^JANE", ["PatientName=DOE^JANE"]),
    ],
)
def test_query_text_is_split_on_semicolons_and_new_lines(logic, text: str, expected: list[str]) -> None:
    assert logic.parseQueryText(text) == expected


def test_batch_of_a_folder_fills_the_table_with_the_rows_of_results_csv(mod, logic, scene, tmp_path: Path) -> None:
    root, out = _tiny_tree(tmp_path / "root"), tmp_path / "audit"
    p = _batch_node(mod, f"  {root}  ", out)
    run = logic.batchFromParameters(p, scene=scene)
    assert (run.cases, run.ran, run.skipped, run.failed, run.rows, run.source) == (2, 2, 0, 2, 2, "folder")
    assert logic.lastBatchRun is run and Path(run.results) == out / "results.csv"
    columns, rows = _table_rows(p.batchResultsTable)
    assert columns == list(COLUMNS)
    assert rows == _csv_rows(out / "results.csv", COLUMNS)
    # known answers: one error row per case, naming the case and what is missing
    assert [(r[0], r[1], r[-1]) for r in rows] == [(c, "error", f"no RTDOSE in {c}") for c in TINY_CASES]
    summary = logic.batchSummary(run)
    assert "2 cases (2 run now, 0 kept from before), 2 failed, 2 result rows" in summary
    assert "Archive" not in summary and "siteB" not in summary and "RTDOSE" not in summary

    # Run again in the same folder: refused without Resume; with it, the same table node is refilled.
    with pytest.raises(InputError, match="already holds a batch run; use --resume"):
        logic.batchFromParameters(p, scene=scene)
    p.batchResume = True
    table = p.batchResultsTable
    again = logic.batchFromParameters(p, scene=scene)
    assert p.batchResultsTable is table and scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert (again.cases, again.ran, again.failed) == (2, 2, 2)  # failed cases are run again
    assert _table_rows(table)[1] == _csv_rows(out / "results.csv", COLUMNS)


def test_identifiers_only_when_asked_and_never_in_the_summary(mod, logic, scene, tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path / "root", patient=("PID-4711", "DOE^JANE"))
    plain = logic.batchFromParameters(_batch_node(mod, root, tmp_path / "plain"), scene=scene)
    p = _batch_node(mod, root, tmp_path / "ids", batchIncludeIdentifiers=True)
    run = logic.batchFromParameters(p, scene=scene)
    columns, rows = _table_rows(p.batchResultsTable)
    assert columns == [*COLUMNS, *IDENTIFIER_COLUMNS]
    assert rows == _csv_rows(tmp_path / "ids" / "results.csv", columns)
    assert {(r[columns.index("patient_id")], r[columns.index("patient_name")]) for r in rows} == {
        ("PID-4711", "DOE^JANE")
    }
    assert "PID-4711" not in (tmp_path / "plain" / "results.csv").read_text(encoding="utf-8")
    for r in (plain, run):
        summary = logic.batchSummary(r)
        assert "PID-4711" not in summary and "DOE" not in summary


def test_a_query_on_a_folder_source_is_the_cores_error(mod, logic, scene, tmp_path: Path) -> None:
    root, out = _tiny_tree(tmp_path / "root"), tmp_path / "audit"
    p = _batch_node(mod, root, out, batchQuery="StudyDate=20250101-20251231; Modality=RTPLAN")
    with pytest.raises(InputError, match="--query applies to DICOMweb and DIMSE sources, not to a folder"):
        logic.batchFromParameters(p, scene=scene)
    assert not out.exists() and p.batchResultsTable is None
    # the calling AE title is for DIMSE only: with a folder it is not an error
    run = logic.batchFromParameters(_batch_node(mod, root, out, batchCallingAet="OTHERAET"), scene=scene)
    assert run.cases == 2


def test_archive_fields_reach_the_core_before_anything_is_sent(logic, tmp_path: Path) -> None:
    """A bad filter or AE title of a DIMSE source is refused by the core, before any connection or output."""
    out = tmp_path / "audit"
    source = "dimse://PACS@127.0.0.1:9"  # nothing listens: reaching the network would be a different error
    with pytest.raises(InputError, match="unknown key 'Bogus'"):
        logic.runBatch(source, PROTOCOL, str(out), queries=logic.parseQueryText("StudyDate=20250101-20251231; Bogus=1"))
    with pytest.raises(InputError, match="unknown key 'Bogus'"):  # one text, as typed in the field
        logic.runBatch(source, PROTOCOL, str(out), queries="Modality=RTPLAN\nBogus=1")
    with pytest.raises(InputError, match="an AE title is 1-16 characters"):
        logic.runBatch(source, PROTOCOL, str(out), callingAet="MUCH-TOO-LONG-AE-TITLE")
    with pytest.raises(InputError, match="credentials in the address are refused"):
        logic.runBatch("https://user:secret@pacs.example.org/dicom-web", PROTOCOL, str(out))
    assert not out.exists()


def test_missing_batch_inputs_are_named(logic, tmp_path: Path) -> None:
    root, out = _tiny_tree(tmp_path / "root"), tmp_path / "audit"
    with pytest.raises(InputError, match="no batch source given"):
        logic.runBatch("  ", PROTOCOL, str(out))
    with pytest.raises(InputError, match="no output folder given"):
        logic.runBatch(str(root), PROTOCOL, "")
    with pytest.raises(InputError, match="unknown protocol 'no-such-protocol'"):
        logic.runBatch(str(root), "no-such-protocol", str(out))
    assert not out.exists()


def test_a_cancelled_batch_keeps_its_finished_cases_and_resumes(mod, logic, tmp_path: Path) -> None:
    """The widget cancels by raising BatchCancelled from the progress callback; Resume then finishes."""
    root, out = _tiny_tree(tmp_path / "root"), tmp_path / "audit"

    def cancel_after_the_first_case(fraction: float, message: str) -> None:
        if any((out / "cases").glob("*.csv")):
            raise mod.BatchCancelled(message)

    with pytest.raises(mod.BatchCancelled):
        logic.runBatch(str(root), PROTOCOL, str(out), progress=cancel_after_the_first_case)
    assert len(list((out / "cases").glob("*.csv"))) == 1 and not (out / "results.csv").exists()
    run = logic.runBatch(str(root), PROTOCOL, str(out), resume=True)
    assert run.cases == 2 and [r["case"] for r in read_rows(out / "results.csv")] == list(TINY_CASES)


def test_batch_summary_of_an_archive_run_counts_and_names_nobody(logic) -> None:
    run = BatchRun(
        root="https://pacs.example.org/dicom-web", out_dir="/audit", cases=4, ran=3, skipped=1, failed=1, rows=57,
        seconds=12.34, cases_seconds=10.0, workers=0, scheduler="local", results="/audit/results.csv",
        summary_html="/audit/summary.html", peak_rss_mb=300.0,
        failures=[{"case": "1.2.826.0.1.3680043.2.1143.77", "error": "no RTDOSE in DOE^JANE"}], source="dicomweb",
        archive={"studies": 5, "studies_without_plan_or_dose": 1, "instances": 12, "fetched": 9, "from_cache": 3,
                 "bytes_fetched": 1, "retries": 0, "failed_studies": ["1.2.826.0.1.3680043.2.1143.77"],
                 "cache": "/audit/cache"},
    )
    text = logic.batchSummary(run)
    assert "4 cases (3 run now, 1 kept from before), 1 failed, 57 result rows in 12.3 s" in text
    assert "Archive: 5 studies matched, 9 RT objects fetched, 3 taken from the cache" in text
    for secret in ("DOE", "1.2.826", "pacs.example.org"):
        assert secret not in text


def test_archive_sources_install_their_client_keeping_slicers_pydicom(mod) -> None:
    assert mod.archiveRequirements("/data/cases") == []
    assert mod.archiveRequirements("C:\\data\\https_cases") == []
    assert [n for n, _ in mod.archiveRequirements(" https://pacs/dicom-web")] == ["dicomweb_client"]
    assert [n for n, _ in mod.archiveRequirements("HTTP://localhost:8042/dicom-web")] == ["dicomweb_client"]
    assert [n for n, _ in mod.archiveRequirements("DIMSE://PACS@10.0.0.7:104")] == ["pynetdicom"]
    calls: list[list[str]] = []
    mod.pipInstallKeepingPydicom(["pynetdicom>=2.0"], install=calls.append)
    assert calls == [["pynetdicom>=2.0", f"pydicom=={pydicom.__version__}"]]


def test_a_damaged_results_file_is_named(logic, scene, tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("case,kind,error\na,error\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2 has 2 cells, the header 3"):
        logic.batchResultsTableNode(str(path), scene=scene)
    with pytest.raises(InputError, match="cannot read the batch results"):
        logic.batchResultsTableNode(str(tmp_path / "missing.csv"), scene=scene)


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real synthetic lung case (planning RS, RD, RP of ``sbrt phantom``) and the two header-only cases."""
    from sbrtstandards.phantom import write_case

    truth = write_case("lung", tmp_path_factory.mktemp("phantom") / "lung", phases=2, seed=5)
    plan = Path(truth["files"]["planning_rtstruct"]).parent
    root = _tiny_tree(tmp_path_factory.mktemp("mixed"))
    (root / "siteA" / "case01").mkdir(parents=True)
    for name in ("RS_planning.dcm", "RD.dcm", "RP.dcm"):
        shutil.copy(plan / name, root / "siteA" / "case01" / name)
    return root


@pytest.mark.slow
def test_batch_with_a_real_case_cancelled_then_resumed(mod, logic, scene, mixed_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"

    def cancel_after_the_first_case(fraction: float, message: str) -> None:
        if any((out / "cases").glob("*.csv")):
            raise mod.BatchCancelled(message)

    p = _batch_node(mod, mixed_tree, out)
    with pytest.raises(mod.BatchCancelled):
        logic.batchFromParameters(p, progress=cancel_after_the_first_case, scene=scene)
    assert p.batchResultsTable is None  # no table from an unfinished run
    p.batchResume = True
    run = logic.batchFromParameters(p, scene=scene)
    # siteA/case01 (the real case, first in order) finished before the cancel and is kept
    assert (run.cases, run.ran, run.skipped, run.failed) == (3, 2, 1, 2)
    columns, rows = _table_rows(p.batchResultsTable)
    expected = _csv_rows(out / "results.csv", COLUMNS)
    assert columns == list(COLUMNS) and rows == expected and run.rows == len(expected)
    real = [dict(zip(columns, r)) for r in rows if r[0] == "siteA/case01"]
    assert real and {r["kind"] for r in real} <= {"constraint", "plan_metric"}
    assert any(r["kind"] == "constraint" and r["status"] == "pass" for r in real)
    assert [r[-1] for r in rows if r[1] == "error"] == [f"no RTDOSE in {c}" for c in TINY_CASES]
    assert f"3 cases (2 run now, 1 kept from before), 2 failed, {len(expected)} result rows" in logic.batchSummary(run)


def test_the_modules_batch_self_test_passes_headless(mod, scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """The self-test Slicer runs (Reload and Test) works on the module's own code path."""
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    case = mod.SBRTContourQATest()
    case.setUp()
    case.test_SBRTContourQA_batch_of_two_cases()
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
