"""The synthetic patient: analytic organs, their labels, CT numbers and breathing motion.

One adult torso (supine, head first, LPS mm: +x = patient's left, +y = posterior,
+z = superior) serves both sites; the lung case images the thorax, the liver case the
upper abdomen. The origin is near the middle of the thorax: the carina is at z = +30,
the domes of the diaphragm at end-exhale at z = -20 (right) and -35 (left).

Organs are signed-distance shapes (:mod:`.shapes`) painted in order onto an air
background; a later organ overwrites an earlier one, so every voxel carries exactly one
label and structures never overlap (except where one contains another by definition,
e.g. the spinal canal contains the cord). The CT number of a voxel is blended with a
partial-volume ramp one voxel wide, so a threshold half-way between two tissues finds
the organ surface (a voxel belongs to an organ when its centre is inside).

Breathing moves the diaphragm and everything below it rigidly (liver, stomach, spleen
by the full diaphragm displacement, kidneys, duodenum and bowel by a fraction of it, the
heart by 40 %) and changes the lung density; the spine, cord, ribs, airways and great
vessels do not move. Lung parenchyma gets small vessels radiating from each hilum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sbrtstandards.grid import Grid
from sbrtstandards.phantom import shapes
from sbrtstandards.phantom.shapes import Box, Tube

# ------------------------------------------------------------------------------ labels

AIR, COUCH, FAT, MUSCLE = 0, 1, 2, 3
LUNG_L, LUNG_R, MEDIASTINUM, HEART = 4, 5, 6, 7
AORTA, PULMONARY, SVC, IVC = 8, 9, 10, 11
TRACHEA, BRONCHUS, ESOPHAGUS = 12, 13, 14
DIAPHRAGM, ABDOMEN_FAT, LIVER, STOMACH, SPLEEN = 15, 16, 17, 18, 19
KIDNEY_L, KIDNEY_R, DUODENUM, BOWEL_SMALL, BOWEL_LARGE = 20, 21, 22, 23, 24
VERTEBRAL_BODY, DISC, VERTEBRAL_ARCH, RIB, STERNUM = 25, 26, 27, 28, 29
SPINAL_CANAL, SPINAL_CORD, TUMOUR = 30, 31, 32

LABEL_NAMES: dict[int, str] = {
    AIR: "air",
    COUCH: "couch",
    FAT: "subcutaneous fat",
    MUSCLE: "muscle",
    LUNG_L: "left lung",
    LUNG_R: "right lung",
    MEDIASTINUM: "mediastinal fat",
    HEART: "heart",
    AORTA: "aorta",
    PULMONARY: "pulmonary trunk and arteries",
    SVC: "superior vena cava",
    IVC: "inferior vena cava",
    TRACHEA: "trachea",
    BRONCHUS: "bronchi",
    ESOPHAGUS: "oesophagus",
    DIAPHRAGM: "diaphragm",
    ABDOMEN_FAT: "intra-abdominal fat",
    LIVER: "liver",
    STOMACH: "stomach",
    SPLEEN: "spleen",
    KIDNEY_L: "left kidney",
    KIDNEY_R: "right kidney",
    DUODENUM: "duodenum",
    BOWEL_SMALL: "small bowel",
    BOWEL_LARGE: "large bowel",
    VERTEBRAL_BODY: "vertebral bodies",
    DISC: "intervertebral discs",
    VERTEBRAL_ARCH: "vertebral arches and processes",
    RIB: "ribs",
    STERNUM: "sternum",
    SPINAL_CANAL: "spinal canal (CSF)",
    SPINAL_CORD: "spinal cord",
    TUMOUR: "tumour",
}
BONE_LABELS = (VERTEBRAL_BODY, VERTEBRAL_ARCH, RIB, STERNUM)

# ------------------------------------------------------------------------- CT numbers (HU)

HU_AIR = -1000.0
HU_FAT = -100.0
HU_MEDIASTINAL_FAT = -80.0
HU_ABDOMINAL_FAT = -90.0
HU_MUSCLE = 50.0
HU_BLOOD = 40.0
HU_CONTRAST = 260.0  # aorta and pulmonary arteries, arterial-phase contrast
HU_VENOUS = 90.0  # venae cavae, mixed contrast
HU_SOFT = 40.0
HU_LIVER = 60.0
HU_SPLEEN = 50.0
HU_KIDNEY_CORTEX = 150.0
HU_KIDNEY_MEDULLA = 70.0
HU_FLUID = 15.0
HU_BOWEL_CONTENT = 0.0
HU_CSF = 15.0
HU_CORD = 35.0
HU_CORTICAL = 800.0
HU_TRABECULAR = 220.0
HU_ARCH = 450.0
HU_DISC = 90.0
HU_COUCH = 150.0
HU_LUNG_EXHALE = -830.0  # lung parenchyma is denser at end-exhale...
HU_LUNG_INHALE = -870.0  # ...than at end-inhale
HU_TUMOUR_LUNG = 35.0
HU_TUMOUR_LIVER = 25.0  # hypodense to liver, as in the portal-venous phase

# ------------------------------------------------------------------------- key geometry

BODY_CENTRE = (0.0, 0.0)
BODY_SEMI = (165.0, 115.0)
BODY_BACK_Y = 105.0  # the back is flattened on the couch
FAT_MM = 12.0
MUSCLE_SEMI = (BODY_SEMI[0] - FAT_MM, BODY_SEMI[1] - FAT_MM)
MUSCLE_BACK_Y = BODY_BACK_Y - FAT_MM
CAVITY_CENTRE = (0.0, -3.0)
CAVITY_SEMI = (138.0, 88.0)  # inner surface of the chest and abdominal wall
COUCH_Y = (109.0, 115.0)

CARINA_Z = 30.0
LUNG_ENVELOPE_R = ((-78.0, -3.0, 18.0), (68.0, 90.0, 135.0))  # centre, semi-axes: apex at z = 153
LUNG_ENVELOPE_L = ((78.0, -3.0, 18.0), (68.0, 90.0, 135.0))

LIVER_CENTRE = (-55.0, 0.0, -100.0)
LIVER_SEMI = (85.0, 80.0, 75.0)  # dome at z = -25; the diaphragm adds 5 mm above it
DIAPHRAGM_MM = 5.0
DOME_L_CENTRE = (60.0, 0.0, -115.0)
DOME_L_SEMI = (90.0, 90.0, 80.0)  # left dome at z = -35
LIVER_BOTTOM_Z = -185.0

VB_CENTRE = (0.0, 40.0)
VB_SEMI = (20.0, 16.0)
CANAL_CENTRE = (0.0, 67.0)
CANAL_SEMI = (10.0, 8.0)
CORD_SEMI = (5.0, 4.0)
CORD_BOTTOM_Z = -200.0  # conus medullaris (L1-L2)
ARCH_SEMI = (17.0, 14.0)
VERTEBRA_PERIOD_MM = 27.0
DISC_MM = 5.0

RIB_TOP_Z = 140.0
RIB_STEP_MM = 24.0
RIB_DROP_MM = 40.0  # the anterior end of a rib is this much lower than its head
RIB_OFFSET_MM = 5.0  # rib axis outside the cavity surface
RIB_HALF_RADIAL_MM = 4.0
RIB_HALF_HEIGHT_MM = 6.0
CORTEX_MM = 1.5

STERNUM_CENTRE = (0.0, -96.0)
STERNUM_SEMI = (17.0, 6.0)
STERNUM_Z = (-40.0, 125.0)

# Airways: (points, outer radii); lumen radius = outer - wall.
AIRWAY_WALL_MM = 2.0
TRACHEA_TUBE = Tube(((0.0, -20.0, 175.0), (0.0, -8.0, CARINA_Z)), (10.0, 10.0))
BRONCHI: dict[str, Tube] = {
    "main_r": Tube(((0.0, -8.0, CARINA_Z), (-24.0, -6.0, 14.0)), (8.0, 8.0)),
    "main_l": Tube(((0.0, -8.0, CARINA_Z), (36.0, -4.0, 8.0)), (7.5, 7.5)),
    "upper_r": Tube(((-24.0, -6.0, 14.0), (-45.0, -8.0, 16.0)), (5.5, 5.0)),
    "intermedius": Tube(((-24.0, -6.0, 14.0), (-30.0, -4.0, -8.0)), (6.5, 6.0)),
    "middle_r": Tube(((-30.0, -4.0, -8.0), (-44.0, -22.0, -18.0)), (4.5, 4.5)),
    "lower_r": Tube(((-30.0, -4.0, -8.0), (-38.0, 4.0, -30.0)), (5.5, 5.0)),
    "upper_l": Tube(((36.0, -4.0, 8.0), (50.0, -14.0, 16.0)), (5.5, 5.0)),
    "lingula": Tube(((44.0, -9.0, 12.0), (56.0, -28.0, 2.0)), (4.5, 4.0)),
    "lower_l": Tube(((36.0, -4.0, 8.0), (44.0, 4.0, -20.0)), (5.5, 5.0)),
}
PBT_TRACHEA_MM = 20.0  # the proximal bronchial tree includes the distal 2 cm of the trachea

AORTA_TUBE = Tube(
    (
        (-8.0, -48.0, 0.0),
        (-8.0, -48.0, 50.0),
        (5.0, -42.0, 68.0),
        (25.0, -22.0, 76.0),
        (30.0, 10.0, 68.0),
        (30.0, 22.0, 55.0),
        (30.0, 22.0, -20.0),
        (20.0, 18.0, -60.0),
        (8.0, 12.0, -130.0),
        (5.0, 12.0, -260.0),
    ),
    (15.0, 15.0, 14.0, 13.0, 12.5, 12.0, 12.0, 11.5, 10.5, 10.0),
)
PULMONARY_TUBES = (
    Tube(((30.0, -62.0, -2.0), (32.0, -48.0, 22.0)), (13.0, 13.0)),  # trunk
    Tube(((32.0, -48.0, 22.0), (42.0, -30.0, 32.0), (55.0, -8.0, 34.0), (66.0, 8.0, 28.0)), (10.0,) * 4),  # left
    Tube(((32.0, -48.0, 22.0), (5.0, -30.0, 18.0), (-25.0, -28.0, 15.0), (-50.0, -22.0, 12.0)), (10.0,) * 4),
)
SVC_TUBE = Tube(((-32.0, -32.0, 110.0), (-32.0, -32.0, 20.0)), (10.0, 10.0))
IVC_TUBE = Tube(((-22.0, 12.0, -260.0), (-22.0, 10.0, -70.0), (-12.0, -5.0, -35.0)), (11.0, 11.0, 11.0))
ESOPHAGUS_TUBE = Tube(
    ((4.0, 14.0, 175.0), (4.0, 12.0, CARINA_Z), (8.0, 8.0, -20.0), (25.0, -8.0, -55.0)), (8.0, 8.0, 8.0, 8.0)
)

HEART_CENTRE = (15.0, -32.0, -8.0)
HEART_SEMI = (60.0, 45.0, 42.0)
STOMACH_CENTRE = (62.0, -15.0, -95.0)
STOMACH_SEMI = (40.0, 38.0, 50.0)
ANTRUM_TUBE = Tube(((40.0, -30.0, -110.0), (-10.0, -40.0, -120.0)), (16.0, 12.0))
SPLEEN_CENTRE = (95.0, 45.0, -95.0)
SPLEEN_SEMI = (25.0, 38.0, 50.0)
KIDNEY_R_CENTRE = (-72.0, 50.0, -160.0)
KIDNEY_L_CENTRE = (72.0, 50.0, -145.0)
KIDNEY_SEMI = (28.0, 22.0, 55.0)
DUODENUM_TUBE = Tube(
    (
        (-10.0, -40.0, -120.0),
        (-40.0, -25.0, -128.0),
        (-48.0, 0.0, -145.0),
        (-45.0, 5.0, -185.0),
        (-10.0, -10.0, -205.0),
        (25.0, -5.0, -195.0),
        (35.0, -5.0, -175.0),
    ),
    (11.0,) * 7,
)
COLON_TUBE = Tube(
    (
        (-95.0, -20.0, -270.0),
        (-95.0, -25.0, -190.0),
        (-60.0, -55.0, -180.0),
        (0.0, -62.0, -185.0),
        (60.0, -55.0, -175.0),
        (95.0, -30.0, -150.0),
        (100.0, -5.0, -200.0),
        (100.0, 0.0, -270.0),
    ),
    (20.0,) * 8,
)
SMALL_BOWEL_TUBE = Tube(
    (
        (-50.0, -50.0, -205.0),
        (40.0, -55.0, -208.0),
        (45.0, -35.0, -218.0),
        (-45.0, -38.0, -222.0),
        (-50.0, -55.0, -234.0),
        (40.0, -58.0, -240.0),
        (45.0, -35.0, -252.0),
        (-45.0, -40.0, -258.0),
    ),
    (11.0,) * 8,
)

# Fraction of the diaphragm's breathing displacement that each moving organ follows.
MOTION_FRACTION = {
    "diaphragm": 1.0,
    "liver": 1.0,
    "stomach": 0.8,
    "spleen": 0.8,
    "kidneys": 0.5,
    "duodenum": 0.5,
    "bowel": 0.4,
    "heart": 0.4,
}

# --------------------------------------------------------------------------- the model


@dataclass
class BreathingState:
    """What differs between two phases: organ displacement, lung density, tumour position."""

    diaphragm_mm: np.ndarray  # displacement (LPS mm) of the diaphragm and the liver
    lung_hu: float
    tumour_centre_mm: np.ndarray | None


@dataclass
class Layer:
    """One organ (or tissue) painted onto the image.

    ``sdf(x, y, z)`` is its signed distance at rest (end-exhale); ``motion`` the fraction
    of the diaphragm displacement it follows (0 = static, evaluated once and cached);
    ``hu`` a constant, a function of the breathing state (lung density) or, with
    ``hu_field``, a function of position (gas levels). ``label`` None paints CT numbers
    only (lung vessels, airway lumens keep their organ's label).
    """

    name: str
    label: int | None
    hu: float | Callable[[BreathingState], float]
    sdf: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None
    bbox: Box | None
    motion: float = 0.0
    hu_field: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    sparse: Callable[[Grid, float], tuple[np.ndarray, np.ndarray]] | None = None  # custom evaluation
    base: bool = False  # painted once into the static background


def _ellipsoid_box(centre: tuple[float, float, float], semi: tuple[float, float, float]) -> Box:
    return (
        (centre[0] - semi[0], centre[1] - semi[1], centre[2] - semi[2]),
        (centre[0] + semi[0], centre[1] + semi[1], centre[2] + semi[2]),
    )


def _body_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(shapes.ellipse_xy(x, y, BODY_CENTRE, BODY_SEMI), y - BODY_BACK_Y)


def _muscle_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(shapes.ellipse_xy(x, y, BODY_CENTRE, MUSCLE_SEMI), y - MUSCLE_BACK_Y)


def _cavity_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return shapes.ellipse_xy(x, y, CAVITY_CENTRE, CAVITY_SEMI)


def _cap_height(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float, float], semi: tuple[float, float, float]
) -> np.ndarray:
    """Height of the upper surface of an ellipsoid over (x, y); -inf outside its footprint."""
    q = 1.0 - ((x - centre[0]) / semi[0]) ** 2 - ((y - centre[1]) / semi[1]) ** 2
    return np.where(q > 0, centre[2] + semi[2] * np.sqrt(np.clip(q, 0.0, None)), -np.inf).astype(np.float32)


DOME_R_SEMI = tuple(s + DIAPHRAGM_MM for s in LIVER_SEMI)


def dome_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (z, mm) of the upper surface of the diaphragm over (x, y), at end-exhale."""
    right = _cap_height(x, y, LIVER_CENTRE, DOME_R_SEMI)  # type: ignore[arg-type]
    left = _cap_height(x, y, DOME_L_CENTRE, DOME_L_SEMI)
    return np.maximum(right, left)


def _below_dome(x: np.ndarray, y: np.ndarray, z: np.ndarray, depth_mm: float) -> np.ndarray:
    h = dome_height(x, y) - depth_mm
    sd = np.where(np.isfinite(h), z - h, shapes.FAR_MM)
    return np.maximum(sd.astype(np.float32), _cavity_sdf(x, y))


def _vertebral_body_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray, shrink_mm: float = 0.0) -> np.ndarray:
    """Vertebral bodies: elliptic cylinders cut by the discs (period 27 mm, discs 5 mm)."""
    semi = (VB_SEMI[0] - shrink_mm, VB_SEMI[1] - shrink_mm)
    phase = np.mod(z, VERTEBRA_PERIOD_MM)  # disc centred on multiples of the period
    half_body = (VERTEBRA_PERIOD_MM - DISC_MM) / 2.0 - shrink_mm
    sd_z = np.abs(phase - VERTEBRA_PERIOD_MM / 2.0) - half_body
    return np.maximum(shapes.ellipse_xy(x, y, VB_CENTRE, semi), sd_z.astype(np.float32))


