"""Breathing motion of the synthetic 4D-CT (Lujan et al., Med Phys 26:715, 1999).

The respiratory signal is ``b(p) = cos^4(pi p / 100)`` for the phase ``p`` in percent of the
cycle: 1 at end-inhale (phase 0 %, the usual 4D-CT convention), 0 at end-exhale (50 %); the
cos^4 shape (Lujan's n = 2) dwells longer near exhale, as real breathing does. A point that
moves with peak-to-peak excursion ``A`` along an axis is displaced by ``-A b(p)`` from its
end-exhale position (inferiorly, i.e. -z in LPS, on inhalation). The antero-posterior
component lags the cranio-caudal one by a fraction of the cycle, which opens the trajectory
into a loop (hysteresis, Seppenwoolde et al., IJROBP 53:822, 2002).

The time average of ``b`` over a cycle is exactly 3/8, and so is its mean over N >= 3
equally spaced phases (the cos 2x and cos 4x harmonics cancel), so the mid-position
(time-weighted mean position) is the exhale position displaced by ``3/8`` of the motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MEAN_SIGNAL = 3.0 / 8.0  # cycle average of cos^4


def phase_percents(phases: int) -> list[float]:
    """Phase bins of an N-phase 4D-CT, in percent of the cycle: 0, 100/N, ... (0 % = end-inhale)."""
    return [100.0 * n / phases for n in range(phases)]


def signal(percent: float, lag_percent: float = 0.0) -> float:
    """Breathing signal b in [0, 1]: 1 at end-inhale, 0 at end-exhale."""
    return math.cos(math.pi * (percent - lag_percent) / 100.0) ** 4


@dataclass(frozen=True)
class Trajectory:
    """Rigid breathing displacement (mm, LPS) of an organ or the tumour.

    ``amplitude_mm`` is the peak-to-peak excursion along SI; the LR and AP excursions are
    ``lr_ratio`` and ``ap_ratio`` of it. ``lr_sign`` is the LR direction on inhalation (+1 =
    towards +x, the patient's left); AP moves anteriorly (-y) on inhalation.
    """

    amplitude_mm: float
    ap_ratio: float = 0.3
    lr_ratio: float = 0.05
    lr_sign: float = 1.0
    ap_lag_percent: float = 10.0

    def displacement(self, percent: float) -> np.ndarray:
        b_si = signal(percent)
        b_ap = signal(percent, self.ap_lag_percent)
        a = self.amplitude_mm
        return np.array([self.lr_sign * self.lr_ratio * a * b_si, -self.ap_ratio * a * b_ap, -a * b_si])

    def mid_position(self) -> np.ndarray:
        """Time-averaged displacement (the mid-position the planning structures are drawn at)."""
        a = self.amplitude_mm * MEAN_SIGNAL
        return np.array([self.lr_sign * self.lr_ratio * a, -self.ap_ratio * a, -a])

    def scaled(self, fraction: float) -> Trajectory:
        """The same motion with ``fraction`` of the amplitude (organs far from the diaphragm)."""
        return Trajectory(self.amplitude_mm * fraction, self.ap_ratio, self.lr_ratio, self.lr_sign, self.ap_lag_percent)
