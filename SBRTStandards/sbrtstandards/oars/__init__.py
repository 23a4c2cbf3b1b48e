"""Organs at risk derived by the rules of the SBRT standards, and the lung tumour location class.

- :mod:`.body`: body outline, lungs, airways, sternum and vertebral bodies found on the CT;
- :mod:`.chestwall`: chest wall (lung standard §5.2(7));
- :mod:`.vessels`: great vessels (§5.2(8)) and the contrast-enhanced lumen on the CT;
- :mod:`.location`: PBT, PBT 2 cm zone, peripheral / central / ultra-central and what it selects;
- :mod:`.rules`: the standards' contouring rules as checks;
- :mod:`.build`: :func:`build_oars` (arrays in, structures out);
- :mod:`.dicom_io`: :func:`run_oars` (CT folder + RTSTRUCT in, new RTSTRUCT + JSON out), ``sbrt oars``;
- :mod:`.geometry`: boxes, slice-wise hole filling, components and exact gaps between masks.
"""

from sbrtstandards.oars.build import Built, OarOptions, OarResult, Structure, build_oars
from sbrtstandards.oars.dicom_io import run_oars
from sbrtstandards.oars.location import Location, classify_location, fractionation_options, ultracentral_limits

__all__ = [
    "Built",
    "Location",
    "OarOptions",
    "OarResult",
    "Structure",
    "build_oars",
    "classify_location",
    "fractionation_options",
    "run_oars",
    "ultracentral_limits",
]
