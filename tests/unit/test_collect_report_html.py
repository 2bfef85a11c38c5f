"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, which
tests/run.sh installs): it loads with no console error under its no-network policy,
has its sections in order, shows the same cells as summary.md, sorts, links run
directories, and renders something (a screenshot that is not blank)."""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fixtures import build_seed_study

from orchestrator.collect import collect

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The network is closed: nothing may try to reach it (and nothing in the page may need it).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1600")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("needs Debian's chromium and chromium-driver: run tests/run.sh (it installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("html")
    study = build_seed_study(root)
    out_dir = root / "results"
    report = collect(study.experiment_dir, out_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=root)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get((out_dir / "report.html").as_uri())
        yield driver, out_dir, report
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_loads_with_no_console_error(page) -> None:  # type: ignore[no-untyped-def]
    driver, _, _ = page
    assert driver.title == "Results: seed-study"
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def test_sections_in_order_anomalies_first(page) -> None:  # type: ignore[no-untyped-def]
    driver, _, _ = page
    ids = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert ids == ["anomalies", "tables", "plots", "configurations"]
    anomalies = driver.execute_script("return document.getElementById('anomalies').innerText")
    assert "A4-b-seed1" in anomalies and "collapse" in anomalies and "NaN/inf loss" in anomalies


def markdown_tables(summary: str) -> dict[str, list[list[str]]]:
    """Title -> rows (header first) of every pipe table in summary.md."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in summary.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and title is not None:
            cells = [cell.strip().replace("\\|", "|") for cell in line.strip()[2:-2].split(" | ")]
            tables.setdefault(title, []).append(cells)
    return tables


def test_every_table_shows_the_same_cells_as_summary_md(page) -> None:  # type: ignore[no-untyped-def]
    driver, out_dir, _ = page
    expected = markdown_tables((out_dir / "summary.md").read_text(encoding="utf-8"))
    shown = driver.execute_script("""
        const out = {};
        document.querySelectorAll('#tables table').forEach(table => {
            const title = table.previousElementSibling.textContent;
            out[title] = Array.from(table.rows).map(row => Array.from(row.cells).map(c => c.textContent.trim()));
        });
        return out;""")
    assert set(shown) == set(expected) and len(shown) >= 8
    for title, rows in expected.items():
        assert shown[title] == rows, title
    assert "77.28 ± 0.23" in shown["Accuracy and speed: series A"][5]  # A4-nb's F1, as the fixture makes it


def test_tables_sort_on_a_click(page) -> None:  # type: ignore[no-untyped-def]
    driver, _, _ = page
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.CSS_SELECTOR, "table[data-table='comparison']")
    header = next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text.startswith("ΔF1"))
    header.click()
    column = [th.text for th in table.find_elements(By.TAG_NAME, "th")].index(header.text)
    values = [row.find_elements(By.TAG_NAME, "td")[column].text for row in table.find_elements(By.CSS_SELECTOR,
                                                                                                   "tbody tr")]
    numbers = [float(value.replace("−", "-")) for value in values if value != "–"]
    assert numbers == sorted(numbers) and len(numbers) >= 10
    header.click()
    values = [row.find_elements(By.TAG_NAME, "td")[column].text for row in table.find_elements(By.CSS_SELECTOR,
                                                                                                   "tbody tr")]
    assert [float(v.replace("−", "-")) for v in values if v != "–"] == sorted(numbers, reverse=True)


def test_configurations_have_diff_curves_states_and_run_links(page) -> None:  # type: ignore[no-untyped-def]
    driver, _, _ = page
    info = driver.execute_script("""
        const d = document.querySelector("details[data-config='A4-nb']");
        return {text: d.textContent, svgLines: d.querySelectorAll('svg polyline').length,
                links: Array.from(d.querySelectorAll('a')).map(a => a.href)};""")
    assert "padding: max_length → dynamic" in info["text"]
    assert "completed" in info["text"]
    assert info["svgLines"] == 3  # one loss line a seed
    assert len(info["links"]) == 3
    for href in info["links"]:
        assert Path(unquote(urlparse(href).path)).is_dir()
    c28 = driver.execute_script("return document.querySelector(\"details[data-config='C2-8']\").textContent")
    assert "failed" in c28


def test_plots_are_inline_images_and_the_page_is_not_blank(page) -> None:  # type: ignore[no-untyped-def]
    driver, _, _ = page
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.src.slice(0, 22), i.naturalWidth])")
    assert len(images) == 4 and all(src == "data:image/png;base64," and width > 0 for src, width in images)
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), dtype=float)
    assert pixels.shape[0] > 500 and pixels.std() > 10.0  # a blank (or one-colour) page has no variance


@pytest.mark.parametrize(("experiment_dir", "out_dir"), [("/a/exp", "/a/results/exp"), ("/a/exp", "/a/exp"),
                                                         ("/x/y", "/z")])
def test_run_links_are_the_run_directories_relative_to_the_output(experiment_dir: str, out_dir: str) -> None:
    import os

    from orchestrator.collect.report_html import _Links

    links = _Links(Path(experiment_dir), Path(out_dir))
    for run_dir in ("runs/abc", "/abs/runs/q", "runs/../runs/b", ".", "runs/x y"):
        assert links(run_dir) == Path(os.path.relpath(Path(experiment_dir) / run_dir, out_dir)).as_posix()
