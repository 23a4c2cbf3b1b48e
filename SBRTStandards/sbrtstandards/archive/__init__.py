"""Cases straight from a DICOM archive: DICOMweb (QIDO-RS/WADO-RS) and DIMSE (C-FIND, C-GET/C-MOVE).

``sbrt batch`` takes a folder, a DICOMweb base URL or ``dimse://AET@host:port``. For an archive:

* :mod:`.address` parses the source, the ``--query`` filters and finds the credentials (from the
  environment or a private config file, never from the command line);
* :mod:`.dicomweb` and :mod:`.dimse` talk to the server through dicomweb-client and pynetdicom,
  behind one small interface (:class:`.common.Archive`);
* :mod:`.cache` keeps every fetched instance under its SOP Instance UID, so a resumed run fetches
  nothing twice;
* :mod:`.cases` finds the RT objects of each study, fetches what the cache lacks (bounded retries
  with back-off) and groups them into cases: the RTSTRUCT, RTDOSE and RTPLAN that share a Frame
  of Reference in one study.

Only the RT objects are fetched: the plan check and the contour comparison of a batch need the
structure set, the dose and the plan, not the CT.
"""
