"""Synthetic 4D-CT SBRT cases (``sbrt phantom``): a thorax with a lung tumour, an upper abdomen
with a liver tumour, their phase CTs and GTVs, planning structures, a plausible SBRT dose and
plan, and ``truth.json`` with the answers that the 4D-CT, OAR, DVH and plan-check tools must find.

- :mod:`.anatomy`: the analytic organs, labels, CT numbers and how breathing moves them;
- :mod:`.motion`: the breathing trajectory (Lujan cos^4) and the phase bins;
- :mod:`.balls`: exact volumes of unions of spheres (the ITV, PTV and isodose truth);
- :mod:`.dose`: the synthetic SBRT dose around the PTV;
- :mod:`.case`: :func:`make_case` (in memory) and :func:`write_case` (DICOM + truth.json).
"""

from sbrtstandards.phantom.case import PhantomCase, make_case, write_case

__all__ = ["PhantomCase", "make_case", "write_case"]
