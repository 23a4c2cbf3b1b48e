"""``sbrt batch``: which folders are cases, the rows, failed cases, Dask, and resuming after a kill.

The slow tests build a tree of cases from one synthetic lung case (``sbrt phantom``): two
plain copies, one whose dose is scaled by 1.3 (so hot-spot and conformity constraints fail), one
with a reference structure set (``RS_REF.dcm``: ITV moved 1 mm, PTV 2 mm, the cord renamed
``Cord``), one whose ``RD.dcm`` is not DICOM and one without a dose, plus a folder holding only
an RTSTRUCT (not a case). results.csv is checked against ``sbrt check`` run on each case, then a
run is killed (SIGKILL to its process group) as soon as its first case file appears and finished
with ``--resume``.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from batch_process import kill_batch_after

from sbrtstandards.batch import (
    COLUMNS,
    BatchOptions,
    Case,
    assemble_results,
    case_done,
    case_file,
    discover_cases,
    is_reference_set,
    pick_structure_sets,
    read_rows,
    run_batch,
    without_uids,
    write_case_file,
)
from sbrtstandards.cli.main import SUBCOMMANDS, main
from sbrtstandards.dicom.common import new_dataset, save_dataset
from sbrtstandards.errors import InputError

SOP = {"RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3", "RTDOSE": "1.2.840.10008.5.1.4.1.1.481.2",
       "RTPLAN": "1.2.840.10008.5.1.4.1.1.481.5", "CT": "1.2.840.10008.5.1.4.1.1.2"}
PROTOCOL = "cn-lung-sbrt"


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SUBCOMMANDS, "batch", ("sbrtstandards.cli.batch_cmd", "batch"))


def tiny(path: Path, modality: str, label: str = "") -> Path:
    """A header-only DICOM object of ``modality`` (enough for case discovery)."""
    ds = new_dataset(SOP[modality])
    ds.Modality = modality
    if label:
        ds.StructureSetLabel = label
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_dataset(ds, path)


# ----------------------------------------------------------------------------- discovery (fast)


def test_case_discovery_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tiny(root / "a" / "plan" / "RS.dcm", "RTSTRUCT")  # plain case
    tiny(root / "a" / "plan" / "RD.dcm", "RTDOSE")
    tiny(root / "a" / "phase_00" / "RS_phase.dcm", "RTSTRUCT")  # RTSTRUCT + CT only: not a case
    tiny(root / "a" / "phase_00" / "CT1.dcm", "CT")
    tiny(root / "b" / "RTSTRUCT_series" / "1.dcm", "RTSTRUCT")  # one folder per series: the study is the case
    tiny(root / "b" / "RTDOSE_series" / "1.dcm", "RTDOSE")
    tiny(root / "b" / "RTPLAN_series" / "1.dcm", "RTPLAN")
    tiny(root / "c" / "RS.dcm", "RTSTRUCT")  # damaged export: a case that will fail
    (root / "c" / "RD.dcm").write_text("not DICOM")
    tiny(root / "d" / "RS.dcm", "RTSTRUCT")  # plan without dose: a case that will fail
    tiny(root / "d" / "RP.dcm", "RTPLAN")
    tiny(root / "d" / "replan" / "RS.dcm", "RTSTRUCT")  # a case inside a case
    tiny(root / "d" / "replan" / "RD.dcm", "RTDOSE")
    tiny(root / ".hidden" / "RS.dcm", "RTSTRUCT")
    tiny(root / ".hidden" / "RD.dcm", "RTDOSE")
    tiny(root / "out" / "RS.dcm", "RTSTRUCT")  # the output folder is never searched
    tiny(root / "out" / "RD.dcm", "RTDOSE")
    (root / "notes.txt").write_text("readme")
    cases = {c.relpath: c for c in discover_cases(root, exclude=[root / "out"])}
    assert list(cases) == ["a/plan", "b", "c", "d", "d/replan"]
    assert [Path(p).name for p in cases["b"].rtdoses] == ["1.dcm"] and len(cases["b"].rtplans) == 1
    assert [Path(p).name for p in cases["c"].unreadable] == ["RD.dcm"] and not cases["c"].rtdoses
    assert not cases["d"].rtdoses and len(cases["d"].rtstructs) == 1  # replan's files stay with replan
    assert cases["a/plan"].case_id != cases["b"].case_id and len(cases["b"].case_id) == 16


def test_reference_set_recognition_and_choice(tmp_path: Path) -> None:
    plain = tiny(tmp_path / "RS_plan.dcm", "RTSTRUCT", label="SBRT plan")
    by_name = tiny(tmp_path / "RS_REF.dcm", "RTSTRUCT", label="x")
    by_label = tiny(tmp_path / "contours.dcm", "RTSTRUCT", label="Reference")
    prefers = tiny(tmp_path / "RS_prefs.dcm", "RTSTRUCT", label="PREFS")  # 'ref' inside a word: not a reference
    assert not is_reference_set(str(plain)) and not is_reference_set(str(prefers))
    assert is_reference_set(str(by_name)) and is_reference_set(str(by_label))
    case = Case("x", str(tmp_path), rtstructs=(str(plain), str(by_name)))
    assert pick_structure_sets(case, None) == (str(plain), str(by_name))
    with pytest.raises(InputError, match="several|RTSTRUCTs"):
        pick_structure_sets(Case("x", str(tmp_path), rtstructs=(str(plain), str(prefers))), None)
    with pytest.raises(InputError, match="reference set"):
        pick_structure_sets(Case("x", str(tmp_path), rtstructs=(str(by_name),)), None)


def test_case_files_resume_and_assembly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = Case("a", "/x/a"), Case("b", "/x/b")
    row = dict.fromkeys(COLUMNS, "")
    write_case_file(out, a, [{**row, "case": "a", "kind": "constraint", "constraint_id": "r1", "value": "1.5"}])
    write_case_file(out, b, [{**row, "case": "b", "kind": "error", "error": "no RTDOSE in b"}])
    assert case_done(out, a) and not case_done(out, b)  # a failed case is run again
    assert not case_done(out, Case("c", "/x/c"))
    path = assemble_results(out, [a, b])
    rows = read_rows(path)
    assert [r["case"] for r in rows] == ["a", "b"] and list(rows[0]) == list(COLUMNS)
    with pytest.raises(InputError, match="missing result"):
        assemble_results(out, [a, b, Case("c", "/x/c")])
    case_file(out, b).write_text(case_file(out, a).read_text())  # a file holding another case's rows
    with pytest.raises(InputError, match="another case"):
        assemble_results(out, [a, b])


def test_out_folder_rules_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    tiny(root / "c1" / "RS.dcm", "RTSTRUCT")
    (root / "c1" / "RD.dcm").write_text("junk")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    for args, needle in [
        ([str(root), "--protocol", "no-such-protocol", "--out", str(tmp_path / "o1")], "unknown protocol"),
        ([str(root), "--protocol", PROTOCOL, "--out", str(busy), "--workers", "0"], "not empty"),
        ([str(tmp_path / "nope"), "--protocol", PROTOCOL, "--out", str(tmp_path / "o2")], "not a folder"),
        ([str(root), "--protocol", PROTOCOL, "--out", str(tmp_path / "o3"), "--query", "PatientID=1"],
         "for DICOMweb and DIMSE sources only"),
        (["https://auditor:s3cret@pacs/dicom-web", "--protocol", PROTOCOL, "--out", str(tmp_path / "o5")],
         "credentials in the address are refused"),
        ([str(root), "--protocol", PROTOCOL, "--out", str(tmp_path / "o4"), "--rx-gy", "50"], "together"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["batch", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert "s3cret" not in err[0]
    assert not (tmp_path / "o5").exists()
    assert (busy / "mine.txt").read_text() == "keep me"
    # in-process run: one failed case, one error row; a second run needs --resume, with the same options
    out = tmp_path / "out"
    run = run_batch(root, out, BatchOptions(PROTOCOL), workers=0)
    assert run.cases == 1 and run.failed == 1
    rows = read_rows(out / "results.csv")
    assert len(rows) == 1 and rows[0]["kind"] == "error" and "RD.dcm is not readable DICOM" in rows[0]["error"]
    with pytest.raises(InputError, match="--resume"):
        run_batch(root, out, BatchOptions(PROTOCOL), workers=0)
    with pytest.raises(InputError, match="other settings"):
        run_batch(root, out, BatchOptions(PROTOCOL, tolerance_mm=3.0), workers=0, resume=True)
    again = run_batch(root, out, BatchOptions(PROTOCOL), workers=0, resume=True)
    assert again.ran == 1 and again.skipped == 0  # the failed case is retried


def test_runs_on_an_existing_cluster_given_by_address(tmp_path: Path) -> None:
    """--scheduler: the cases go to a cluster someone else started (here: in-process workers)."""
    import logging

    from dask.distributed import LocalCluster

    root = tmp_path / "root"
    for name in ("c1", "c2", "c3"):
        tiny(root / name / "RS.dcm", "RTSTRUCT")
        tiny(root / name / "RP.dcm", "RTPLAN")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        run = run_batch(root, tmp_path / "out", BatchOptions(PROTOCOL), scheduler=cluster.scheduler_address)
        assert run.scheduler == cluster.scheduler_address and len(cluster.scheduler.workers) == 1
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert [(r["case"], r["kind"]) for r in rows] == [("c1", "error"), ("c2", "error"), ("c3", "error")]
    assert all("no RTDOSE in c" in r["error"] for r in rows)


# ----------------------------------------------------------------------------- a real run on Dask (slow)


@pytest.fixture(scope="module")
def cases_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct
    from sbrtstandards.phantom import write_case
    from sbrtstandards.structure_margin import reference_from_structure_set

    base = tmp_path_factory.mktemp("phantom") / "lung"
    truth = write_case("lung", base, phases=2, seed=5)
    plan = Path(truth["files"]["planning_rtstruct"]).parent
    root = tmp_path_factory.mktemp("cases")

    def copy(dst: Path, files: tuple[str, ...] = ("RS_planning.dcm", "RD.dcm", "RP.dcm")) -> Path:
        dst.mkdir(parents=True)
        for f in files:
            shutil.copy(plan / f, dst / f)
        return dst

    copy(root / "siteA" / "case01")
    hot = copy(root / "siteA" / "case02_hot")
    ds = pydicom.dcmread(hot / "RD.dcm")
    ds.DoseGridScaling = float(ds.DoseGridScaling) * 1.3
    ds.save_as(hot / "RD.dcm")
    ref_case = copy(root / "siteB" / "case03_ref")
    ss = read_rtstruct(plan / "RS_planning.dcm")
    rois = []
    for name, new_name, dx in (("ITV", "ITV", 1.0), ("PTV", "PTV", 2.0), ("SpinalCord", "Cord", 0.0)):
        roi = ss.roi(name)
        moved = [Contour(c.points_mm + np.array([dx, 0.0, 0.0]), c.geometric_type) for c in roi.contours]
        rois.append(Roi(0, new_name, roi.color_rgb, roi.interpreted_type, moved))
    write_rtstruct(ref_case / "RS_REF.dcm", rois, reference=reference_from_structure_set(ss), label="REF")
    broken = copy(root / "siteB" / "case04_broken", ("RS_planning.dcm", "RP.dcm"))
    (broken / "RD.dcm").write_text("this is not a DICOM file\n")
    copy(root / "siteB" / "case05_nodose", ("RS_planning.dcm", "RP.dcm"))
    copy(root / "siteB" / "phase_only", ("RS_planning.dcm",))
    return root


EXPECTED_CASES = ["siteA/case01", "siteA/case02_hot", "siteB/case03_ref", "siteB/case04_broken",
                  "siteB/case05_nodose"]


def _key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[c] for c in ("case", "kind", "constraint_id", "structure", "compared_with", "metric", "value",
                                  "limit", "status", "error"))


@pytest.mark.slow
def test_batch_on_a_two_worker_local_cluster_matches_sbrt_check(cases_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", str(cases_root), "--protocol", PROTOCOL, "--out", str(out), "--workers", "2",
              "--json", str(tmp_path / "run.json"), "--quiet"])
    assert exit_info.value.code == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["cases"] == 5 and run["failed"] == 2 and run["workers"] == 2 and run["peak_rss_mb"] > 0
    rows = read_rows(out / "results.csv")
    by_case = collections.defaultdict(list)
    for r in rows:
        by_case[r["case"]].append(r)
    assert sorted(by_case) == EXPECTED_CASES
    # failed cases: exactly one row each, naming what is wrong
    assert [r["kind"] for r in by_case["siteB/case04_broken"]] == ["error"]
    assert "RD.dcm is not readable DICOM" in by_case["siteB/case04_broken"][0]["error"]
    assert [r["kind"] for r in by_case["siteB/case05_nodose"]] == ["error"]
    assert "no RTDOSE" in by_case["siteB/case05_nodose"][0]["error"]
    # the other cases: the rows of `sbrt check` on the same files
    for case in ("siteA/case01", "siteA/case02_hot", "siteB/case03_ref"):
        folder = cases_root / case
        out_json = tmp_path / f"{case.replace('/', '_')}.json"
        with pytest.raises(SystemExit) as exit_info:
            main(["check", "--rtstruct", str(folder / "RS_planning.dcm"), "--rtdose", str(folder / "RD.dcm"),
                  "--rtplan", str(folder / "RP.dcm"), "--protocol", PROTOCOL, "--json", str(out_json), "--quiet"])
        assert exit_info.value.code == 0
        check = json.loads(out_json.read_text())
        got = collections.Counter(
            (r["constraint_id"], r["structure"], r["metric"], r["status"],
             None if r["value"] == "" else float(r["value"]))
            for r in by_case[case] if r["kind"] == "constraint")
        want = collections.Counter(
            (c["id"], c["structure"], c["metric"], c["status"], c["value"]) for c in check["constraints"])
        assert got == want
        metrics = {r["metric"]: (None if r["value"] == "" else float(r["value"]))
                   for r in by_case[case] if r["kind"] == "plan_metric"}
        assert metrics == check["plan_metrics"]
    hot = collections.Counter(r["status"] for r in by_case["siteA/case02_hot"] if r["kind"] == "constraint")
    plain = collections.Counter(r["status"] for r in by_case["siteA/case01"] if r["kind"] == "constraint")
    assert hot["fail"] > plain["fail"]
    # the reference set: agreement rows per reference structure; its 'Cord' pairs with 'SpinalCord' by role
    compare = [r for r in by_case["siteB/case03_ref"] if r["kind"] == "compare"]
    assert {(r["structure"], r["compared_with"]) for r in compare} == {
        ("ITV", "ITV"), ("PTV", "PTV"), ("Cord", "SpinalCord")}
    assert len(compare) == 3 * 8  # eight agreement metrics each
    shift = {r["structure"]: float(r["value"]) for r in compare if r["metric"] == "centroid_shift_mm"}
    assert shift["ITV"] == pytest.approx(1.0, abs=0.15) and shift["PTV"] == pytest.approx(2.0, abs=0.15)
    assert shift["Cord"] == pytest.approx(0.0, abs=0.05)
    assert not any(r["kind"] == "compare" for r in by_case["siteA/case01"])
    html = (out / "summary.html").read_text(encoding="utf-8")
    assert "Pass rates per constraint" in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_killed_batch_resumes_without_missing_or_repeated_rows(cases_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(cases_root), "--protocol", PROTOCOL, "--out", str(out), "--workers", "2", "--quiet"]
    killed_midway = kill_batch_after(args, out, tmp_path)
    finished = sorted((out / "cases").glob("*.csv"))
    assert finished, "no case finished before the deadline"
    assert killed_midway and len(finished) < len(EXPECTED_CASES)
    assert not (out / "results.csv").exists()  # only a finished run has it
    before = {p.name: p.read_text() for p in finished}
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", *args, "--resume", "--json", str(tmp_path / "run.json")])
    assert exit_info.value.code == 0
    run = json.loads((tmp_path / "run.json").read_text())
    rows = read_rows(out / "results.csv")
    assert sorted({r["case"] for r in rows}) == EXPECTED_CASES
    keys = [_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "repeated rows"
    failed_before = {n for n, text in before.items() if ",error," in text}
    kept = {n for n in before if n not in failed_before}
    assert run["skipped"] == len(kept) and run["ran"] == 5 - len(kept)
    for name in kept:  # finished cases were kept as they were
        assert (out / "cases" / name).read_text() == before[name]
    errors = [r for r in rows if r["kind"] == "error"]
    assert sorted(r["case"] for r in errors) == ["siteB/case04_broken", "siteB/case05_nodose"]
    per_case = collections.Counter(r["case"] for r in rows)
    assert per_case["siteB/case04_broken"] == 1 and per_case["siteB/case05_nodose"] == 1


def test_identifier_columns_only_when_asked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name, pid in (("c1", "PID-001"), ("c2", "PID-002")):
        for modality in ("RTSTRUCT", "RTPLAN"):
            path = tiny(root / name / f"{modality}.dcm", modality)
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName, ds.StudyInstanceUID = pid, f"Doe^{name}", f"1.2.3.{name[-1]}"
            save_dataset(ds, path)
    plain = run_batch(root, tmp_path / "plain", BatchOptions(PROTOCOL), workers=0)
    text = (tmp_path / "plain" / "results.csv").read_text()
    assert plain.cases == 2 and text.splitlines()[0].split(",") == list(COLUMNS)
    assert "PID-00" not in text and "Doe" not in text
    run_batch(root, tmp_path / "ids", BatchOptions(PROTOCOL, include_identifiers=True), workers=0)
    rows = read_rows(tmp_path / "ids" / "results.csv")
    assert [(r["case"], r["patient_id"], r["patient_name"], r["study_instance_uid"]) for r in rows] == [
        ("c1", "PID-001", "Doe^c1", "1.2.3.1"), ("c2", "PID-002", "Doe^c2", "1.2.3.2")]
    assert all("no RTDOSE" in r["error"] for r in rows)


def test_uids_are_hidden_from_archive_error_messages() -> None:
    text = "WADO-RS retrieve of RTDOSE 1.2.826.0.1.3680043.8.498.1 failed; /c/1.2.3.4.5.dcm; 127.0.0.1:8042; v1.10.1"
    assert without_uids(text) == "WADO-RS retrieve of RTDOSE <UID> failed; /c/<UID>.dcm; 127.0.0.1:8042; v1.10.1"
    case = Case("study-0123456789abcdef", "/nowhere", problem="no RTDOSE among 1.2.3.4.5 and 1.2.3.4.6",
                hide_uids=True)
    from sbrtstandards.batch import run_case

    outcome = run_case(case, BatchOptions(PROTOCOL))
    assert outcome.rows[0]["error"] == "no RTDOSE among <UID> and <UID>"
    shown = run_case(Case("1.2.3.4.9", "/nowhere", problem="bad 1.2.3.4.5"), BatchOptions(PROTOCOL))
    assert shown.rows[0]["error"] == "bad 1.2.3.4.5"  # --include-identifiers: shown as they are
