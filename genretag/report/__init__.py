"""The review page: what a library holds and what `tag` would change, as one self-contained HTML file.

    from genretag.report import ReportSettings, row_from_plan, write_report
    rows = [row_from_plan(tagger.apply(tagger.plan(r)), r) for r in results]
    write_report(rows, "review.html", ReportSettings(threshold=0.5))

`read_results` reads `classify` or `tag` JSON lines; `read_accepted` the list of files a reader
ticked on the page (for `tag --only`). Never imports torch.
"""

from genretag.report.accepted import AcceptedFile, AcceptedList, read_accepted
from genretag.report.page import ReportError, ReportSettings, check_writable, render, write_report
from genretag.report.rows import ResultsError, ReviewRow, read_results, row_from_plan, rows_from_results

__all__ = ["AcceptedFile", "AcceptedList", "ReportError", "ReportSettings", "ResultsError", "ReviewRow",
           "check_writable", "read_accepted", "read_results", "render", "row_from_plan", "rows_from_results",
           "write_report"]
