"""``sbrt batch`` on a real Orthanc: DICOMweb and DIMSE give the folder's results, faults, resume, privacy.

The archive holds five synthetic studies (Testing/archive_cases.py): three lung SBRT cases (one hot,
one with a reference structure set), one study without a dose, and a CT-only study that is not a
case. The same studies as folders give the reference results; the archive runs must give the same
rows with the folder names replaced by the hashed study keys.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_cases import make_archive_cases
from batch_process import kill_batch_after
from orthanc_server import OrthancServer, free_ports, requires_orthanc
from stalling_proxy import StallingProxy, TlsProxy, self_signed_certificate

from sbrtstandards.archive.address import ENV_PASSWORD, ENV_USER
from sbrtstandards.archive.cases import study_key
from sbrtstandards.archive.connect import ArchiveOptions
from sbrtstandards.batch import IDENTIFIER_COLUMNS, BatchOptions, read_rows, run_batch, without_uids
from sbrtstandards.cli.main import SUBCOMMANDS, main
from sbrtstandards.errors import InputError

pytestmark = [requires_orthanc, pytest.mark.slow]
PROTOCOL = "cn-lung-sbrt"
SCU_AET = "SBRTQA"


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SUBCOMMANDS, "batch", ("sbrtstandards.cli.batch_cmd", "batch"))


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("archive")
    return root, make_archive_cases(root)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory,
            studies: tuple[Path, dict[str, dict[str, Any]]]) -> Iterator[OrthancServer]:
    _, folders = studies
    with OrthancServer(tmp_path_factory.mktemp("orthanc"), scu_aet=SCU_AET, scu_move_port=free_ports(1)[0]) as server:
        files = [Path(f) for spec in folders.values() for f in spec["files"]]
        server.upload(files)
        assert server.instance_count() == len(files)
        yield server


@pytest.fixture
def credentials(orthanc: OrthancServer, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = orthanc.auth
    monkeypatch.setenv(ENV_USER, user)
    monkeypatch.setenv(ENV_PASSWORD, password)


@pytest.fixture(scope="module")
def folder_rows(studies: tuple[Path, dict[str, dict[str, Any]]],
                tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The reference: the folder batch, with each folder's name replaced by its study's hashed key."""
    root, folders = studies
    out = tmp_path_factory.mktemp("folder-run") / "out"
    run_batch(root, out, BatchOptions(PROTOCOL), workers=0)
    keys = {name: study_key(spec["study_uid"], False) for name, spec in folders.items()}
    rows = []
    for row in read_rows(out / "results.csv"):
        key = keys[row["case"]]
        rows.append({k: v.replace(row["case"], key) if k in ("case", "error") else v for k, v in row.items()})
    return sorted(rows, key=lambda r: r["case"])  # a stable sort: rows keep their order within a case


def _batch(source: str, out: Path, *extra: str) -> dict[str, Any]:
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", source, "--protocol", PROTOCOL, "--out", str(out), "--json", str(out) + ".json", "--quiet",
              *extra])
    assert exit_info.value.code == 0
    return json.loads(Path(str(out) + ".json").read_text())


def _secrets(orthanc: OrthancServer, folders: dict[str, dict[str, Any]]) -> list[str]:
    values = [orthanc.auth[1]]
    for spec in folders.values():
        values += [spec["patient_id"], spec["patient_name"], spec["study_uid"]]
        values += [str(spec["patient_name"]).replace("^", " ")]
    return values


