"""The HTML report of a run: well-formed, self-contained, every section and test set, embedded PNGs, escaped text."""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from deepwiener.analysis import blocks
from deepwiener.config import resolve
from deepwiener.io import load
from deepwiener.report import ANALYSIS_FIGURES, SECTIONS, render_report
from deepwiener.runs import HISTORY_COLUMNS, RunDir, train_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report_renders.py"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_NAME = 'sb <i>&"x'  # markup and quotes in the run's name must come out as text


class Page(HTMLParser):
    """Collects what the tests look at and checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.errors: list[str] = []
        self.doctype = ""
        self.sections: list[str] = []
        self.headings: dict[str, list[str]] = {"title": [], "h1": [], "h2": [], "h3": []}
        self.cells: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(values.get("id") or "")
        if tag == "img":
            self.images.append(values.get("src") or "")
        self.links += [value or "" for name, value in attrs if name in ("src", "href") and tag != "img"]
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.open and self.open[-1] in self.headings:
            self.headings[self.open[-1]].append(data)
        if self.open and self.open[-1] in ("td", "th"):
            self.cells.append(data)


@pytest.fixture(scope="module")
def silverbox_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    """A complete Silverbox run (three test sets, mV) of a tiny two-block model trained for one short epoch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPWIENER_DATA", str(data_dir))
        mp.setenv("DEEPWIENER_OFFLINE", "1")
        config = resolve(None, {"data": {"benchmark": "silverbox"},
                                "model": {"d_model": 4, "d_state": 4, "n_layers": 2, "seed": 0},
                                "train": {"epochs": 1, "window": 64, "washout": 10, "stride": 64, "batch_size": 128,
                                          "val_fraction": 0.9}})
        with RunDir.create(tmp_path_factory.mktemp("runs") / RUN_NAME, config=config) as run:
            train_run(run, config, config.data.load())
        yield run


@pytest.fixture(scope="module")
def page_html(silverbox_run: RunDir) -> str:
    return render_report(RunDir.open(silverbox_run.path))


@pytest.fixture(scope="module")
def page(page_html: str) -> Page:
    parser = Page()
    parser.feed(page_html)
    parser.close()
    return parser


def test_well_formed_and_self_contained(page: Page, page_html: str) -> None:
    assert page.doctype.lower() == "doctype html"
    assert not page.errors and not page.open, (page.errors, page.open)
    assert {"html", "head", "body", "title", "style"} <= page.tags
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert page.links and all(link.startswith("#") for link in page.links)  # in-page navigation only
    assert "http://" not in page_html and "https://" not in page_html


def test_every_section_and_test_set(page: Page) -> None:
    assert page.sections == list(SECTIONS)
    assert [h.strip() for h in page.headings["h2"]] == list(SECTIONS.values())
    h3 = [h.strip() for h in page.headings["h3"]]
    assert ["multisine", "arrow_full", "arrow_no_extrapolation"] + list(ANALYSIS_FIGURES.values()) == h3
    for name in ("multisine", "arrow_full", "arrow_no_extrapolation", "mV"):
        assert name in page.cells
    text = "".join(page.text)
    assert "stability certificate [" in text and 'benchmark = "silverbox"' in text


def test_images_are_png_data_uris(page: Page, silverbox_run: RunDir) -> None:
    n_lti = sum(b.is_lti for b in blocks(load(silverbox_run.model_path)))
    # training curves, 3 test sets, one pole-zero map per block, Bode, Hankel singular values, nonlinearities
    assert len(page.images) == 1 + 3 + n_lti + 3
    for src in page.images:
        prefix, payload = src.split(",", 1)
        assert prefix == "data:image/png;base64"
        png = base64.b64decode(payload, validate=True)
        assert png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100


def test_text_is_escaped(page: Page, page_html: str) -> None:
    assert "<i>" not in page_html and "&lt;i&gt;" in page_html
    assert page.headings["h1"] == [f"deepwiener report: {RUN_NAME}"]
    assert page.headings["title"] == [f"deepwiener report: {RUN_NAME}"]


def test_read_history_round_trip(tmp_path: Path) -> None:
    rows = [{"epoch": 0.0, "train_loss": 1.5, "val_rmse": 0.25, "lr": 1e-3, "seconds": 2.0},
            {"epoch": 1.0, "train_loss": 0.5, "val_rmse": 0.125, "lr": 1e-3, "seconds": 4.0}]
    assert RunDir(tmp_path).read_history() == []
    RunDir(tmp_path).write_history(rows)
    assert RunDir(tmp_path).read_history() == rows and list(rows[0]) == list(HISTORY_COLUMNS)


def test_renders_in_headless_chromium(page_html: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("check_report_renders", SCRIPT)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    browser = check.find_browser()
    if browser is None:
        pytest.skip("no chromium (apt-get install -y chromium); scripts/check_report_renders.py does this check")
    report, png = tmp_path / "report.html", tmp_path / "shot.png"
    report.write_text(page_html, encoding="utf-8")
    check.screenshot(browser, report, png)
    assert check.problems(png) == []
