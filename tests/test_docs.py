"""The documentation: a short README, and the site built from docs/ with ``mkdocs build --strict``
(mkdocs-material, API reference by mkdocstrings from the docstrings), so that a broken link or
anchor, a missing page, a page left out of the nav or an API object that no longer exists fails the
default test run. Offline: the build fetches nothing (material's privacy/social plugins off,
``font: false``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MKDOCS = [sys.executable, "-m", "mkdocs"]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's end-of-life banner


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*MKDOCS, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
                          capture_output=True, text=True, env=ENV, timeout=300, cwd=config.parent)


def nav_pages() -> list[str]:
    """The site's pages in mkdocs.yml's nav order."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    return list(pages(config["nav"]))


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the rest belongs in docs/ (the site)"


#: a measured quantity: a number with a unit of time, energy, memory, throughput, or a percentage/ratio
MEASUREMENT = re.compile(r"\d[\d,.]*\s?(%|s\b|ms\b|min\b|µJ|nJ|pJ|GB|MB|samples/s|images/s)|×\s?\d")


def test_readme_quotes_no_measurement():
    """Measurements live on the pages generated from the runs that measured them (DEMO, RESULTS,
    PERFORMANCE, the slow-test table), where they are regenerated; the README links there."""
    found = [(i, m.group(0)) for i, line in enumerate((REPO / "README.md").read_text(encoding="utf-8").splitlines(), 1)
             for m in MEASUREMENT.finditer(line)]
    assert not found, f"README.md quotes measurements (line, text): {found}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    got = _build(REPO / "mkdocs.yml", out)
    assert got.returncode == 0, got.stderr[-4000:]
    return out


def test_site_builds_strictly(site):
    """Every nav page is there; the README's tour is on the front page (one copy, included); the
    API reference holds the docstrings; no page asks the network for a font at view time."""
    for page in nav_pages():
        assert (site / page.replace(".md", ".html")).is_file(), page
    front = (site / "index.html").read_text(encoding="utf-8")
    assert "A five-minute tour" in front and "kd-T2" in front
    reference = (site / "REFERENCE.html").read_text(encoding="utf-8")
    for name in ("count_energy", "DistillConfig", "PipelineConfig", "EnergyModel", "Target"):
        assert name in reference, name
    assert "Everything a distillation (or teacher) run depends on" in reference  # DistillConfig's docstring
    for html in site.glob("*.html"):
        assert "fonts.googleapis.com" not in html.read_text(encoding="utf-8"), html.name
    assert (site / "img" / "report-healthy.png").is_file()


def _tiny_site(tmp_path: Path, fault: str | None) -> subprocess.CompletedProcess:
    """The project's mkdocs.yml settings (strict, validation, snippets) on a two-page site, with one
    fault or none."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    config["plugins"] = ["search"]  # mkdocstrings has nothing to do here
    config["nav"] = [{"Home": "index.md"}, {"Other": "other.md"}]
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("# readme\n\n<!-- --8<-- [start:part] -->\nincluded\n<!-- --8<-- [end:part] -->\n")
    index = "# Home\n\nSee [other](other.md#a-section).\n\n--8<-- \"README.md:part\"\n"
    (docs / "other.md").write_text("# Other\n\n## A section\n")
    if fault == "broken link":
        index = index.replace("other.md#", "gone.md#")
    elif fault == "missing anchor":
        index = index.replace("#a-section", "#no-such-section")
    elif fault == "page not in nav":
        (docs / "stray.md").write_text("# Stray\n")
    elif fault == "missing snippet":
        index = index.replace("README.md:part", "NOPE.md")
    (docs / "index.md").write_text(index)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    return _build(tmp_path / "mkdocs.yml", tmp_path / "site")


@pytest.mark.parametrize("fault", ["broken link", "missing anchor", "page not in nav", "missing snippet"])
def test_strict_build_fails_on(fault, tmp_path):
    got = _tiny_site(tmp_path, fault)
    assert got.returncode != 0, f"the strict build passed with a {fault}"
    assert re.search(r"gone\.md|no-such-section|stray\.md|NOPE\.md", got.stderr), got.stderr[-2000:]


def test_the_tiny_site_without_a_fault_builds(tmp_path):
    """The control of the test above: the same two pages build when nothing is wrong."""
    got = _tiny_site(tmp_path, None)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "included" in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_make_docs_is_the_strict_build():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs: install\n\t\$\(VENV\)/bin/mkdocs build --strict", makefile, flags=re.M)
    assert shutil.which("mkdocs", path=str(Path(sys.executable).parent)), "mkdocs is installed by make install"


def test_citation_and_licence_agree_with_the_package():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["title"] and cff["authors"]
    assert cff["version"] == project["version"] and cff["license"] == project["license"] == "MIT"
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert any("2504.20445" in i["value"] for ref in cff["references"] for i in ref["identifiers"])


@pytest.mark.browser
def test_site_front_page_in_chromium(site, tmp_path):
    """Headless Chromium renders the built site's front page from the file system (no server, no
    network): the material theme's navigation and the README's tour are drawn. Set
    HTAKL_SCREENSHOT_DIR to keep the PNG (docs/img/site-front.png is one)."""
    import numpy as np
    from PIL import Image

    from test_report import CHROMIUM_FLAGS, _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` was not possible here")
    shots = Path(os.environ.get("HTAKL_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "site-front.png"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    url = (site / "index.html").as_uri()
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,1000", url],
                   capture_output=True, text=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--virtual-time-budget=3000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "A five-minute tour" in dom and "md-nav" in dom and "ERR_" not in dom
    for page in ("INSTALL.html", "REFERENCE.html", "NIR.html"):
        assert f'href="{page}"' in dom, page
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.std() > 20, "the screenshot is (almost) blank"
    # material's default header colour (indigo, #4051b5) is drawn: the theme's stylesheet loaded
    indigo = int((np.abs(pixels - np.array([64, 81, 181])).max(axis=-1) < 12).sum())
    assert indigo > 5000, indigo
