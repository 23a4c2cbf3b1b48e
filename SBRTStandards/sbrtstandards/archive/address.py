"""What ``sbrt batch`` is pointed at: the archive's address, the ``--query`` filters, the credentials.

Credentials never come from the command line (other users of the machine see it in ``ps``, and
shells keep it in their history) nor from the address (``https://user:secret@host`` is refused):
they come from the environment (``SBRT_ARCHIVE_USER`` and ``SBRT_ARCHIVE_PASSWORD``, or
``SBRT_ARCHIVE_TOKEN`` for a bearer token) or from a TOML config file that only its owner can read
(``--archive-config FILE``, ``$SBRT_ARCHIVE_CONFIG`` or ``~/.config/sbrt/archive.toml``)::

    [[archive]]
    url = "https://pacs.example.org/dicom-web"   # the entry whose url starts the address is used
    username = "physics-audit"
    password = "..."                             # or: token = "..."
    ca_file = "/etc/ssl/certs/hospital-ca.pem"   # optional: trust this CA (TLS is always verified)

Credentials are sent only over HTTPS, or over plain HTTP to this machine (loopback). A DIMSE
archive knows this tool by its calling AE title, host and port (``--aet``): no password is used.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sbrtstandards.errors import InputError

ENV_USER = "SBRT_ARCHIVE_USER"
ENV_PASSWORD = "SBRT_ARCHIVE_PASSWORD"
ENV_TOKEN = "SBRT_ARCHIVE_TOKEN"
ENV_CONFIG = "SBRT_ARCHIVE_CONFIG"
_SCHEME = re.compile(r"^(https?|dimse)://", re.IGNORECASE)
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars of the default repertoire, no '\'
_LOOPBACK = ("localhost", "127.0.0.1", "::1")

# --query keys: study-level filters (QIDO-RS study search / C-FIND STUDY level) ...
STUDY_KEYS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "AccessionNumber", "StudyInstanceUID",
              "ModalitiesInStudy")
# ... and series-level filters, applied to the RTSTRUCT, RTPLAN and RTDOSE series of each study.
SERIES_KEYS = ("SeriesDescription", "SeriesInstanceUID")
_ALIASES = {"modality": "ModalitiesInStudy"}  # Modality=RTPLAN: the studies holding an RTPLAN series
_WILDCARD_KEYS = ("PatientID", "PatientName", "StudyDescription", "AccessionNumber", "SeriesDescription")
_UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID")
_DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


def is_archive_source(text: str) -> bool:
    """True for ``http(s)://...`` (DICOMweb) and ``dimse://...`` sources; a folder otherwise."""
    return bool(_SCHEME.match(str(text)))


@dataclass(frozen=True)
class ArchiveAddress:
    """A DICOMweb base URL or a DIMSE peer (called AE title, host, port); never holds credentials."""

    kind: str  # "dicomweb" | "dimse"
    url: str  # normalised: DICOMweb base URL without a trailing '/', or dimse://AET@host:port
    host: str
    port: int
    called_aet: str = ""

    @property
    def is_loopback(self) -> bool:
        return self.host.lower() in _LOOPBACK

    @property
    def is_tls(self) -> bool:
        return self.url.lower().startswith("https://")