def _arch_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Neural arch (ring around the canal), spinous and transverse processes; continuous in z."""
    ring = np.maximum(
        shapes.ellipse_xy(x, y, CANAL_CENTRE, ARCH_SEMI), -shapes.ellipse_xy(x, y, CANAL_CENTRE, CANAL_SEMI)
    )
    zz = np.zeros_like(z)
    spinous = shapes.box(x, y, zz, (-4.0, 75.0, -1.0), (4.0, 92.0, 1.0))
    transverse = np.minimum(
        shapes.box(x, y, zz, (12.0, 57.0, -1.0), (32.0, 67.0, 1.0)),
        shapes.box(x, y, zz, (-32.0, 57.0, -1.0), (-12.0, 67.0, 1.0)),
    )
    return np.minimum(np.minimum(ring, spinous), transverse) + 0.0 * z


def _sternum_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray, shrink_mm: float = 0.0) -> np.ndarray:
    semi = (STERNUM_SEMI[0] - shrink_mm, STERNUM_SEMI[1] - shrink_mm)
    return np.maximum(
        shapes.ellipse_xy(x, y, STERNUM_CENTRE, semi),
        shapes.slab(z, STERNUM_Z[0] + shrink_mm, STERNUM_Z[1] - shrink_mm),
    )


def _rib_ranges() -> list[tuple[float, float, float]]:
    """(head z, start angle, end angle) of each of the 12 rib pairs; angle 0 = back, pi = front."""
    ribs = []
    for n in range(12):
        if n < 7:
            end = 2.55  # true ribs reach the costal cartilages near the sternum
        elif n < 10:
            end = 2.25
        else:
            end = 1.45  # floating ribs
        ribs.append((RIB_TOP_Z - RIB_STEP_MM * n, 0.32, end))
    return ribs


def _rib_sparse(grid: Grid, width_mm: float, shrink_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Ribs: in-plane band around the chest wall, then the rib heights slice by slice."""
    xs = grid.axis_coords_mm(0).astype(np.float32)
    ys = grid.axis_coords_mm(1).astype(np.float32)
    zs = grid.axis_coords_mm(2).astype(np.float32)
    x = xs[None, :]
    y = ys[:, None]
    u = x - CAVITY_CENTRE[0]
    v = y - CAVITY_CENTRE[1]
    q = np.sqrt((u / CAVITY_SEMI[0]) ** 2 + (v / CAVITY_SEMI[1]) ** 2)
    reach = np.sqrt(u * u + v * v) / np.maximum(q, 1e-6)  # centre-to-wall distance along the ray
    radial = (q - 1.0) * reach - RIB_OFFSET_MM
    band = np.abs(radial) < RIB_HALF_RADIAL_MM + 2 * width_mm
    jj, ii = np.nonzero(band)
    radial = radial[jj, ii]
    angle = np.arctan2(np.abs(u[0, ii]), v[jj, 0])  # 0 at the back, pi at the front
    reach = reach[jj, ii]
    drop = RIB_DROP_MM * (1.0 - np.cos(angle)) / 2.0
    ribs = _rib_ranges()
    heads = np.array([r[0] for r in ribs])
    idx_all: list[np.ndarray] = []
    frac_all: list[np.ndarray] = []
    a_r = RIB_HALF_RADIAL_MM - shrink_mm
    a_z = RIB_HALF_HEIGHT_MM - shrink_mm
    nj, ni = grid.shape[1], grid.shape[2]
    for k, z in enumerate(zs):
        # nearest rib at this angle: its axis is at head - drop
        n = np.clip(np.rint((RIB_TOP_Z - (z + drop)) / RIB_STEP_MM), 0, len(ribs) - 1).astype(int)
        dz = z - (heads[n] - drop)
        start = np.array([r[1] for r in ribs])[n]
        end = np.array([r[2] for r in ribs])[n]
        cross = (np.sqrt((radial / a_r) ** 2 + (dz / a_z) ** 2) - 1.0) * a_r
        ends = np.maximum(start - angle, angle - end) * reach
        sd = np.maximum(cross, ends)
        f = shapes.pv_fraction(sd, width_mm)
        keep = f > 0
        if keep.any():
            idx_all.append(k * nj * ni + jj[keep] * ni + ii[keep])
            frac_all.append(f[keep])
    if not idx_all:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(idx_all).astype(np.int64), np.concatenate(frac_all)


