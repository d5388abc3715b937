"""Benchmark of forms in the browser (ODK Web Forms): first load in bytes, time to a rendered form.

    .venv/bin/python scripts/bench_webforms.py                    # the programme forms in forms/
    .venv/bin/python scripts/bench_webforms.py --forms DIR --runs 5

It starts ``merit serve`` (gunicorn, SQLite, a scratch data folder) publishing the compiled
forms of ``--forms`` into project 1, signs in with Chromium (Debian's, through Playwright, as
the browser tests do) and opens each form's page ``/projects/1/forms/<f>/fill``:

* **first load**: every response the page needs with an empty cache (the page, the Web Forms
  bundle and its chunks, the XForm, its media), in bytes as served and gzipped (level 6, what
  a reverse proxy such as nginx sends with ``gzip on``; the server itself does not compress);
* **time to a rendered form**: from the navigation's start to the form's first question on
  screen (the engine has parsed the XForm and its media and drawn the first page), the median
  of ``--runs`` loads, each in a fresh browser context (empty cache), and then with the cache
  warm (the bundle is served with a content hash, cached for a year).

Baseline, measured in the same run: the same console's form page (``/projects/1/forms/<f>``,
a server-rendered page with no form engine), first load and time to its heading. A form the
engine cannot open is reported with the engine's message instead of figures.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import browser as support  # noqa: E402

# What ODK Web Forms shows when its engine cannot open a form (then its message).
FAILURE = "An error occurred while loading this form"


def _gzip_size(body: bytes) -> int:
    return len(gzip.compress(body, compresslevel=6, mtime=0))


def load(context, url: str, ready: str) -> tuple[float, int, int, str | None]:  # type: ignore[no-untyped-def]
    """Open ``url`` in a new tab; return (seconds to ``ready``, bytes, gzipped bytes, error)."""
    page = context.new_page()
    bodies: list[bytes] = []

    def keep(response) -> None:  # type: ignore[no-untyped-def]
        try:
            bodies.append(response.body())
        except Exception:  # a redirect or an aborted request has no body
            return

    page.on("response", keep)
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    failure = page.get_by_text(FAILURE)
    target = page.locator(ready).first
    error = None
    deadline = start + 120
    while time.perf_counter() < deadline:
        if target.is_visible():
            break
        if failure.count() > 0:
            # The message is in a dialog outside the form's element.
            shown = " ".join(page.locator(".p-dialog").all_inner_texts()).replace("\n", " ")
            error = shown or FAILURE
            break
        page.wait_for_timeout(20)
    else:
        error = "not rendered within 120 s"
    elapsed = time.perf_counter() - start
    page.wait_for_load_state("networkidle")
    page.close()
    raw = sum(len(b) for b in bodies)
    zipped = sum(_gzip_size(b) for b in bodies)
    return elapsed, raw, zipped, error


def measure(browser, base: str, path: str, ready: str, runs: int) -> dict:  # type: ignore[no-untyped-def]
    """Cold loads (a fresh context each) and warm loads (one context), medians."""
    cold, warm = [], []
    raw = zipped = 0
    error = None
    for _ in range(runs):
        context = browser.new_context(viewport=support.LAPTOP, locale="fr-FR")
        sign_in(context, base)
        seconds, raw, zipped, error = load(context, base + path, ready)
        if error:
            context.close()
            return {"error": error}
        cold.append(seconds)
        warm.append(load(context, base + path, ready)[0])
        context.close()
    return {
        "cold": statistics.median(cold),
        "warm": statistics.median(warm),
        "raw": raw,
        "gzip": zipped,
    }


def sign_in(context, base: str) -> None:  # type: ignore[no-untyped-def]
    page = context.new_page()
    support.sign_in(page, base)
    page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", type=Path, default=ROOT / "forms", help="compiled forms")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    problem = support.missing()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    form_ids = sorted(p.stem for p in args.forms.glob("*.xml"))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        database = f"sqlite:///{scratch / 'bench.db'}"
        with (
            support.console_server(database, scratch, MERIT_FORMS_DIR=str(args.forms)) as server,
            sync_playwright() as playwright,
        ):
            browser = support.launch(playwright)
            print(f"Chromium {browser.version}; {args.runs} runs; medians; forms from {args.forms}")
            print(f"{'page':<44} {'cold s':>7} {'warm s':>7} {'bytes':>10} {'gzipped':>9}")
            for form_id in form_ids:
                rows = (
                    (
                        f"console form page (baseline) {form_id}",
                        f"/projects/1/forms/{form_id}",
                        "h1",
                    ),
                    (
                        f"Web Forms {form_id}",
                        f"/projects/1/forms/{form_id}/fill",
                        ".question-container",
                    ),
                )
                for label, path, ready in rows:
                    found = measure(browser, server.url, path, ready, args.runs)
                    if "error" in found:
                        print(f"{label:<44} does not open: {found['error'][:300]}")
                        continue
                    print(
                        f"{label:<44} {found['cold']:>7.2f} {found['warm']:>7.2f} "
                        f"{found['raw']:>10,} {found['gzip']:>9,}"
                    )
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
