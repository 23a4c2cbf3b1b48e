"""DICOM and DICOM RT input/output: CT series, 4D-CT phases, RTSTRUCT, RTDOSE, RTPLAN."""