def _lung_vessels() -> list[Tube]:
    """Pulmonary vessels (< 1 cm) radiating from each hilum; fixed geometry, not seeded."""
    rng = np.random.default_rng(20240607)
    tubes: list[Tube] = []
    for hilum, sign in (((-42.0, -14.0, 8.0), -1.0), ((45.0, -14.0, 10.0), 1.0)):
        for _ in range(14):
            # directions spread laterally, up/down and front/back, never towards the midline
            az = rng.uniform(-1.1, 1.1)
            el = rng.uniform(-0.9, 0.9)
            d = np.array([sign * math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
            length = rng.uniform(60.0, 100.0)
            p0 = np.asarray(hilum)
            p1 = p0 + d * length * 0.55
            bend = d + rng.normal(0.0, 0.35, 3)
            bend /= np.linalg.norm(bend)
            p2 = p1 + bend * length * 0.45
            tubes.append(Tube((tuple(p0), tuple(p1), tuple(p2)), (3.5, 2.2, 1.0)))  # type: ignore[arg-type]
    return tubes


def _segment_point_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    t = float(np.clip(np.dot(p - a, d) / max(float(np.dot(d, d)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * d)))


def distance_to_tube_mm(point: np.ndarray, spec: Tube) -> float:
    """Distance from a point to the surface of a tube (negative inside)."""
    best = math.inf
    for a, b, ra, rb in spec.segments():
        d = b - a
        t = float(np.clip(np.dot(point - a, d) / max(float(np.dot(d, d)), 1e-12), 0.0, 1.0))
        dist = float(np.linalg.norm(point - (a + t * d))) - (ra + (rb - ra) * t)
        best = min(best, dist)
    return best


@dataclass
class Anatomy:
    """The ordered layers of the synthetic patient and how to paint them for a breathing state."""

    tumour_radius_mm: float
    tumour_hu: float
    tumour_path_mm: np.ndarray  # (N, 3) phase centres, to keep lung vessels away from the tumour
    layers: list[Layer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = build_layers(self.tumour_path_mm, self.tumour_radius_mm)


def _keep_away(tubes: list[Tube], path: np.ndarray, clearance_mm: float) -> list[Tube]:
    """Drop vessels that pass within ``clearance_mm`` of the tumour's trajectory."""
    kept = []
    for t in tubes:
        near = min(_segment_point_distance(p, a, b) - max(ra, rb) for a, b, ra, rb in t.segments() for p in path)
        if near > clearance_mm:
            kept.append(t)
    return kept


def build_layers(tumour_path_mm: np.ndarray, tumour_radius_mm: float) -> list[Layer]:
    """Every organ in painting order (later layers overwrite earlier ones)."""
    inf = 1.0e4
    everywhere: Box = ((-inf, -inf, -inf), (inf, inf, inf))
    layers: list[Layer] = [
        Layer("couch", COUCH, HU_COUCH, lambda x, y, z: shapes.slab(y, *COUCH_Y) + 0 * x + 0 * z, None, base=True),
        Layer("body", FAT, HU_FAT, lambda x, y, z: _body_sdf(x, y) + 0 * z, None, base=True),
        Layer("muscle", MUSCLE, HU_MUSCLE, lambda x, y, z: _muscle_sdf(x, y) + 0 * z, None, base=True),
    ]

    def lung_hu(state: BreathingState) -> float:
        return state.lung_hu

    for name, label, (centre, semi) in (
        ("lung_r", LUNG_R, LUNG_ENVELOPE_R),
        ("lung_l", LUNG_L, LUNG_ENVELOPE_L),
    ):
        layers.append(
            Layer(
                name,
                label,
                lung_hu,
                lambda x, y, z, c=centre, s=semi: np.maximum(shapes.ellipsoid(x, y, z, c, s), _cavity_sdf(x, y)),
                _ellipsoid_box(centre, semi),
            )
        )
    vessels = _keep_away(_lung_vessels(), tumour_path_mm, tumour_radius_mm + 6.0)
    for n, t in enumerate(vessels):
        envelope = LUNG_ENVELOPE_R if t.points[0][0] < 0 else LUNG_ENVELOPE_L
        layers.append(
            Layer(
                f"lung_vessel_{n}",
                None,
                HU_BLOOD,
                lambda x, y, z, t=t, e=envelope: np.maximum(shapes.tube(x, y, z, t), shapes.ellipsoid(x, y, z, *e)),
                t.bbox(),
            )
        )
    layers += [
        Layer(
            "mediastinum",
            MEDIASTINUM,
            HU_MEDIASTINAL_FAT,
            lambda x, y, z: (
                np.minimum(
                    shapes.ellipse_xy(x, y, (0.0, -12.0), (28.0, 78.0)),
                    shapes.box(x, y, 0 * z, (-26.0, 0.0, -1.0), (26.0, 80.0, 1.0)),
                )
                + 0 * z
            ),
            ((-28.0, -90.0, -inf), (28.0, 80.0, inf)),
        ),
        Layer(
            "heart",
            HEART,
            HU_SOFT,
            lambda x, y, z: shapes.ellipsoid(x, y, z, HEART_CENTRE, HEART_SEMI),
            _ellipsoid_box(HEART_CENTRE, HEART_SEMI),
            motion=MOTION_FRACTION["heart"],
        ),
    ]
    layers += _abdomen_layers()
    layers += _vessel_airway_layers()
    layers += _bone_layers(everywhere)
    return layers


def _abdomen_layers() -> list[Layer]:
    inf = 1.0e4
    below: Box = ((-CAVITY_SEMI[0], -95.0, -inf), (CAVITY_SEMI[0], 90.0, 0.0))  # the diaphragm only descends
    m = MOTION_FRACTION

    def stomach_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        body = shapes.ellipsoid(x, y, z, STOMACH_CENTRE, STOMACH_SEMI)
        return np.minimum(body, shapes.tube(x, y, z, ANTRUM_TUBE))

    def stomach_content(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        # supine: gas rises to the anterior (-y) part of the stomach
        gas = (y < STOMACH_CENTRE[1] - 22.0) & (z > STOMACH_CENTRE[2] - 20.0)
        return np.where(gas, HU_AIR, HU_FLUID).astype(np.float32) + 0 * x

    def colon_content(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        axis_y = shapes.tube_axis_y(x, y, z, COLON_TUBE)
        return np.where(y < axis_y - 4.0, HU_AIR, HU_BOWEL_CONTENT).astype(np.float32)

    def clip_cavity(
        f: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        return lambda x, y, z: np.maximum(f(x, y, z), _cavity_sdf(x, y))

    liver_box = _ellipsoid_box(LIVER_CENTRE, LIVER_SEMI)
    return [
        Layer("diaphragm", DIAPHRAGM, HU_MUSCLE, lambda x, y, z: _below_dome(x, y, z, 0.0), below, motion=1.0),
        Layer(
            "abdominal_fat",
            ABDOMEN_FAT,
            HU_ABDOMINAL_FAT,
            lambda x, y, z: _below_dome(x, y, z, DIAPHRAGM_MM),
            below,
            motion=1.0,
        ),
        Layer(
            "liver",
            LIVER,
            HU_LIVER,
            lambda x, y, z: np.maximum(
                np.maximum(shapes.ellipsoid(x, y, z, LIVER_CENTRE, LIVER_SEMI), _cavity_sdf(x, y)),
                LIVER_BOTTOM_Z - z,
            ),
            liver_box,
            motion=m["liver"],
        ),
        Layer(
            "stomach_wall",
            STOMACH,
            HU_SOFT,
            clip_cavity(stomach_sdf),
            _ellipsoid_box(STOMACH_CENTRE, STOMACH_SEMI),
            motion=m["stomach"],
        ),
        Layer(
            "stomach_content",
            STOMACH,
            HU_FLUID,
            clip_cavity(lambda x, y, z: stomach_sdf(x, y, z) + 3.0),
            _ellipsoid_box(STOMACH_CENTRE, STOMACH_SEMI),
            motion=m["stomach"],
            hu_field=stomach_content,
        ),
        Layer(
            "antrum",
            STOMACH,
            HU_FLUID,
            lambda x, y, z: shapes.tube(x, y, z, ANTRUM_TUBE, grow_mm=-3.0),
            ANTRUM_TUBE.bbox(),
            motion=m["stomach"],
        ),
        Layer(
            "spleen",
            SPLEEN,
            HU_SPLEEN,
            clip_cavity(lambda x, y, z: shapes.ellipsoid(x, y, z, SPLEEN_CENTRE, SPLEEN_SEMI)),
            _ellipsoid_box(SPLEEN_CENTRE, SPLEEN_SEMI),
            motion=m["spleen"],
        ),
        *[
            Layer(
                f"{name}_{part}",
                label,
                hu,
                lambda x, y, z, c=centre, g=grow: shapes.ellipsoid(x, y, z, c, tuple(s + g for s in KIDNEY_SEMI)),
                _ellipsoid_box(centre, KIDNEY_SEMI),  # type: ignore[arg-type]
                motion=m["kidneys"],
            )
            for name, label, centre in (
                ("kidney_r", KIDNEY_R, KIDNEY_R_CENTRE),
                ("kidney_l", KIDNEY_L, KIDNEY_L_CENTRE),
            )
            for part, hu, grow in (("cortex", HU_KIDNEY_CORTEX, 0.0), ("medulla", HU_KIDNEY_MEDULLA, -7.0))
        ],
        Layer(
            "duodenum",
            DUODENUM,
            HU_SOFT,
            lambda x, y, z: shapes.tube(x, y, z, DUODENUM_TUBE),
            DUODENUM_TUBE.bbox(),
            motion=m["duodenum"],
        ),
        Layer(
            "duodenum_content",
            DUODENUM,
            HU_FLUID,
            lambda x, y, z: shapes.tube(x, y, z, DUODENUM_TUBE, grow_mm=-3.0),
            DUODENUM_TUBE.bbox(),
            motion=m["duodenum"],
        ),
        Layer(
            "small_bowel",
            BOWEL_SMALL,
            HU_SOFT,
            clip_cavity(lambda x, y, z: shapes.tube(x, y, z, SMALL_BOWEL_TUBE)),
            SMALL_BOWEL_TUBE.bbox(),
            motion=m["bowel"],
        ),
        Layer(
            "small_bowel_content",
            BOWEL_SMALL,
            HU_FLUID,
            clip_cavity(lambda x, y, z: shapes.tube(x, y, z, SMALL_BOWEL_TUBE, grow_mm=-2.5)),
            SMALL_BOWEL_TUBE.bbox(),
            motion=m["bowel"],
        ),
        Layer(
            "colon",
            BOWEL_LARGE,
            HU_SOFT,
            clip_cavity(lambda x, y, z: shapes.tube(x, y, z, COLON_TUBE)),
            COLON_TUBE.bbox(),
            motion=m["bowel"],
        ),
        Layer(
            "colon_content",
            BOWEL_LARGE,
            HU_BOWEL_CONTENT,
            clip_cavity(lambda x, y, z: shapes.tube(x, y, z, COLON_TUBE, grow_mm=-3.0)),
            COLON_TUBE.bbox(),
            motion=m["bowel"],
            hu_field=colon_content,
        ),
    ]


def _vessel_airway_layers() -> list[Layer]:
    layers = [
        Layer("aorta", AORTA, HU_CONTRAST, lambda x, y, z: shapes.tube(x, y, z, AORTA_TUBE), AORTA_TUBE.bbox()),
        *[
            Layer(f"pulmonary_{n}", PULMONARY, HU_CONTRAST, lambda x, y, z, t=t: shapes.tube(x, y, z, t), t.bbox())
            for n, t in enumerate(PULMONARY_TUBES)
        ],
        Layer("svc", SVC, HU_VENOUS, lambda x, y, z: shapes.tube(x, y, z, SVC_TUBE), SVC_TUBE.bbox()),
        Layer("ivc", IVC, HU_VENOUS, lambda x, y, z: shapes.tube(x, y, z, IVC_TUBE), IVC_TUBE.bbox()),
        Layer(
            "esophagus", ESOPHAGUS, HU_SOFT, lambda x, y, z: shapes.tube(x, y, z, ESOPHAGUS_TUBE), ESOPHAGUS_TUBE.bbox()
        ),
    ]
    esophagus_air = Tube(ESOPHAGUS_TUBE.points[:3], (2.0, 2.0, 1.5))
    layers.append(
        Layer("esophagus_air", None, HU_AIR, lambda x, y, z: shapes.tube(x, y, z, esophagus_air), esophagus_air.bbox())
    )
    airways = [("trachea", TRACHEA, TRACHEA_TUBE)] + [(f"bronchus_{k}", BRONCHUS, t) for k, t in BRONCHI.items()]
    for name, label, t in airways:
        layers.append(Layer(f"{name}_wall", label, HU_SOFT, lambda x, y, z, t=t: shapes.tube(x, y, z, t), t.bbox()))
    for name, _label, t in airways:  # lumens after all walls, so a wall never plugs a lumen
        layers.append(
            Layer(
                f"{name}_lumen",
                None,
                HU_AIR,
                lambda x, y, z, t=t: shapes.tube(x, y, z, t, grow_mm=-AIRWAY_WALL_MM),
                t.bbox(),
            )
        )
    return layers


def _bone_layers(everywhere: Box) -> list[Layer]:
    inf = 1.0e4
    spine_box: Box = ((-35.0, 20.0, -inf), (35.0, 95.0, inf))
    return [
        Layer("discs", DISC, HU_DISC, lambda x, y, z: shapes.ellipse_xy(x, y, VB_CENTRE, VB_SEMI) + 0 * z, spine_box),
        Layer("vertebral_bodies", VERTEBRAL_BODY, HU_CORTICAL, _vertebral_body_sdf, spine_box),
        Layer(
            "vertebral_marrow",
            None,
            HU_TRABECULAR,
            lambda x, y, z: _vertebral_body_sdf(x, y, z, CORTEX_MM),
            spine_box,
        ),
        Layer("vertebral_arches", VERTEBRAL_ARCH, HU_ARCH, _arch_sdf, spine_box),
        Layer(
            "spinal_canal",
            SPINAL_CANAL,
            HU_CSF,
            lambda x, y, z: shapes.ellipse_xy(x, y, CANAL_CENTRE, CANAL_SEMI) + 0 * z,
            spine_box,
        ),
        Layer(
            "spinal_cord",
            SPINAL_CORD,
            HU_CORD,
            lambda x, y, z: np.maximum(shapes.ellipse_xy(x, y, CANAL_CENTRE, CORD_SEMI), CORD_BOTTOM_Z - z),
            spine_box,
        ),
        Layer("ribs", RIB, HU_CORTICAL, None, everywhere, sparse=lambda g, w: _rib_sparse(g, w, 0.0)),
        Layer("rib_marrow", None, HU_TRABECULAR, None, everywhere, sparse=lambda g, w: _rib_sparse(g, w, CORTEX_MM)),
        Layer(
            "sternum",
            STERNUM,
            HU_CORTICAL,
            _sternum_sdf,
            ((-20.0, -105.0, STERNUM_Z[0]), (20.0, -85.0, STERNUM_Z[1])),
        ),
        Layer(
            "sternum_marrow",
            None,
            HU_TRABECULAR,
            lambda x, y, z: _sternum_sdf(x, y, z, CORTEX_MM),
            ((-20.0, -105.0, STERNUM_Z[0]), (20.0, -85.0, STERNUM_Z[1])),
        ),
    ]


# ------------------------------------------------------------------------------ painting


@dataclass
class Painted:
    """A layer evaluated on a grid: partial-volume fractions (and CT numbers) on a window of
    the grid (``window`` = (k, j, i) slices, dense arrays), or at flat voxel indices."""

    fraction: np.ndarray
    window: tuple[slice, slice, slice] | None = None
    index: np.ndarray | None = None
    hu: np.ndarray | None = None  # per voxel, or None for the layer's constant

    @property
    def empty(self) -> bool:
        return self.fraction.size == 0


def _intersect(a: tuple[slice, slice, slice], b: tuple[slice, slice, slice]) -> tuple[slice, slice, slice] | None:
    out = []
    for u, v in zip(a, b):
        lo, hi = max(u.start, v.start), min(u.stop, v.stop)
        if hi <= lo:
            return None
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


class Painter:
    """Paints the layers of an :class:`Anatomy` on one grid, caching the static ones."""

    def __init__(self, anatomy: Anatomy, grid: Grid) -> None:
        grid.require_axial("the synthetic phantom")
        self.anatomy = anatomy
        self.grid = grid
        self.width_mm = float(np.mean(grid.spacing_mm))  # partial-volume ramp: about one voxel
        self._axes = tuple(grid.axis_coords_mm(a).astype(np.float32) for a in range(3))
        self._cache: dict[str, Painted] = {}
        self._base_hu, self._base_labels = self._paint_base()

    # -- evaluation of one layer

    def _window(self, bbox: Box | None, shift: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index ranges (k, j, i) covering ``bbox`` (moved by ``shift``) plus the ramp, clipped."""
        g = self.grid
        ranges = []
        for axis in (2, 1, 0):
            n = g.size[axis]
            if bbox is None:
                ranges.append(slice(0, n))
                continue
            pad = 2.0 * self.width_mm
            lo = (bbox[0][axis] + shift[axis] - pad - g.origin_mm[axis]) / g.spacing_mm[axis]
            hi = (bbox[1][axis] + shift[axis] + pad - g.origin_mm[axis]) / g.spacing_mm[axis]
            a = max(0, int(math.floor(max(lo, -1.0))))
            b = min(n, int(math.ceil(min(hi, n + 1.0))) + 1)
            if b <= a:
                return None
            ranges.append(slice(a, b))
        return ranges[0], ranges[1], ranges[2]

    def evaluate(self, layer: Layer, shift: np.ndarray, clip: tuple[slice, slice, slice] | None = None) -> Painted:
        """Partial-volume fractions of ``layer`` displaced by ``shift`` (mm), within ``clip`` if given."""
        if layer.sparse is not None:
            idx, frac = layer.sparse(self.grid, self.width_mm)
            return Painted(frac, index=idx)
        win = self._window(layer.bbox, shift)
        if win is not None and clip is not None:
            win = _intersect(win, clip)
        if win is None or layer.sdf is None:
            return Painted(np.zeros(0, dtype=np.float32), index=np.zeros(0, dtype=np.int64))
        ax, ay, az = self._axes
        sk, sj, si = win
        x = (ax[si] - shift[0])[None, None, :]
        y = (ay[sj] - shift[1])[None, :, None]
        z = (az[sk] - shift[2])[:, None, None]
        shape = (sk.stop - sk.start, sj.stop - sj.start, si.stop - si.start)
        frac = np.broadcast_to(shapes.pv_fraction(layer.sdf(x, y, z), self.width_mm), shape)
        hu = None
        if layer.hu_field is not None:
            hu = np.broadcast_to(layer.hu_field(x, y, z), shape).astype(np.float32)
        return Painted(np.ascontiguousarray(frac), window=win, hu=hu)

    def painted(self, layer: Layer, state: BreathingState) -> Painted:
        if layer.motion == 0.0:
            if layer.name not in self._cache:
                self._cache[layer.name] = self.evaluate(layer, np.zeros(3))
            return self._cache[layer.name]
        return self.evaluate(layer, layer.motion * np.asarray(state.diaphragm_mm, dtype=float))

    # -- compositing

    @staticmethod
    def _apply(hu: np.ndarray, labels: np.ndarray, p: Painted, value: float, label: int | None) -> None:
        if p.empty:
            return
        target = p.hu if p.hu is not None else np.float32(value)
        if p.window is not None:
            view = hu[p.window]
            view += p.fraction * (target - view)
            if label is not None:
                labels[p.window][p.fraction >= 0.5] = label
            return
        assert p.index is not None
        flat_hu = hu.reshape(-1)
        current = flat_hu[p.index]
        flat_hu[p.index] = current + p.fraction * (target - current)
        if label is not None:
            labels.reshape(-1)[p.index[p.fraction >= 0.5]] = label

    def _paint_base(self) -> tuple[np.ndarray, np.ndarray]:
        """The static background (couch, body, muscle): the same on every slice, painted once
        on the first slice and broadcast along z (read-only views, copied by :meth:`paint`)."""
        nk, nj, ni = self.grid.shape
        hu = np.full((1, nj, ni), HU_AIR, dtype=np.float32)
        labels = np.zeros((1, nj, ni), dtype=np.uint8)
        first = (slice(0, 1), slice(0, nj), slice(0, ni))
        for layer in self.anatomy.layers:
            if layer.base:
                p = self.evaluate(layer, np.zeros(3), clip=first)
                self._apply(hu, labels, p, float(layer.hu), layer.label)  # type: ignore[arg-type]
        return np.broadcast_to(hu, (nk, nj, ni)), np.broadcast_to(labels, (nk, nj, ni))

    def paint(self, state: BreathingState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CT numbers (float32, no noise), labels (uint8) and the labels the tumour covers."""
        hu = self._base_hu.copy()
        labels = self._base_labels.copy()
        for layer in self.anatomy.layers:
            if layer.base:
                continue
            value = layer.hu(state) if callable(layer.hu) else float(layer.hu)
            self._apply(hu, labels, self.painted(layer, state), value, layer.label)
        under = np.zeros(0, dtype=np.uint8)
        if state.tumour_centre_mm is not None:
            tumour = self.tumour(state.tumour_centre_mm)
            if tumour.window is not None:
                under = labels[tumour.window][tumour.fraction >= 0.5].copy()
            self._apply(hu, labels, tumour, self.anatomy.tumour_hu, TUMOUR)
        return hu, labels, under

    def labels_in(self, state: BreathingState, window: tuple[slice, slice, slice]) -> np.ndarray:
        """The label map (without the tumour) of ``state`` on a small window of the grid only."""
        shape = tuple(s.stop - s.start for s in window)
        labels = np.zeros(shape, dtype=np.uint8)
        nj, ni = self.grid.shape[1], self.grid.shape[2]
        for layer in self.anatomy.layers:
            if layer.label is None:
                continue
            if layer.sparse is not None:
                p = self.painted(layer, state)
                assert p.index is not None
                idx = p.index[p.fraction >= 0.5]
                k, rem = np.divmod(idx, nj * ni)
                j, i = np.divmod(rem, ni)
                kji = [k - window[0].start, j - window[1].start, i - window[2].start]
                inside = np.all([(v >= 0) & (v < n) for v, n in zip(kji, shape)], axis=0)
                labels[kji[0][inside], kji[1][inside], kji[2][inside]] = layer.label
                continue
            shift = layer.motion * np.asarray(state.diaphragm_mm, dtype=float)
            p = self.evaluate(layer, shift, clip=window)
            if p.empty or p.window is None:
                continue
            local = tuple(slice(w.start - c.start, w.stop - c.start) for w, c in zip(p.window, window))
            labels[local][p.fraction >= 0.5] = layer.label
        return labels

    def tumour_window(self, centre_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
        r = self.anatomy.tumour_radius_mm
        c = [float(v) for v in centre_mm]
        return self._window(((c[0] - r, c[1] - r, c[2] - r), (c[0] + r, c[1] + r, c[2] + r)), np.zeros(3))

    def tumour(self, centre_mm: np.ndarray) -> Painted:
        c = tuple(float(v) for v in centre_mm)
        r = self.anatomy.tumour_radius_mm
        layer = Layer(
            "tumour",
            TUMOUR,
            self.anatomy.tumour_hu,
            lambda x, y, z: shapes.sphere(x, y, z, c, r),
            ((c[0] - r, c[1] - r, c[2] - r), (c[0] + r, c[1] + r, c[2] + r)),
        )
        return self.evaluate(layer, np.zeros(3))

    def sphere_mask(self, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
        """Voxels whose centre lies in the ball (the voxelised GTV / PTV)."""
        g = self.grid
        ax, ay, az = (a.astype(float) for a in self._axes)
        mask = np.zeros(g.shape, dtype=bool)
        c = np.asarray(centre_mm, dtype=float)
        sel = [np.nonzero(np.abs(a - c[n]) <= radius_mm)[0] for n, a in enumerate((ax, ay, az))]
        if any(len(s) == 0 for s in sel):
            return mask
        si, sj, sk = (slice(int(s[0]), int(s[-1]) + 1) for s in sel)
        d2 = (
            (ax[si] - c[0])[None, None, :] ** 2
            + (ay[sj] - c[1])[None, :, None] ** 2
            + (az[sk] - c[2])[:, None, None] ** 2
        )
        mask[sk, sj, si] = d2 <= radius_mm**2
        return mask
