"""Headless Chromium for the review-page tests and bench/report.py (selenium and the Debian chromium).

`chromium(tmp)` gives a WebDriver on a fresh profile under `tmp`, or raises `NoBrowser` saying what is
missing. Nothing here touches the network: the flags switch off Chromium's own background requests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--mute-audio")


class NoBrowser(Exception):
    """No Chromium (or no chromedriver, or no selenium) on this machine."""


def find_chromium() -> tuple[str, str]:
    """(browser, driver) executables, or NoBrowser naming what is missing."""
    browser = os.environ.get("GENRETAG_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("GENRETAG_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        raise NoBrowser("no Chromium and chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


def chromium(tmp: str | os.PathLike, width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver with a fresh profile in `tmp`; downloads go to `tmp`/downloads."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise NoBrowser("selenium is not installed (pip install 'genretag[test]')") from None
    browser, driver = find_chromium()
    profile = Path(tmp) / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    downloads = Path(tmp) / "downloads"
    downloads.mkdir(exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def synthetic_rows(n: int, seed: int = 0, root: str = "/music"):
    """`n` review rows of a made-up library (for load and filter timings; no file behind them): 40 % without
    a genre, confidences spread over 0-1, actions as `tag` plans them under keep-existing at 0.5."""
    import random

    from genretag.report import ReviewRow
    from genretag.tags.plan import DEFAULT_NAMES, SKIP_BELOW, SKIP_HAS_GENRE, WRITE

    rng = random.Random(seed)
    genres = list(DEFAULT_NAMES.values())
    rows = []
    for i in range(n):
        artist, album = i // 120, (i // 12) % 10
        probs = sorted((rng.random() ** 3 for _ in range(3)), reverse=True)
        conf = min(0.99, 0.1 + 0.9 * rng.betavariate(2.2, 1.6))
        picks = rng.sample(genres, 3)
        top = [(picks[0], round(conf, 4))] + [(g, round((1 - conf) * p / sum(probs), 4)) for g, p in zip(picks[1:], probs)]
        current = [] if rng.random() < 0.4 else [picks[0] if rng.random() < 0.7 else rng.choice(genres)]
        proposed = [picks[0]] if conf >= 0.5 else []
        action = SKIP_BELOW if not proposed else SKIP_HAS_GENRE if current else WRITE
        rows.append(ReviewRow(path=f"{root}/Artist {artist:04d}/Album {album}/{i % 12 + 1:02d} Track {i}.flac",
                              action=action, current=current, proposed=proposed,
                              new=proposed if action == WRITE else [], confidence=round(conf, 4), top=top,
                              segments=10))
    return rows
