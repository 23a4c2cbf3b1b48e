"""SBRT Standards core: DICOM RT I/O, 4D-CT, margins, OARs, DVH and plan checks.

Pure Python (numpy, SimpleITK, pydicom); nothing here imports Slicer or Qt. The
Slicer modules and the ``sbrt`` command are two front ends over these functions.
Coordinates are DICOM patient coordinates (LPS) in mm, doses in Gy, volumes in cc.
"""

__version__ = "0.1.0"
