"""Programme QA from the other standards: TBI set-up checks, machine QA records, QC indicator rates,
IGRT position-error logs, point-dose and independent MU checks.

Each tool keeps its rules as data beside its module (``tbi.toml``, ``machine_qa.toml``,
``qc_indicators.toml``, ``igrt.toml``), every rule with the clause it comes from; thresholds that
the SBRT standards already hold (IGRT errors, MU and point-dose checks, machine QA of the liver
standard §9.2) are read from the standards catalogue, so each number has one source.
The functions take plain arguments (paths, mappings, dates) so the ``sbrt`` subcommands and a
Slicer module call the same code.
"""
