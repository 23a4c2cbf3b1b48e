"""Archive sources without a server: addresses, --query filters, credentials, retries, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sbrtstandards.archive.address import (
    ENV_CONFIG,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    ArchiveQuery,
    in_date_range,
    is_archive_source,
    load_credentials,
    matches,
    parse_address,
    parse_queries,
)
from sbrtstandards.archive.cache import InstanceCache
from sbrtstandards.archive.cases import study_key
from sbrtstandards.archive.common import (
    ArchiveError,
    TransientArchiveError,
    short_reason,
    with_retries,
)
from sbrtstandards.errors import InputError

SECRET = "pa55-word-never-shown"


def test_sources_are_recognised_and_normalised() -> None:
    assert is_archive_source("https://pacs.example.org/dicom-web")
    assert is_archive_source("DIMSE://ORTHANC@10.0.0.5:104")
    assert not is_archive_source("/data/https/cases") and not is_archive_source("cases")
    web = parse_address("https://pacs.example.org:8443/dicom-web/")
    assert (web.kind, web.url, web.host, web.port, web.is_tls) == (
        "dicomweb", "https://pacs.example.org:8443/dicom-web", "pacs.example.org", 8443, True)
    assert parse_address("http://127.0.0.1/dicom-web").port == 80
    dimse = parse_address("dimse://ORTHANC@127.0.0.1:4242")
    assert (dimse.kind, dimse.called_aet, dimse.host, dimse.port, dimse.is_loopback) == (
        "dimse", "ORTHANC", "127.0.0.1", 4242, True)


@pytest.mark.parametrize("text, needle", [
    (f"https://auditor:{SECRET}@pacs/dicom-web", "credentials in the address are refused"),
    ("https:///dicom-web", "no host"),
    ("https://pacs/dicom-web?PatientID=1", "--query"),
    ("dimse://127.0.0.1:104", "AE title"),
    ("dimse://A_TITLE_LONGER_THAN_16@host:104", "AE title"),
    ("dimse://ORTHANC@host", "DICOM port"),
    (f"dimse://ORTHANC:{SECRET}@host:104", "no password"),
    ("dimse://ORTHANC@host:104/studies", "no path"),
    ("ftp://host/x", "use a folder"),
    ("https://pacs:99999/dicom-web", "not a valid address"),
])
def test_bad_addresses_are_refused_without_echoing_secrets(text: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        parse_address(text)
    assert needle in str(info.value)
    assert SECRET not in str(info.value)


def test_queries_split_into_study_and_series_filters() -> None:
    q = parse_queries(["PatientID=SBRT*", "studydate=20250101-20251231", "Modality=rtplan",
                       "SeriesDescription=*SBRT?", "AccessionNumber=A1"])
    assert q == ArchiveQuery(
        study=(("AccessionNumber", "A1"), ("ModalitiesInStudy", "RTPLAN"), ("PatientID", "SBRT*"),
               ("StudyDate", "20250101-20251231")),
        series=(("SeriesDescription", "*SBRT?"),))
    assert parse_queries(["StudyDate=-20241231"]).study == (("StudyDate", "-20241231"),)
    assert parse_queries(["StudyDate=20250101-"]).study == (("StudyDate", "20250101-"),)
    assert parse_queries([]) == ArchiveQuery()


@pytest.mark.parametrize("text, needle", [
    ("PatientId", "expected KEY=VALUE"),
    ("=x", "expected KEY=VALUE"),
    ("PatientSex=F", "unknown key 'PatientSex'"),
    ("StudyDate=2025", "YYYYMMDD"),
    ("StudyDate=20250231", "not a date"),
    ("StudyDate=20251231-20250101", "ends before it starts"),
    ("StudyDate=2025*", "wildcards are allowed only"),
])
def test_bad_queries_name_the_filter(text: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        parse_queries([text])
    assert needle in str(info.value) and text in str(info.value)


def test_identifying_query_values_are_never_repeated() -> None:
    with pytest.raises(InputError) as info:
        parse_queries(["StudyInstanceUID=1.2.840.99x"])
    assert "StudyInstanceUID" in str(info.value) and "not a DICOM UID" in str(info.value)
    assert "99x" not in str(info.value)
    with pytest.raises(InputError) as info:
        parse_queries(["PatientID=SECRET-1", "PatientID=SECRET-2"])
    assert "given twice" in str(info.value) and "SECRET" not in str(info.value)
    query = parse_queries(["PatientID=SECRET-1", "StudyDate=20250101-"])
    assert query.describe() == "PatientID=(given), StudyDate=20250101-"
    stored = query.to_json()
    assert "SECRET" not in str(stored) and stored["study"]["StudyDate"] == "20250101-"
    assert stored["study"]["PatientID"].startswith("sha256:")
    assert parse_queries(["PatientID=SECRET-2"]).to_json() != stored  # resume can still tell queries apart


def test_query_given_twice_is_refused() -> None:
    with pytest.raises(InputError, match="given twice"):
        parse_queries(["PatientID=1", "patientid=2"])


def test_client_side_matching_of_dates_and_wildcards() -> None:
    assert in_date_range("20250615", "20250101-20251231")
    assert not in_date_range("20241231", "20250101-20251231")
    assert in_date_range("20241231", "-20241231") and not in_date_range("20250101", "-20241231")
    assert in_date_range("20250101", "20250101") and not in_date_range("", "20250101-")
    assert matches("Lung SBRT 3x18", "*SBRT*") and matches("RS1", "RS?") and not matches("RS12", "RS?")
    assert matches("a.b", "a.b") and not matches("axb", "a.b")  # '.' is literal


# ----------------------------------------------------------------------------- credentials


def _env(**values: str) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}


def test_credentials_from_the_environment_never_shown(tmp_path: Path) -> None:
    address = parse_address("https://pacs.example.org/dicom-web")
    env = {ENV_USER: "auditor", ENV_PASSWORD: SECRET, ENV_CONFIG: ""}
    creds = load_credentials(address, None, {**env, "XDG_CONFIG_HOME": str(tmp_path)})
    assert (creds.username, creds.password, creds.origin) == ("auditor", SECRET, "environment")
    assert SECRET not in repr(creds) and SECRET not in str(creds) and "auditor" in repr(creds)
    token = load_credentials(address, None, {ENV_TOKEN: SECRET, "XDG_CONFIG_HOME": str(tmp_path)})
    assert token.token == SECRET and SECRET not in repr(token)
    for bad, needle in [({ENV_USER: "a"}, ENV_PASSWORD), ({ENV_PASSWORD: "p"}, ENV_USER),
                        ({ENV_USER: "a", ENV_PASSWORD: "p", ENV_TOKEN: "t"}, "not both")]:
        with pytest.raises(InputError, match=needle):
            load_credentials(address, None, {**bad, "XDG_CONFIG_HOME": str(tmp_path)})
    assert not load_credentials(address, None, {"XDG_CONFIG_HOME": str(tmp_path)}).present


def test_credentials_are_not_sent_in_clear_to_another_machine(tmp_path: Path) -> None:
    env = {ENV_USER: "auditor", ENV_PASSWORD: SECRET, "XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(InputError, match="unencrypted http") as info:
        load_credentials(parse_address("http://pacs.example.org/dicom-web"), None, env)
    assert SECRET not in str(info.value)
    assert load_credentials(parse_address("http://127.0.0.1:8042/dicom-web"), None, env).present  # loopback
    assert not load_credentials(parse_address("dimse://PACS@127.0.0.1:104"), None, env).present  # not used


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_credentials_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    address = parse_address("https://pacs.example.org/dicom-web")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "archive.toml"
    config.write_text(
        '[[archive]]\nurl = "https://pacs.example.org"\nusername = "general"\npassword = "x"\n\n'
        f'[[archive]]\nurl = "https://pacs.example.org/dicom-web"\nusername = "auditor"\npassword = "{SECRET}"\n'
        f'ca_file = "{ca}"\n\n'
        '[[archive]]\nurl = "https://other.example.org/dicom-web"\ntoken = "t"\n')
    config.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600") as info:
        load_credentials(address, config, {})
    assert SECRET not in str(info.value)
    config.chmod(0o600)
    creds = load_credentials(address, config, {})
    assert (creds.username, creds.password, creds.ca_file, creds.origin) == ("auditor", SECRET, str(ca), str(config))
    # the default location is used when present; the environment wins over it
    (tmp_path / "sbrt").mkdir()
    default = tmp_path / "sbrt" / "archive.toml"
    default.write_bytes(config.read_bytes())
    default.chmod(0o600)
    assert load_credentials(address, None, {"XDG_CONFIG_HOME": str(tmp_path)}).username == "auditor"
    env = {"XDG_CONFIG_HOME": str(tmp_path), ENV_USER: "env-user", ENV_PASSWORD: "p"}
    assert load_credentials(address, None, env).username == "env-user"
    with pytest.raises(InputError, match="no \\[\\[archive\\]\\] entry"):
        load_credentials(parse_address("https://third.example.org/dicom-web"), config, {})
    for text, needle in [('[[archive]]\nurl = "https://pacs.example.org"\nusername = "a"\n', "together"),
                         ('[[archive]]\nurl = "https://pacs.example.org"\npasword = "a"\n', "unknown key"),
                         ('[[archive]]\nusername = "a"\npassword = "b"\n', "no url"),
                         ('[[archive]\n', "not a readable TOML"),
                         ('[[archive]]\nurl = "https://pacs.example.org"\nca_file = "/no/such.pem"\n',
                          "does not exist")]:
        config.write_text(text)
        with pytest.raises(InputError, match=needle) as info:
            load_credentials(address, config, {})
        assert str(config) in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        load_credentials(address, tmp_path / "missing.toml", {})


# ----------------------------------------------------------------------------- retries, keys, cache


def test_retries_are_bounded_with_exponential_back_off() -> None:
    waits: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise TransientArchiveError("timed out")
        return "ok"

    assert with_retries(flaky, attempts=3, backoff_s=0.5, sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0] and calls["n"] == 3
    waits.clear()
    calls["n"] = -10
    with pytest.raises(TransientArchiveError, match="gave up after 4 attempts"):
        with_retries(flaky, attempts=4, backoff_s=1.0, sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0]

    def broken() -> None:
        calls["n"] += 1
        raise ArchiveError("HTTP 404")

    calls["n"] = 0
    with pytest.raises(ArchiveError, match="404"):
        with_retries(broken, attempts=5, sleep=waits.append)
    assert calls["n"] == 1  # a permanent error is not retried


def test_short_reasons_of_network_errors() -> None:
    assert short_reason(ConnectionRefusedError("[Errno 111] Connection refused")) == "connection refused"
    assert short_reason(TimeoutError("The read operation timed out")) == "timed out"
    assert short_reason(OSError("x" * 500)).startswith("OSError: x") and len(short_reason(OSError("x" * 500))) < 200


def test_case_keys_are_stable_pseudonyms() -> None:
    uid = "1.2.826.0.1.3680043.8.498.12345"
    key = study_key(uid, include_identifiers=False)
    assert key == study_key(uid, False) and key.startswith("study-") and len(key) == 22 and uid not in key
    assert study_key(uid, include_identifiers=True) == uid
    assert study_key(uid + "1", False) != key


def test_cache_is_keyed_by_uid_and_refuses_paths(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")
    assert not cache.has("1.2.3")
    assert cache.store_bytes("1.2.3", b"DICM") == 4 and cache.has("1.2.3") and cache.count() == 1
    assert cache.path("1.2.3") == tmp_path / "cache" / "1.2.3.dcm"
    for bad in ("../../etc/passwd", "1.2/3", "", "1." * 40):
        with pytest.raises(ArchiveError, match="invalid SOP Instance UID"):
            cache.path(bad)
    if os.name == "posix":
        assert (tmp_path / "cache").stat().st_mode & 0o077 == 0  # patient data: owner only
