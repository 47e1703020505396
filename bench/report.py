#!/usr/bin/env python
"""The review page at library scale: build time, page size, and load and filter times in headless Chromium.

For each size a synthetic results set is made (`tests/browser.py: synthetic_rows`: made-up paths, 40 %
without a genre, confidences spread over 0-1), the page is written by `genretag.report.write_report`
(the code behind `tag --report` and `genretag report`), and Chromium (the Debian `chromium` with
`chromium-driver`, through selenium, flags as in the tests) opens it from file:// and times:

  load     from the navigation to the end of the page's script (the table drawn), as the page measures it
           (performance.now() at the end of its script), and as the driver sees it (wall clock);
  filters  an action filter, a genre filter, a text search, a sort by confidence, and a jump to the middle of
           the table: each from the event to the next painted frame;
  dom      the number of table rows in the page (only the rows in view are drawn).

    python bench/report.py [--rows 10000 50000] [--repeat 3] [--json reports/review-page.json]

docs/performance.md ("The review page") has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser import chromium, synthetic_rows  # noqa: E402  (tests/ holds the shared browser set-up)

from genretag.report import ReportSettings, write_report  # noqa: E402

# Each step: set something, then wait for the next painted frame, and return the time in ms.
STEP = """
var done = arguments[arguments.length - 1], what = arguments[0], t = performance.now();
var $ = function (id) { return document.getElementById(id); };
function pick(sel, text) { sel.value = Array.from(sel.options).find(o => o.textContent === text).value;
                           sel.dispatchEvent(new Event('change')); }
if (what === 'reset') { $('f-reset').click(); }
else if (what === 'action') { pick($('f-action'), 'write'); }
else if (what === 'genre') { pick($('f-genre'), 'Jazz'); }
else if (what === 'text') { $('f-text').value = 'track 12'; $('f-text').dispatchEvent(new Event('input')); t += 60; }
else if (what === 'sort') { $('head').children[6].click(); }
else if (what === 'scroll') { var s = $('scroller'); s.scrollTop = s.scrollHeight / 2; s.dispatchEvent(new Event('scroll')); }
var settle = what === 'text' ? 80 : 0;
setTimeout(function () {
  requestAnimationFrame(function () { setTimeout(function () {
    done([performance.now() - t, window.genretagReview.shown(), document.querySelectorAll('#body .row').length]);
  }, 0); });
}, settle);
"""
STEPS = ("action", "genre", "text", "sort", "scroll")


def measure(driver, page: Path) -> dict:
    t0 = time.perf_counter()
    driver.get(page.as_uri())
    while driver.execute_script("return document.body.dataset.ready") != "1":
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    ready = driver.execute_script("return window.genretagReview.readyAt")
    out = {"load_ms_page": round(ready, 1), "load_ms_wall": round(wall * 1000, 1),
           "dom_rows": driver.execute_script("return document.querySelectorAll('#body .row').length")}
    for step in STEPS:
        driver.execute_async_script(STEP, "reset")
        ms, shown, dom = driver.execute_async_script(STEP, step)
        out[f"{step}_ms"] = round(ms, 1)
        out[f"{step}_shown"] = shown
        out["dom_rows"] = max(out["dom_rows"], dom)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--repeat", type=int, default=3, help="page loads per size (the median is reported)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="genretag-report-bench-") as tmp:
        driver = chromium(tmp)
        driver.set_script_timeout(60)
        try:
            for n in args.rows:
                rows = synthetic_rows(n)
                page = Path(tmp) / f"review-{n}.html"
                t0 = time.perf_counter()
                write_report(rows, page, ReportSettings())
                build = time.perf_counter() - t0
                runs = [measure(driver, page) for _ in range(args.repeat)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                res = {"rows": n, "build_s": round(build, 2), "page_mb": round(page.stat().st_size / 1e6, 2),
                       **med, "runs": runs}
                results.append(res)
                print(f"{n:>7} rows: build {build:.2f} s, {res['page_mb']} MB; load {med['load_ms_page']:.0f} ms "
                      f"(wall {med['load_ms_wall']:.0f}); " + ", ".join(f"{s} {med[s + '_ms']:.0f} ms" for s in STEPS)
                      + f"; {med['dom_rows']:.0f} rows in the DOM", flush=True)
        finally:
            driver.quit()
    report = {"command": " ".join(["python", "bench/report.py", *sys.argv[1:]]),
              "browser": "Chromium headless (selenium)", "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
