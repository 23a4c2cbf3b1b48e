"""DVH metrics named in the AAPM TG-263 nomenclature: parse a name, evaluate it on a DVH.

Grammar (``x`` a non-negative decimal number; the unit in brackets is the result's unit):

=====================  ===================================================================
``Dx%[Gy]``            minimum dose to the hottest x % of the volume (D95%[Gy])
``Dxcc[Gy]``           minimum dose to the hottest x cc (D0.03cc[Gy], D2cc[Gy]: near-maxima)
``DCx%[Gy]``           the dose that the coldest x % of the volume receive at most
``DCxcc[Gy]``          the dose that the coldest x cc receive at most (DC700cc[Gy])
``VxGy[%]``            volume receiving at least x Gy, in % of the volume (V20Gy[%])
``VxGy[cc]``           the same in cc
``Vx%[%]``, ``Vx%[cc]``  volume receiving at least x % of the prescription (V100%[%])
``CVxGy[cc]``          complement volume: volume receiving LESS than x Gy (CV15Gy[cc])
``Mean[Gy]``           volume-weighted mean dose; ``Max[Gy]``, ``Min[Gy]``, ``Median[Gy]``
=====================  ===================================================================

Dose results may also be asked in ``[cGy]`` or ``[%]`` (percent of the prescription, e.g.
``D95%[%]``, ``Max[%]``), and dose thresholds may be given in ``cGy`` (``V2000cGy[%]``).
Metrics that need the prescription get ``None`` with a reason when none is given, and so
does a metric that asks for more volume than the structure has inside the dose grid.
Volumes in % are percentages of the part of the structure inside the dose grid (see
:mod:`sbrtstandards.dvh`: the dose outside is unknown, so it is left out, with a warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sbrtstandards.dvh import Dvh
from sbrtstandards.errors import InputError

DOSE_UNITS = ("Gy", "cGy", "%")  # % = percent of the prescription
VOLUME_UNITS = ("%", "cc")  # % = percent of the structure volume
STATISTICS = ("Mean", "Max", "Min", "Median")
EXAMPLES = "e.g. D95%[Gy], D0.03cc[Gy], V20Gy[%], V20Gy[cc], V100%[%], CV15Gy[cc], DC700cc[Gy], Mean[Gy]"

_NUMBER = r"(?P<x>\d+(?:\.\d+)?|\.\d+)"
_DV_RE = re.compile(rf"^(?P<kind>DC|CV|D|V){_NUMBER}(?P<xunit>cGy|Gy|cc|%)?(?:\[(?P<out>[^\]]*)\])?$")
_STAT_RE = re.compile(r"^(?P<kind>[A-Za-z]+)(?:\[(?P<out>[^\]]*)\])?$")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name."""

    name: str  # as given, whitespace stripped
    kind: str  # "D", "DC", "V", "CV", "Mean", "Max", "Min", "Median"
    x: float | None  # the number after D/V (None for statistics)
    x_unit: str | None  # "%", "cc" (D, DC) or "Gy", "cGy", "%" (V, CV)
    out_unit: str  # the result's unit: "Gy", "cGy", "%" or "cc"

    @property
    def is_dose(self) -> bool:
        """True when the result is a dose (D, DC and the statistics)."""
        return self.kind not in ("V", "CV")

    @property
    def needs_rx(self) -> bool:
        """True when the prescription is needed (a dose threshold or a result in % of Rx)."""
        if self.kind in ("V", "CV"):
            return self.x_unit == "%"
        return self.out_unit == "%"


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or None with the reason it could not be computed."""

    value: float | None
    reason: str | None = None


def parse_metric(name: str) -> MetricSpec:
    """Parse a TG-263 DVH metric name; :class:`InputError` names what is wrong."""
    text = str(name).strip()
    if not text:
        raise InputError(f"malformed metric '{name}': empty name; expected {EXAMPLES}")
    m = _DV_RE.match(text)
    if m:
        return _parse_dv(text, m)
    m = _STAT_RE.match(text)
    if m:
        return _parse_stat(text, m)
    raise InputError(f"malformed metric '{text}': expected {EXAMPLES}")


def _parse_dv(text: str, m: re.Match[str]) -> MetricSpec:
    kind, x_unit, out = m.group("kind"), m.group("xunit"), m.group("out")
    x = float(m.group("x"))
    is_dose = kind in ("D", "DC")
    if x_unit is None:
        example = f"{kind}{m.group('x')}%[Gy]" if is_dose else f"{kind}{m.group('x')}Gy[%]"
        what = "a volume unit (% or cc)" if is_dose else "a dose unit (Gy, cGy or % of the prescription)"
        raise InputError(
            f"malformed metric '{text}': the number needs {what}, e.g. {example}; expected {EXAMPLES}"
        )
    if out is None:
        example = f"{text}[Gy]" if is_dose else f"{text}[%]' or '{text}[cc]"
        raise InputError(f"malformed metric '{text}': missing the result unit in brackets, e.g. '{example}'")
    if is_dose:
        if x_unit not in VOLUME_UNITS:
            raise InputError(
                f"malformed metric '{text}': {kind} takes a volume (x% or xcc) and gives a dose, "
                f"e.g. {kind}95%[Gy] or {kind}2cc[Gy]; for the volume receiving a dose use V{m.group('x')}Gy[%]"
            )
        if out not in DOSE_UNITS:
            raise InputError(
                f"malformed metric '{text}': a {kind} metric is a dose: [Gy], [cGy] or [%] (of Rx)"
            )
        if x_unit == "%" and x > 100.0:
            raise InputError(f"malformed metric '{text}': a volume percentage must be between 0 and 100")
    else:
        if x_unit not in ("Gy", "cGy", "%"):
            raise InputError(
                f"malformed metric '{text}': {kind} takes a dose (xGy, xcGy or x% of Rx) and gives a "
                f"volume, e.g. {kind}20Gy[cc]; for the dose to a volume use D{m.group('x')}cc[Gy]"
            )
        if out not in VOLUME_UNITS:
            raise InputError(f"malformed metric '{text}': a {kind} metric is a volume: [%] or [cc]")
    return MetricSpec(text, kind, x, x_unit, out)


def _parse_stat(text: str, m: re.Match[str]) -> MetricSpec:
    kind, out = m.group("kind"), m.group("out")
    canonical = {s.lower(): s for s in STATISTICS}
    if kind.lower() not in canonical:
        raise InputError(f"malformed metric '{text}': unknown metric '{kind}'; expected {EXAMPLES}")
    if out is None:
        raise InputError(f"malformed metric '{text}': missing the result unit in brackets, e.g. '{kind}[Gy]'")
    if out not in DOSE_UNITS:
        raise InputError(f"malformed metric '{text}': {kind} is a dose: [Gy], [cGy] or [%] (of Rx)")
    return MetricSpec(text, canonical[kind.lower()], None, None, out)


def _threshold_gy(spec: MetricSpec, rx_gy: float | None) -> float:
    assert spec.x is not None
    if spec.x_unit == "Gy":
        return spec.x
    if spec.x_unit == "cGy":
        return spec.x / 100.0
    assert rx_gy is not None
    return spec.x / 100.0 * rx_gy


def evaluate(metric: str | MetricSpec, dvh: Dvh, *, rx_gy: float | None = None) -> MetricValue:
    """The value of ``metric`` on ``dvh`` (see the module docstring for each kind)."""
    spec = metric if isinstance(metric, MetricSpec) else parse_metric(metric)
    if spec.needs_rx and (rx_gy is None or rx_gy <= 0):
        return MetricValue(None, "needs the prescription dose (--rx-gy)")
    if dvh.n_samples == 0:
        return MetricValue(None, f"ROI '{dvh.name}' has no volume inside the dose grid")
    if spec.is_dose:
        dose = _dose_value(spec, dvh)
        if isinstance(dose, str):
            return MetricValue(None, dose)
        return MetricValue(_convert_dose(dose, spec.out_unit, rx_gy))
    threshold = _threshold_gy(spec, rx_gy)
    vol = dvh.volume_at_dose_cc(threshold) if spec.kind == "V" else dvh.volume_below_dose_cc(threshold)
    if spec.out_unit == "cc":
        return MetricValue(vol)
    return MetricValue(100.0 * vol / dvh.volume_inside_cc)


def _dose_value(spec: MetricSpec, dvh: Dvh) -> float | str:
    """The dose in Gy, or a reason string when the metric does not exist for this structure."""
    if spec.kind == "Mean":
        return float(dvh.mean_gy)  # type: ignore[arg-type]
    if spec.kind == "Max":
        return float(dvh.max_gy)  # type: ignore[arg-type]
    if spec.kind == "Min":
        return float(dvh.min_gy)  # type: ignore[arg-type]
    if spec.kind == "Median":
        return dvh.dose_at_volume_percent(50.0)
    assert spec.x is not None
    inside = dvh.volume_inside_cc
    if spec.x_unit == "cc" and spec.x > inside * (1.0 + 1e-9):
        where = " inside the dose grid" if dvh.volume_outside_cc > 0 else ""
        return f"ROI '{dvh.name}' has {inside:.4g} cc{where}, less than {spec.x:g} cc"
    vol_cc = spec.x if spec.x_unit == "cc" else inside * spec.x / 100.0
    vol_cc = min(vol_cc, inside)
    if spec.kind == "D":
        return dvh.dose_at_volume_cc(vol_cc)
    return dvh.cold_dose_at_volume_cc(vol_cc)


def _convert_dose(dose_gy: float, unit: str, rx_gy: float | None) -> float:
    if unit == "Gy":
        return dose_gy
    if unit == "cGy":
        return dose_gy * 100.0
    assert rx_gy is not None
    return 100.0 * dose_gy / rx_gy


def evaluate_many(
    metrics: Iterable[str | MetricSpec], dvh: Dvh, *, rx_gy: float | None = None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Values by metric name, and the reasons of the ``None`` ones."""
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for metric in metrics:
        spec = metric if isinstance(metric, MetricSpec) else parse_metric(metric)
        result = evaluate(spec, dvh, rx_gy=rx_gy)
        values[spec.name] = result.value
        if result.reason:
            reasons[spec.name] = result.reason
    return values, reasons
