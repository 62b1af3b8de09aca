"""Studies at cohort scale (seed 000's protocol in one command): a study file (`spec`), its run on Dask with every
case committed whole (`runner`), and its summary: Table 1, the comparisons between levels and the case-level QC
(`table1`). ``segunc study`` drives it; `demo` writes the phantom cohort that the shipped demo ensemble runs on."""

from .runner import LEVELS, STUDY_COLUMNS, case_folder, run_case, run_study
from .spec import StudyCase, StudySpec, read_study
from .table1 import table1, table1_markdown, write_summary

__all__ = [
    "LEVELS",
    "STUDY_COLUMNS",
    "StudyCase",
    "StudySpec",
    "case_folder",
    "read_study",
    "run_case",
    "run_study",
    "table1",
    "table1_markdown",
    "write_summary",
]
