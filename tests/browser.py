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
    """A headless Chromium WebDriver with a fresh profile in `tmp`."""
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
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