def parse_address(text: str) -> ArchiveAddress:
    """Parse ``http(s)://host[:port]/path`` or ``dimse://AET@host:port``; refuse embedded credentials."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise InputError(f"SOURCE {_redacted(text)}: not a valid address") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme in ("http", "https"):
        if parts.username is not None or parts.password is not None:
            raise InputError(f"SOURCE {_redacted(text)}: credentials in the address are refused (they would show "
                             f"in process lists and shell history); set {ENV_USER} and {ENV_PASSWORD}, or use "
                             "--archive-config")
        if not host:
            raise InputError(f"SOURCE {text}: no host name")
        if parts.query or parts.fragment:
            raise InputError(f"SOURCE {text}: give the DICOMweb base URL without '?' or '#' parts "
                             "(filters go in --query KEY=VALUE)")
        netloc = host if port is None else f"{_bracket(host)}:{port}"
        url = urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))
        return ArchiveAddress("dicomweb", url, host, port or (443 if scheme == "https" else 80))
    if scheme == "dimse":
        aet = parts.username or ""
        if parts.password is not None:
            raise InputError(f"SOURCE {_redacted(text)}: DIMSE addresses are dimse://AET@host:port (no password)")
        if not aet or not _AE_TITLE.match(aet) or not aet.strip():
            raise InputError(f"SOURCE {text}: give the archive's AE title (1-16 characters, no '\\'), "
                             "as dimse://AET@host:port")
        if not host or port is None:
            raise InputError(f"SOURCE {text}: give the host and the DICOM port, as dimse://AET@host:port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InputError(f"SOURCE {text}: a DIMSE address has no path; filters go in --query KEY=VALUE")
        return ArchiveAddress("dimse", f"dimse://{aet}@{_bracket(host)}:{port}", host, port, aet)
    raise InputError(f"SOURCE {text}: use a folder, http(s)://host:port/dicom-web or dimse://AET@host:port")


def check_ae_title(value: str, what: str) -> str:
    """An AE title (``--aet``): 1-16 characters of the default repertoire, no backslash."""
    if not _AE_TITLE.match(value) or not value.strip():
        raise InputError(f"{what} {value!r}: an AE title is 1-16 characters, no backslash or control characters")
    return value


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _redacted(text: str) -> str:
    """The address without what stands before '@' (it may hold a password)."""
    return re.sub(r"//[^/@]*@", "//***@", text)


# ----------------------------------------------------------------------------- --query


@dataclass(frozen=True)
class ArchiveQuery:
    """The ``--query`` filters, split into study-level and series-level DICOM attributes."""

    study: tuple[tuple[str, str], ...] = ()
    series: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """For ``batch.json`` (resume must use the same query): identifying values only as hashes."""
        return {"study": {k: _masked(k, v) for k, v in self.study},
                "series": {k: _masked(k, v) for k, v in self.series}}

    def describe(self) -> str:
        """For messages: ``StudyDate=20250101-20251231, PatientID=(given)``; no identifier is repeated."""
        parts = [f"{k}={'(given)' if k in IDENTIFYING_KEYS else v}" for k, v in (*self.study, *self.series)]
        return ", ".join(parts) or "no filter"


# Query values that identify a patient or a study: never written to an output or shown in a message.
IDENTIFYING_KEYS = ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID")


def _masked(key: str, value: str) -> str:
    if key not in IDENTIFYING_KEYS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def parse_queries(texts: Iterable[str]) -> ArchiveQuery:
    """``KEY=VALUE`` filters: PatientID, PatientName, StudyDate (``20250101-20251231``, ``-20251231``,
    ``20250101-``), StudyDescription, AccessionNumber, StudyInstanceUID, Modality (studies holding a
    series of that modality), SeriesDescription, SeriesInstanceUID. ``*`` and ``?`` are wildcards in
    the IDs, names and descriptions."""
    known = {k.lower(): k for k in (*STUDY_KEYS, *SERIES_KEYS)}
    known.update(_ALIASES)
    study: dict[str, str] = {}
    series: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InputError(f"--query {text!r}: expected KEY=VALUE, such as StudyDate=20250101-20251231")
        canonical = known.get(key.lower())
        if canonical is None:
            names = ", ".join([*STUDY_KEYS[:-1], "Modality", *SERIES_KEYS])
            raise InputError(f"--query {text!r}: unknown key {key!r}; use one of {names}")
        if ("*" in value or "?" in value) and canonical not in _WILDCARD_KEYS:
            raise InputError(f"--query {text!r}: wildcards are allowed only in {', '.join(_WILDCARD_KEYS)}")
        if canonical == "StudyDate":
            value = _date_range(text, value)
        elif canonical in _UID_KEYS and not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
            raise InputError(f"--query {canonical}=...: not a DICOM UID (digits and dots)")
        elif canonical == "ModalitiesInStudy":
            value = value.upper()
        target = series if canonical in SERIES_KEYS else study
        if canonical in target:
            raise InputError(f"--query: {canonical} is given twice")
        target[canonical] = value
    return ArchiveQuery(tuple(sorted(study.items())), tuple(sorted(series.items())))


def _date_range(text: str, value: str) -> str:
    match = _DATE_RANGE.match(value)
    if not match or not (match.group(1) or match.group(3)) or (match.group(3) and not match.group(2)):
        raise InputError(f"--query {text!r}: StudyDate is YYYYMMDD or a range YYYYMMDD-YYYYMMDD "
                         "(either end may be left open)")
    days = []
    for part in (match.group(1), match.group(3)):
        if part:
            try:
                days.append(datetime.date(int(part[:4]), int(part[4:6]), int(part[6:])))
            except ValueError:
                raise InputError(f"--query {text!r}: {part} is not a date") from None
    if len(days) == 2 and days[0] > days[1]:
        raise InputError(f"--query {text!r}: the range ends before it starts")
    return value


def matches(value: str, pattern: str) -> bool:
    """DICOM wildcard matching (``*``, ``?``; case-sensitive, as C-FIND), for filters a server ignored."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def in_date_range(date: str, value: str) -> bool:
    """True when the DICOM date ``date`` is inside the StudyDate filter ``value``."""
    if not re.fullmatch(r"\d{8}", date or ""):
        return False
    start, sep, end = value.partition("-")
    if not sep:
        return date == value
    return (not start or date >= start) and (not end or date <= end)


