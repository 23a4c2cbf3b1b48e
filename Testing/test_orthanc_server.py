"""The archive test helpers: the synthetic studies (archive_cases) and a real Orthanc (orthanc_server).

The archive tests read the written files back with pydicom. The server tests upload them to a
private Orthanc and fetch them back the two ways ``sbrt batch`` will: DICOMweb (QIDO-RS and
WADO-RS through dicomweb-client) and DIMSE (C-FIND, C-GET, C-MOVE through pynetdicom), and
check the archive's locks (basic authentication, called and calling AE titles). They need the
Debian packages orthanc and orthanc-dicomweb and are skipped without them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from archive_cases import UidMap, make_archive_cases, reuid
from orthanc_server import MISSING, OrthancServer, requires_orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

pytestmark = pytest.mark.timeout(120)

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"
PENDING = (0xFF00, 0xFF01)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return make_archive_cases(tmp_path_factory.mktemp("archive"))


def files_of(archive: dict[str, dict[str, Any]]) -> list[Path]:
    return [p for entry in archive.values() for p in entry["files"]]


def instance(archive: dict[str, dict[str, Any]], folder: str, modality: str) -> dict[str, Any]:
    (found,) = [i for i in archive[folder]["instances"] if i["modality"] == modality]
    return found


def studies_in_2025(archive: dict[str, dict[str, Any]]) -> set[str]:
    return {e["study_uid"] for e in archive.values() if e["study_date"].startswith("2025")}


# ----------------------------------------------------------------------------- archive_cases (no server)


def test_reuid_maps_every_private_uid_once_and_keeps_standard_ones() -> None:
    ds = Dataset()
    ds.SOPClassUID = RT_PLAN
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3.9"
    ds.FrameOfReferenceUID = "1.2.3.5"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ref.ReferencedSOPInstanceUID = "1.2.3.4"  # refers to the same UID as SOPInstanceUID above
    ds.ReferencedStructureSetSequence = Sequence([ref])
    ds.add_new(0x00081199, "SQ", Sequence([Dataset()]))
    ds[0x00081199].value[0].add_new(0x00081155, "UI", "1.2.3.5")
    ds.add_new(0x00200052, "UI", "1.2.3.5")
    ds.RelatedFrameOfReferenceUID = ["1.2.3.5", "1.2.3.6"]  # multi-valued UI
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.ImplementationClassUID = "1.2.3.777"
    uid_map = UidMap(seed=1, folder="x")
    reuid(ds, uid_map)
    assert ds.SOPClassUID == RT_PLAN and ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.SOPInstanceUID != "1.2.3.4" and ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.ImplementationClassUID == "1.2.3.777"  # names the software, not an object
    assert ds[0x00081199].value[0][0x00081155].value == ds.FrameOfReferenceUID != "1.2.3.5"
    assert list(ds.RelatedFrameOfReferenceUID) == [ds.FrameOfReferenceUID, uid_map("1.2.3.6")]
    assert len(uid_map.new_by_old) == 4 and len(set(uid_map.new_by_old.values())) == 4
    assert UidMap(seed=1, folder="x")("1.2.3.4") == ds.SOPInstanceUID  # deterministic: seed, folder, order
    assert UidMap(seed=1, folder="y")("1.2.3.4") != ds.SOPInstanceUID
    assert UidMap(seed=2, folder="x")("1.2.3.4") != ds.SOPInstanceUID


def test_archive_folders_are_separate_studies(archive: dict[str, dict[str, Any]]) -> None:
    assert list(archive) == ["case01", "case02_hot", "case03_ref", "case04_nodose", "ct_only"]
    assert [e["is_case"] for e in archive.values()] == [True, True, True, True, False]
    assert [e["patient_id"] for e in archive.values()] == [f"SBRT-ARCH-000{i}" for i in range(1, 6)]
    assert [e["patient_name"] for e in archive.values()] == [f"Test^Patient0{i}" for i in range(1, 6)]
    assert sorted(e["study_date"][:4] for e in archive.values()) == ["2024", "2025", "2025", "2025", "2025"]
    assert len({e["study_uid"] for e in archive.values()}) == 5
    names = {folder: sorted(p.name for p in e["files"]) for folder, e in archive.items()}
    assert names == {
        "case01": ["RD.dcm", "RP.dcm", "RS_planning.dcm"],
        "case02_hot": ["RD.dcm", "RP.dcm", "RS_planning.dcm"],
        "case03_ref": ["RD.dcm", "RP.dcm", "RS_REF.dcm", "RS_planning.dcm"],
        "case04_nodose": ["RP.dcm", "RS_planning.dcm"],
        "ct_only": ["CT_0001.dcm", "CT_0002.dcm", "CT_0003.dcm"],
    }
    seen: dict[str, str] = {}  # every identifying UID -> the folder it belongs to
    for folder, entry in archive.items():
        for path in entry["files"]:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == entry["study_uid"] and ds.PatientID == entry["patient_id"]
            assert str(ds.PatientName) == entry["patient_name"] and ds.StudyDate == entry["study_date"]
            assert ds.StudyDescription == "SBRT lung"
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                        _frame_of_reference(ds)):
                assert seen.setdefault(uid, folder) == folder, f"{uid} in {seen[uid]} and {folder}"


def _frame_of_reference(ds: Dataset) -> str:
    if "FrameOfReferenceUID" in ds:
        return str(ds.FrameOfReferenceUID)
    return str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)


def test_references_between_rs_rp_rd_follow_the_new_uids(archive: dict[str, dict[str, Any]]) -> None:
    for folder in ("case01", "case02_hot", "case03_ref"):
        path = {p.name: p for p in archive[folder]["files"]}
        rs = pydicom.dcmread(path["RS_planning.dcm"], stop_before_pixels=True)
        rp = pydicom.dcmread(path["RP.dcm"])
        rd = pydicom.dcmread(path["RD.dcm"], stop_before_pixels=True)
        assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
        assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
        assert rd.FrameOfReferenceUID == rp.FrameOfReferenceUID == _frame_of_reference(rs)
        study_ref = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
        assert study_ref.ReferencedSOPInstanceUID == rs.StudyInstanceUID
        assert len({rs.SeriesInstanceUID, rp.SeriesInstanceUID, rd.SeriesInstanceUID}) == 3
    ref = pydicom.dcmread(archive["case03_ref"]["files"][3], stop_before_pixels=True)
    rs = pydicom.dcmread(archive["case03_ref"]["files"][0], stop_before_pixels=True)
    assert _frame_of_reference(ref) == _frame_of_reference(rs) and ref.SOPInstanceUID != rs.SOPInstanceUID
    assert _contour_image_uids(ref) <= _contour_image_uids(rs)  # the same (absent) planning CT slices


def _contour_image_uids(rs: Dataset) -> set[str]:
    return {str(img.ReferencedSOPInstanceUID) for roi in rs.ROIContourSequence
            for c in roi.get("ContourSequence", []) for img in c.get("ContourImageSequence", [])}


def test_dose_scaling_and_reference_set_contents(archive: dict[str, dict[str, Any]]) -> None:
    plain = pydicom.dcmread(instance(archive, "case01", "RTDOSE")["path"])
    hot = pydicom.dcmread(instance(archive, "case02_hot", "RTDOSE")["path"])
    assert float(hot.DoseGridScaling) == pytest.approx(1.3 * float(plain.DoseGridScaling), rel=1e-9)
    assert np.array_equal(hot.pixel_array, plain.pixel_array)
    folder = {p.name: p for p in archive["case03_ref"]["files"]}
    planned = _rois(pydicom.dcmread(folder["RS_planning.dcm"]))
    reference = _rois(pydicom.dcmread(folder["RS_REF.dcm"]))
    assert sorted(reference) == ["Cord", "ITV", "PTV"]
    for name, new_name, dx_mm in (("ITV", "ITV", 1.0), ("PTV", "PTV", 2.0), ("SpinalCord", "Cord", 0.0)):
        before, after = planned[name], reference[new_name]
        assert len(before) == len(after)
        for a, b in zip(before, after):
            assert np.allclose(b - a, [dx_mm, 0.0, 0.0], atol=1e-3)


def _rois(rs: Dataset) -> dict[str, list[np.ndarray]]:
    names = {int(r.ROINumber): str(r.ROIName) for r in rs.StructureSetROISequence}
    return {names[int(rc.ReferencedROINumber)]: [np.asarray(c.ContourData, float).reshape(-1, 3)
                                                for c in rc.ContourSequence]
            for rc in rs.ROIContourSequence}


def test_ct_only_study_is_three_adjacent_slices(archive: dict[str, dict[str, Any]]) -> None:
    slices = [pydicom.dcmread(p) for p in archive["ct_only"]["files"]]
    assert {s.Modality for s in slices} == {"CT"} and len({s.SeriesInstanceUID for s in slices}) == 1
    z_mm = [float(s.ImagePositionPatient[2]) for s in slices]
    steps = np.diff(sorted(z_mm))
    assert np.allclose(steps, float(slices[0].SliceThickness), atol=1e-3)
    assert all(s.pixel_array.shape == (int(s.Rows), int(s.Columns)) for s in slices)


def test_archive_is_reused_not_rebuilt(archive: dict[str, dict[str, Any]]) -> None:
    root = archive["case01"]["files"][0].parents[1]
    before = {p: p.stat().st_mtime_ns for p in files_of(archive)}
    began = time.monotonic()
    again = make_archive_cases(root)
    assert time.monotonic() - began < 1.0 and again == archive
    assert {p: p.stat().st_mtime_ns for p in files_of(again)} == before
    with pytest.raises(FileExistsError, match="seed 6"):
        make_archive_cases(root, seed=6)  # never overwrites a tree it did not build with that seed


# ----------------------------------------------------------------------------- the server


@dataclass
class Loaded:
    server: OrthancServer
    stored: int


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, archive: dict[str, dict[str, Any]]) -> Iterator[Loaded]:
    if MISSING:
        pytest.skip("; ".join(MISSING))
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        yield Loaded(server, server.upload(files_of(archive)))


def dicomweb(server: OrthancServer, auth: tuple[str, str] | None = None) -> Any:
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.auth = auth or server.auth
    return DICOMwebClient(server.dicomweb_url, session=session)


@requires_orthanc
def test_upload_stores_every_file_once(orthanc: Loaded, archive: dict[str, dict[str, Any]],
                                       tmp_path: Path) -> None:
    import requests

    server = orthanc.server
    assert orthanc.stored == server.instance_count() == len(files_of(archive)) == 15
    assert server.upload(files_of(archive)[:2]) == 0 and server.instance_count() == 15  # AlreadyStored
    junk = tmp_path / "junk.dcm"
    junk.write_text("not DICOM")
    with pytest.raises(requests.HTTPError, match="junk.dcm"):
        server.upload([junk])


@requires_orthanc
def test_qido_studies_by_date_range_and_patient(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    client = dicomweb(orthanc.server)
    found = client.search_for_studies(search_filters={"StudyDate": "20250101-20251231"})
    assert {s["0020000D"]["Value"][0] for s in found} == studies_in_2025(archive)
    assert len(studies_in_2025(archive)) == 4
    (one,) = client.search_for_studies(search_filters={"PatientID": "SBRT-ARCH-0004"})
    assert one["0020000D"]["Value"][0] == archive["case04_nodose"]["study_uid"]
    assert sorted(one["00080061"]["Value"]) == ["RTPLAN", "RTSTRUCT"]  # ModalitiesInStudy: no dose


@requires_orthanc
def test_qido_series_modalities_and_frame_of_reference(orthanc: Loaded,
                                                       archive: dict[str, dict[str, Any]]) -> None:
    client = dicomweb(orthanc.server)
    entry = archive["case01"]
    series = client.search_for_series(entry["study_uid"], fields=["FrameOfReferenceUID"])
    by_modality = {s["00080060"]["Value"][0]: s for s in series}
    assert sorted(by_modality) == ["RTDOSE", "RTPLAN", "RTSTRUCT"]
    for modality, s in by_modality.items():
        assert s["0020000E"]["Value"][0] == instance(archive, "case01", modality)["series_uid"]
    dose = pydicom.dcmread(instance(archive, "case01", "RTDOSE")["path"], stop_before_pixels=True)
    assert by_modality["RTDOSE"]["00200052"]["Value"] == [dose.FrameOfReferenceUID]
    assert len(client.search_for_series(archive["case03_ref"]["study_uid"])) == 4  # RS_REF: its own series


@requires_orthanc
def test_qido_wildcard_sent_unencoded(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    """'*' must reach Orthanc as '*': its QIDO does not percent-decode values (see the final report)."""
    server = orthanc.server
    with server.session() as session:
        answer = session.get(f"{server.dicomweb_url}/series?SeriesDescription=SBRT*&Modality=RTPLAN",
                             headers={"Accept": "application/dicom+json"}, timeout=10)
    answer.raise_for_status()
    assert "SeriesDescription=SBRT*" in answer.url
    plans = {i["series_uid"] for e in archive.values() for i in e["instances"] if i["modality"] == "RTPLAN"}
    assert {s["0020000E"]["Value"][0] for s in answer.json()} == plans


@requires_orthanc
def test_wado_rs_returns_the_uploaded_dose(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    rd = instance(archive, "case02_hot", "RTDOSE")
    got = dicomweb(orthanc.server).retrieve_instance(archive["case02_hot"]["study_uid"], rd["series_uid"],
                                                     rd["sop_instance_uid"])
    original = pydicom.dcmread(rd["path"])
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert float(got.DoseGridScaling) == float(original.DoseGridScaling)
    assert got.pixel_array.dtype == original.pixel_array.dtype
    assert np.array_equal(got.pixel_array, original.pixel_array)


@requires_orthanc
def test_wrong_password_is_http_401(orthanc: Loaded) -> None:
    import requests

    with pytest.raises(requests.HTTPError) as error:
        dicomweb(orthanc.server, auth=(orthanc.server.user, "wrong")).search_for_studies()
    assert error.value.response.status_code == 401
    assert requests.get(f"{orthanc.server.rest_url}/system", timeout=10).status_code == 401  # no credentials


# ----------------------------------------------------------------------------- DIMSE


def _ae(server: OrthancServer, *contexts: str) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=server.scu_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for context in contexts:
        ae.add_requested_context(context)
    return ae


def c_find(server: OrthancServer, level: str, **keys: str) -> list[Dataset]:
    """Study Root C-FIND; every key is returned (empty ones are return keys)."""
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    assoc = _ae(server, STUDY_ROOT_FIND).associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert assoc.is_established
    try:
        answers, final = [], None
        for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
            if status.Status in PENDING:
                answers.append(identifier)
            else:
                final = status.Status
    finally:
        assoc.release()
    assert final == 0x0000
    return answers


@requires_orthanc
def test_c_find_at_study_series_and_image_level(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    server = orthanc.server
    studies = c_find(server, "STUDY", StudyDate="20250101-20251231", StudyInstanceUID="", PatientID="")
    assert {s.StudyInstanceUID for s in studies} == studies_in_2025(archive)
    entry = archive["case03_ref"]
    series = c_find(server, "SERIES", StudyInstanceUID=entry["study_uid"], SeriesInstanceUID="", Modality="")
    assert sorted(s.Modality for s in series) == ["RTDOSE", "RTPLAN", "RTSTRUCT", "RTSTRUCT"]
    images = c_find(server, "IMAGE", StudyInstanceUID=entry["study_uid"], SeriesInstanceUID="",
                    SOPInstanceUID="", SOPClassUID="")
    assert {(i.SOPInstanceUID, i.SOPClassUID) for i in images} == {
        (i["sop_instance_uid"], i["sop_class_uid"]) for i in entry["instances"]}


def _retrieve_keys(archive: dict[str, dict[str, Any]], folder: str, modality: str) -> Dataset:
    found = instance(archive, folder, modality)
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = archive[folder]["study_uid"]
    query.SeriesInstanceUID = found["series_uid"]
    query.SOPInstanceUID = found["sop_instance_uid"]
    return query


@requires_orthanc
def test_c_get_of_an_rtplan_needs_scp_role_selection(orthanc: Loaded,
                                                     archive: dict[str, dict[str, Any]]) -> None:
    from pynetdicom import build_role, evt

    server = orthanc.server
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    def get(roles: list[Any]) -> int | None:
        assoc = _ae(server, STUDY_ROOT_GET, RT_PLAN).associate(
            "127.0.0.1", server.dicom_port, ae_title=server.aet, ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        try:
            statuses = [s.Status for s, _ in assoc.send_c_get(_retrieve_keys(archive, "case01", "RTPLAN"),
                                                              STUDY_ROOT_GET) if s]
        finally:
            assoc.release()
        return statuses[-1] if statuses else None

    assert get([]) != 0x0000 and not received  # without the SCP role Orthanc cannot send the plan back
    assert get([build_role(RT_PLAN, scp_role=True)]) == 0x0000
    (plan,) = received
    original = pydicom.dcmread(instance(archive, "case01", "RTPLAN")["path"])
    assert plan.SOPInstanceUID == original.SOPInstanceUID
    assert plan == original  # every element, values included


@requires_orthanc
def test_c_move_sends_to_the_known_scu(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    from pynetdicom import AE, evt

    server = orthanc.server
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    storage = AE(ae_title=server.scu_aet)
    storage.add_supported_context(RT_PLAN)
    listener = storage.start_server(("127.0.0.1", server.scu_move_port), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        keys = _retrieve_keys(archive, "case02_hot", "RTPLAN")
        assoc = _ae(server, STUDY_ROOT_MOVE).associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
        assert assoc.is_established
        try:
            final = [s.Status for s, _ in assoc.send_c_move(keys, server.scu_aet, STUDY_ROOT_MOVE) if s][-1]
            unknown = [s.Status for s, _ in assoc.send_c_move(keys, "NOSUCHAE", STUDY_ROOT_MOVE) if s][-1]
        finally:
            assoc.release()
    finally:
        listener.shutdown()
    assert final == 0x0000 and received == [instance(archive, "case02_hot", "RTPLAN")["sop_instance_uid"]]
    assert unknown != 0x0000  # a destination Orthanc does not know gets nothing


@requires_orthanc
def test_wrong_called_or_unknown_calling_ae_title_is_rejected(orthanc: Loaded) -> None:
    from pynetdicom import AE

    server = orthanc.server
    wrong_called = _ae(server, VERIFICATION).associate("127.0.0.1", server.dicom_port, ae_title="NOTORTHANC")
    assert wrong_called.is_established is False and wrong_called.is_rejected
    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(VERIFICATION)
    unknown_calling = stranger.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert unknown_calling.is_established is False and unknown_calling.is_rejected
    known = _ae(server, VERIFICATION).associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert known.is_established and known.send_c_echo().Status == 0x0000
    known.release()


# ----------------------------------------------------------------------------- life cycle (last: restarts)


@requires_orthanc
def test_failed_start_raises_with_the_log(tmp_path: Path) -> None:
    """Orthanc exiting (its HTTP port taken) or running without DICOMweb is an error naming why."""
    import socket

    class Configured(OrthancServer):
        def __init__(self, root: Path, **changes: Any) -> None:
            super().__init__(root)
            self.changes = changes

        def config(self) -> dict[str, Any]:
            return {**super().config(), **self.changes}

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = Configured(tmp_path / "busy", HttpPort=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="(?s)exited with code.*HTTP server"):
            taken.start()
    assert not taken.running
    no_plugin = Configured(tmp_path / "no_plugin", Plugins=[str(tmp_path / "no-such-plugin.so")])
    with pytest.raises(RuntimeError, match="(?s)without its DICOMweb plugin.*no-such-plugin"):
        no_plugin.start()
    assert not no_plugin.running


@requires_orthanc
def test_forgotten_server_is_stopped_by_its_finalizer(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path / "forgotten")
    server.start()
    process = server._process
    assert process is not None and process.poll() is None
    del server
    gc.collect()
    assert process.poll() is not None


@requires_orthanc
def test_restart_keeps_data_and_ports(orthanc: Loaded, archive: dict[str, dict[str, Any]]) -> None:
    server = orthanc.server
    ports = (server.http_port, server.dicom_port, server.scu_move_port)
    server.restart()
    assert (server.http_port, server.dicom_port, server.scu_move_port) == ports
    assert server.instance_count() == len(files_of(archive))
    (one,) = dicomweb(server).search_for_studies(search_filters={"PatientID": "SBRT-ARCH-0001"})
    assert one["0020000D"]["Value"][0] == archive["case01"]["study_uid"]
    assert len(c_find(server, "STUDY", StudyDate="-20241231", StudyInstanceUID="")) == 1