def _assert_nothing_identifying(out: Path, extra_text: str, orthanc: OrthancServer,
                                folders: dict[str, dict[str, Any]]) -> None:
    texts = {"stderr/stdout": extra_text}
    for path in [*out.rglob("*"), Path(str(out) + ".json")]:
        if path.is_file() and "cache" not in path.relative_to(out.parent).parts[1:2]:
            texts[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    for where, text in texts.items():
        for secret in _secrets(orthanc, folders):
            assert secret not in text, f"{secret!r} found in {where}"


def test_dicomweb_and_dimse_give_the_folder_results(
    orthanc: OrthancServer, studies: tuple[Path, dict[str, dict[str, Any]]], folder_rows: list[dict[str, str]],
    credentials: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _, folders = studies
    web = _batch(orthanc.dicomweb_url, tmp_path / "web", "--workers", "2")
    get = _batch(orthanc.dimse_address, tmp_path / "get", "--aet", SCU_AET, "--workers", "0")
    move = _batch(orthanc.dimse_address, tmp_path / "move", "--aet", SCU_AET, "--retrieve", "move",
                  "--move-port", str(orthanc.scu_move_port), "--workers", "0")
    web_text = (tmp_path / "web" / "results.csv").read_text()
    assert (tmp_path / "get" / "results.csv").read_text() == web_text
    assert (tmp_path / "move" / "results.csv").read_text() == web_text
    assert read_rows(tmp_path / "web" / "results.csv") == folder_rows
    case_folders = [name for name, spec in folders.items() if spec["is_case"]]
    rt_instances = sum(len(folders[name]["files"]) for name in case_folders)
    for run, kind in ((web, "dicomweb"), (get, "dimse"), (move, "dimse")):
        assert run["source"] == kind and run["cases"] == len(case_folders) == 4 and run["failed"] == 1
        archive = run["archive"]
        assert archive["studies"] == len(folders) == 5 and archive["studies_without_plan_or_dose"] == 1
        assert archive["instances"] == archive["fetched"] == rt_instances and archive["from_cache"] == 0
    # only RT objects were fetched (the CT-only study and the CTs stay in the archive)
    cached = sorted(p.stem for p in (tmp_path / "web" / "cache").glob("*.dcm"))
    wanted = sorted(i["sop_instance_uid"] for name in case_folders for i in folders[name]["instances"])
    assert cached == wanted
    nodose = study_key(folders["case04_nodose"]["study_uid"], False)
    assert web["failures"] == [{"case": nodose, "error": f"no RTDOSE in {nodose}"}]
    # no password, patient ID, patient name or Study Instance UID in any output, log or message
    captured = capsys.readouterr()
    for name in ("web", "get", "move"):
        _assert_nothing_identifying(tmp_path / name, captured.out + captured.err, orthanc, folders)


def test_queries_and_identifiers(orthanc: OrthancServer, studies: tuple[Path, dict[str, dict[str, Any]]],
                                 credentials: None, tmp_path: Path) -> None:
    _, folders = studies
    run = _batch(orthanc.dicomweb_url, tmp_path / "y2025", "--workers", "0", "--query", "StudyDate=20250101-20251231",
                 "--include-identifiers")
    in_2025 = {name for name, spec in folders.items() if spec["study_date"].startswith("2025")}
    assert run["archive"]["studies"] == len(in_2025) == 4  # three cases and the CT-only study
    rows = read_rows(tmp_path / "y2025" / "results.csv")
    assert list(rows[0])[-3:] == list(IDENTIFIER_COLUMNS)
    by_uid = {spec["study_uid"]: spec for spec in folders.values()}
    assert {r["case"] for r in rows} == {folders[n]["study_uid"] for n in in_2025 if folders[n]["is_case"]}
    for row in rows:  # with --include-identifiers the case is the Study Instance UID, and the patient is named
        spec = by_uid[row["case"]]
        assert (row["patient_id"], row["patient_name"], row["study_instance_uid"]) == (
            spec["patient_id"], spec["patient_name"], spec["study_uid"])
    one = folders["case03_ref"]
    run = _batch(orthanc.dimse_address, tmp_path / "one", "--aet", SCU_AET, "--workers", "0",
                 "--query", f"PatientID={one['patient_id']}")
    assert run["cases"] == 1 and run["archive"]["studies"] == 1
    for path in (tmp_path / "one").rglob("*"):  # the patient ID typed in --query is not written anywhere
        if path.is_file() and path.parent.name != "cache":
            assert one["patient_id"] not in path.read_text(encoding="utf-8", errors="replace"), path
    # wildcards in a person name, matched on the answers (Orthanc's QIDO does not decode '*' or '^')
    run = _batch(orthanc.dicomweb_url, tmp_path / "names", "--workers", "0", "--query", "PatientName=test^patient0*")
    assert run["archive"]["studies"] == 5
    rows = read_rows(tmp_path / "one" / "results.csv")
    assert {r["case"] for r in rows} == {study_key(one["study_uid"], False)}
    assert any(r["kind"] == "compare" for r in rows)  # its reference structure set was recognised
    # a series filter that no RT series matches leaves only studies without a plan or dose
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", orthanc.dicomweb_url, "--protocol", PROTOCOL, "--out", str(tmp_path / "none"), "--quiet",
              "--workers", "0", "--query", "SeriesDescription=NO SUCH SERIES*"])
    assert exit_info.value.code == 2