# ----------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """Who the tool is to the archive; ``repr`` and ``str`` never show the secret."""

    username: str = ""
    password: str = ""
    token: str = ""
    origin: str = ""  # where they came from, for messages: "environment", "/home/x/.config/sbrt/archive.toml"
    ca_file: str = ""

    def __repr__(self) -> str:
        who = f"user {self.username!r}" if self.username else ("a token" if self.token else "none")
        return f"Credentials({who} from {self.origin or 'nowhere'})"

    __str__ = __repr__

    @property
    def present(self) -> bool:
        return bool(self.username or self.token)


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sbrt" / "archive.toml"


def load_credentials(address: ArchiveAddress, config: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials for ``address``: the environment first, then the config file (see module docstring)."""
    env = os.environ if environ is None else environ
    if address.kind == "dimse":  # DIMSE peers know each other by AE title, host and port
        return Credentials()
    user, password, token = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, ""), env.get(ENV_TOKEN, "")
    if user and not password:
        raise InputError(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
    if password and not user:
        raise InputError(f"{ENV_PASSWORD} is set but {ENV_USER} is not")
    if token and user:
        raise InputError(f"set either {ENV_TOKEN} or {ENV_USER}/{ENV_PASSWORD}, not both")
    explicit = config if config is not None else env.get(ENV_CONFIG)
    path = Path(explicit).expanduser() if explicit else default_config_path(env)
    entry: dict[str, Any] = {}
    if explicit or path.exists():
        entry = _config_entry(path, address, explicit=bool(explicit))
    if user or token:
        creds = Credentials(user, password, token, "environment", str(entry.get("ca_file", "")))
    elif entry:
        creds = Credentials(str(entry.get("username", "")), str(entry.get("password", "")),
                            str(entry.get("token", "")), str(path), str(entry.get("ca_file", "")))
    else:
        creds = Credentials()
    if creds.present and not address.is_tls and not address.is_loopback:
        raise InputError(f"SOURCE {address.url}: refusing to send credentials from {creds.origin} over "
                         "unencrypted http to another machine; use the archive's https:// address")
    return creds


def _config_entry(path: Path, address: ArchiveAddress, *, explicit: bool) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"--archive-config {path}: no such file")
    if sys.platform != "win32":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(f"{path}: other users can read this credentials file (mode {stat.S_IMODE(mode):o}); "
                             f"run: chmod 600 {path}")
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11 (Slicer 5.6)
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a readable TOML file ({exc})") from None
    entries = data.get("archive", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{path}: expected [[archive]] tables")
    allowed = {"url", "username", "password", "token", "ca_file"}
    best: dict[str, Any] = {}
    for number, entry in enumerate(entries, 1):
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise InputError(f"{path}: [[archive]] #{number}: unknown key(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(allowed))}")
        url = str(entry.get("url", "")).rstrip("/")
        if not url:
            raise InputError(f"{path}: [[archive]] #{number} has no url")
        if bool(entry.get("username")) != bool(entry.get("password")):
            raise InputError(f"{path}: [[archive]] #{number} ({url}): give username and password together")
        if entry.get("token") and entry.get("username"):
            raise InputError(f"{path}: [[archive]] #{number} ({url}): give a token or a username, not both")
        if entry.get("ca_file") and not Path(str(entry["ca_file"])).expanduser().is_file():
            raise InputError(f"{path}: [[archive]] #{number} ({url}): ca_file {entry['ca_file']} does not exist")
        if _prefix_of(url, address.url) and len(url) > len(str(best.get("url", ""))):
            best = dict(entry, url=url)
    if not best and explicit:
        raise InputError(f"{path}: no [[archive]] entry whose url starts {address.url}")
    return best


def _prefix_of(prefix: str, url: str) -> bool:
    prefix, url = prefix.lower(), url.lower()
    return url == prefix or url.startswith(prefix + "/")
