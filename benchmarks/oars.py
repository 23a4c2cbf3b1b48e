"""Speed of ``sbrt oars``: every OAR for a 512 x 512 x 160 thoracic CT (target: under 10 s).

The CT is the project's synthetic thorax painted on a clinical grid (0.98 mm pixels,
2.5 mm slices, 500 mm field of view); only the GTV is given, so everything else is found
or built: body (CT), both lungs and the airways (CT), sternum and vertebral bodies (CT),
chest wall, great vessels (contrast lumen on the CT), PBT and its 2 cm zone, the location
class, lungs minus GTV and the D2cm region. The time of :func:`build_oars` (arrays in,
masks out) is printed, then the time to turn the built masks into RTSTRUCT contours.

Run: ``.venv/bin/python benchmarks/oars.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sbrtstandards.dicom.rtstruct import Roi
from sbrtstandards.grid import Grid
from sbrtstandards.oars.build import Structure, build_oars
from sbrtstandards.phantom import anatomy as A

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    grid = Grid((-249.5, -249.5, -200.0), (0.9766, 0.9766, 2.5), (512, 512, 160))
    centre = np.array([70.0, -20.0, 40.0])
    painter = A.Painter(A.Anatomy(15.0, A.HU_TUMOUR_LUNG, centre[None]), grid)
    hu, labels, _ = painter.paint(A.BreathingState(np.zeros(3), A.HU_LUNG_EXHALE, centre))
    hu = np.rint(hu).astype(np.int16)
    gtv = labels == A.TUMOUR
    print(f"CT {grid.describe()}, GTV {gtv.sum() * grid.voxel_volume_cc:.1f} cc")
    best = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = build_oars(hu, grid, {"GTV": Structure(["GTV"], gtv)}, "GTV", gtv)
        best = min(best, time.perf_counter() - t0)
    for b in result.built:
        print(f"  {b.name:18s} {b.role:20s} {b.volume_cc:9.1f} cc")
    loc = result.location
    if loc is not None:
        print(f"  location: {loc.site_class}, {loc.distance_to_pbt_mm:.1f} mm from the PBT")
    t0 = time.perf_counter()
    for b in result.built:
        Roi.from_mask(b.name, b.mask, grid)
    contours_s = time.perf_counter() - t0
    verdict = "PASS" if best < TARGET_S else "FAIL"
    print(f"build_oars: {best:.2f} s (target < {TARGET_S:g} s): {verdict}; contours of the built ROIs: "
          f"{contours_s:.2f} s")


if __name__ == "__main__":
    main()