def test_faults_give_one_clear_line(orthanc: OrthancServer, credentials: None, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    dead_port = free_ports(1)[0]
    cases = [
        ({ENV_PASSWORD: "wrong-password-123"}, [orthanc.dicomweb_url], "authentication refused (HTTP 401)"),
        ({ENV_USER: None, ENV_PASSWORD: None}, [orthanc.dicomweb_url], "authentication refused"),
        ({}, [f"http://127.0.0.1:{dead_port}/dicom-web", "--retries", "2"], "connection refused"),
        ({ENV_USER: None, ENV_PASSWORD: None}, [orthanc.dimse_address.replace(orthanc.aet, "WRONGAET"),
                                                "--aet", SCU_AET], "does not recognise the called AE title"),
        ({ENV_USER: None, ENV_PASSWORD: None}, [orthanc.dimse_address, "--aet", "STRANGER", "--retries", "1"],
         "calling AE title 'STRANGER'"),
        ({ENV_USER: None, ENV_PASSWORD: None},
         [f"dimse://{orthanc.aet}@127.0.0.1:{dead_port}", "--aet", SCU_AET, "--retries", "2"], "no association"),
    ]
    for number, (env, args, needle) in enumerate(cases):
        with monkeypatch.context() as m:
            for key, value in env.items():
                if value is None:
                    m.delenv(key, raising=False)
                else:
                    m.setenv(key, value)
            t0 = time.monotonic()
            with pytest.raises(SystemExit) as exit_info:
                main(["batch", args[0], "--protocol", PROTOCOL, "--out", str(tmp_path / f"o{number}"), "--quiet",
                      "--workers", "0", *args[1:]])
            assert time.monotonic() - t0 < 20  # bounded retries
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
        assert "wrong-password-123" not in err[0] and orthanc.auth[1] not in err[0]
        assert not (tmp_path / f"o{number}").exists()  # nothing written when the archive cannot be queried


def _cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Cached instance -> (size, modification time in ns): a file fetched again would change."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.glob("*.dcm")}


def _studies_to_keep(out: Path) -> int:
    """Studies recorded in DIR/studies whose cases all finished (a study with no case counts: nothing to do)."""
    finished = {read_rows(p)[0]["case"] for p in (out / "cases").glob("*.csv")
                if all(r["kind"] != "error" for r in read_rows(p))}
    ledger = [json.loads(p.read_text())["cases"] for p in (out / "studies").glob("*.json")]
    return sum(all(c in finished for c in cases) for cases in ledger)


def _rt_instances(folders: dict[str, dict[str, Any]]) -> int:
    return sum(len(spec["files"]) for spec in folders.values() if spec["is_case"])


def _assert_fetched_once(cache: Path, before: dict[str, tuple[int, int]], fetched_now: int, total: int) -> None:
    after = _cache_files(cache)
    assert {k: after[k] for k in before} == before  # nothing fetched twice: the cached files are untouched
    assert len(after) == len(before) + fetched_now == total  # and nothing left out


def test_server_stopped_midway_then_resumed(orthanc: OrthancServer, studies: tuple[Path, dict[str, dict[str, Any]]],
                                            folder_rows: list[dict[str, str]], credentials: None,
                                            tmp_path: Path) -> None:
    _, folders = studies
    out = tmp_path / "out"
    archive = ArchiveOptions(attempts=2, backoff_s=0.1, timeout_s=10)
    cache = out / "cache"

    def stop_after_first_case(fraction: float, message: str) -> None:
        if message.endswith(" done") and orthanc.running:  # the first case that ran through
            orthanc.stop()

    try:
        with pytest.raises(InputError, match="stopped answering.*--resume") as stopped:
            run_batch(orthanc.dicomweb_url, out, BatchOptions(PROTOCOL), workers=0, archive=archive,
                      progress=stop_after_first_case)
        assert "<UID>" in str(stopped.value) and without_uids(str(stopped.value)) == str(stopped.value)
    finally:
        if not orthanc.running:
            orthanc.restart()
    assert not (out / "results.csv").exists()
    kept = {p.name: p.read_text() for p in (out / "cases").glob("*.csv")}
    done = {n: t for n, t in kept.items() if ",error," not in t}
    lost = [t for t in kept.values() if "could not retrieve the study" in t]
    assert len(done) == 1 and len(lost) == 1  # one case finished, one study failed, then the run stopped
    cached_before = _cache_files(cache)
    kept = _studies_to_keep(out)
    assert kept >= 1
    run = run_batch(orthanc.dicomweb_url, out, BatchOptions(PROTOCOL), workers=0, archive=archive, resume=True)
    assert run.skipped == 1 and run.ran == 3  # the failed ones are run again
    _assert_fetched_once(cache, cached_before, run.archive["fetched"], _rt_instances(folders))
    assert run.archive["studies_kept"] == kept  # the finished studies are not asked for again
    assert read_rows(out / "results.csv") == folder_rows
    for name, text in done.items():
        assert (out / "cases" / name).read_text() == text


def test_killed_run_resumes_without_fetching_twice(orthanc: OrthancServer, folder_rows: list[dict[str, str]],
                                                   studies: tuple[Path, dict[str, dict[str, Any]]],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [orthanc.dimse_address, "--aet", SCU_AET, "--protocol", PROTOCOL, "--out", str(out), "--workers", "2",
            "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in (ENV_USER, ENV_PASSWORD)}
    killed_midway = kill_batch_after(args, out, tmp_path, env=env)
    assert killed_midway, "the run ended before it could be killed"
    assert not (out / "results.csv").exists()
    cached_before = _cache_files(out / "cache")  # whole files only (atomic renames)
    kept = _studies_to_keep(out)
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", *args, "--resume", "--json", str(tmp_path / "run.json")])
    assert exit_info.value.code == 0
    run = json.loads((tmp_path / "run.json").read_text())
    _assert_fetched_once(out / "cache", cached_before, run["archive"]["fetched"], _rt_instances(studies[1]))
    assert run["archive"]["studies_kept"] == kept
    rows = read_rows(out / "results.csv")
    assert rows == folder_rows
    per_case = collections.Counter(r["case"] for r in rows)
    assert len(per_case) == 4


def test_timeouts_midway_are_retried_and_a_study_that_hangs_fails_alone(
    orthanc: OrthancServer, studies: tuple[Path, dict[str, dict[str, Any]]], folder_rows: list[dict[str, str]],
    credentials: None, tmp_path: Path,
) -> None:
    _, folders = studies
    dose_of = {name: next(i["sop_instance_uid"] for i in spec["instances"] if i["modality"] == "RTDOSE")
               for name, spec in folders.items() if spec["is_case"] and name != "case04_nodose"}
    options = ArchiveOptions(attempts=3, backoff_s=0.1, timeout_s=3)
    with StallingProxy(orthanc.http_port) as proxy:
        url = orthanc.dicomweb_url.replace(f":{orthanc.http_port}/", f":{proxy.port}/")
        # the server hangs once in the middle of a retrieve: retried, nothing lost
        proxy.stall(dose_of["case01"], times=1)
        run = run_batch(url, tmp_path / "once", BatchOptions(PROTOCOL), workers=0, archive=options)
        # (retries >= 1: on a loaded machine another request may also time out once)
        assert proxy.stalled == 1 and run.archive["retries"] >= 1 and run.failed == 1  # (the study without dose)
        assert read_rows(tmp_path / "once" / "results.csv") == folder_rows
        # it hangs on every attempt for one study: that case fails with the reason, the others go on
        proxy.stall(dose_of["case02_hot"], times=1000)
        t0 = time.monotonic()
        run = run_batch(url, tmp_path / "always", BatchOptions(PROTOCOL), workers=0, archive=options)
        assert time.monotonic() - t0 < 60
    hot = study_key(folders["case02_hot"]["study_uid"], False)
    rows = read_rows(tmp_path / "always" / "results.csv")
    failed = [r for r in rows if r["case"] == hot]
    assert len(failed) == 1 and failed[0]["kind"] == "error"
    assert "could not retrieve the study" in failed[0]["error"] and "timed out" in failed[0]["error"]
    assert "gave up after 3 attempts" in failed[0]["error"]
    assert "RTDOSE <UID>" in failed[0]["error"] and dose_of["case02_hot"] not in failed[0]["error"]
    assert [r for r in rows if r["case"] != hot] == [r for r in folder_rows if r["case"] != hot]
    assert run.archive["failed_studies"] == [hot]


def test_https_is_verified_and_a_ca_file_is_trusted(
    orthanc: OrthancServer, studies: tuple[Path, dict[str, dict[str, Any]]], folder_rows: list[dict[str, str]],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _, folders = studies
    cert, key = self_signed_certificate(tmp_path / "tls")
    user, password = orthanc.auth
    with TlsProxy(orthanc.http_port, cert, key) as proxy:
        url = f"https://127.0.0.1:{proxy.port}/dicom-web"
        query = ("--query", f"PatientID={folders['case01']['patient_id']}", "--workers", "0")
        monkeypatch.setenv(ENV_USER, user)
        monkeypatch.setenv(ENV_PASSWORD, password)
        # a certificate the system does not trust: refused, with the way out; nothing was sent
        with pytest.raises(SystemExit) as exit_info:
            main(["batch", url, "--protocol", PROTOCOL, "--out", str(tmp_path / "refused"), "--quiet", *query])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "TLS verification failed" in err and "--ca-file" in err and password not in err
        deadline = time.monotonic() + 5
        while not proxy.handshake_failures and time.monotonic() < deadline:  # the proxy's thread sees it last
            time.sleep(0.02)
        assert proxy.handshake_failures >= 1
        # trusted with --ca-file
        run = _batch(url, tmp_path / "trusted", "--ca-file", str(cert), *query)
        assert run["cases"] == 1 and run["failed"] == 0
        # or with the private config file holding the credentials and the CA (no environment variables)
        monkeypatch.delenv(ENV_USER)
        monkeypatch.delenv(ENV_PASSWORD)
        config = tmp_path / "archive.toml"
        config.write_text(f'[[archive]]\nurl = "https://127.0.0.1:{proxy.port}"\nusername = "{user}"\n'
                          f'password = "{password}"\nca_file = "{cert}"\n')
        config.chmod(0o600)
        _batch(url, tmp_path / "config", "--archive-config", str(config), *query)
    key_one = study_key(folders["case01"]["study_uid"], False)
    want = [r for r in folder_rows if r["case"] == key_one]
    assert read_rows(tmp_path / "trusted" / "results.csv") == want
    assert read_rows(tmp_path / "config" / "results.csv") == want
    for name in ("trusted", "config"):
        settings = (tmp_path / name / "batch.json").read_text()
        assert password not in settings and user not in settings
