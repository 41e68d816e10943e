"""The HTML report page (``DIR/report.html``), checked in headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the
browser reads commands on fd 3 and writes replies and events on fd 4, each message JSON
ended by a NUL byte), with the standard library only. A page passes when it loads with no
console error, no uncaught exception and no error log entry, requests nothing but
``data:`` and ``file:`` URLs, every ``<img>`` decodes (``img.decode()`` resolves,
``naturalWidth > 0``), and its full-page screenshot is not blank. The checker is itself
tested on pages built to fail each check. Tests skip, naming the reason, when no Chromium
binary exists (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from invlab.cli import main
from invlab.report.claims import ClaimSet, decide, write_claims
from invlab.report.html import REPORT_NAME, render_html, write_html_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ROOT = Path(__file__).resolve().parents[1]


def tiny_png(w: int = 3, h: int = 2) -> bytes:
    """A valid w x h RGB PNG with distinct pixels."""
    from PIL import Image

    im = Image.new("RGB", (w, h))
    im.putdata([(40 * i % 256, 90 * i % 256, 200 - 30 * i % 200) for i in range(w * h)])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def chromium_binary() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = chromium_binary()
    if exe is None:
        pytest.skip("no headless browser: none of " + ", ".join(BROWSERS) + " is on PATH "
                    "(Debian: `apt-get install chromium`; .ci/run installs it when it can)")
    return exe


# --------------------------------------------------------------------------- the checker


@dataclass
class PageCheck:
    """What the browser saw: errors, requested URLs, images and a full-page screenshot."""

    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""
    title: str = ""
    pdf: bytes = b""


class DevToolsPipe:
    """A headless Chromium and a DevTools session over ``--remote-debugging-pipe``."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0) -> None:
        cmd_r, self._cmd_w = os.pipe()  # we write commands; chromium reads them on fd 3
        self._out_r, out_w = os.pipe()  # chromium writes on fd 4; we read
        # move the child's ends above 9 first, so that placing them on fds 3 and 4 in the
        # child cannot clobber one with the other (under pytest, 3 and 4 may be these pipes)
        cmd_r, out_w = (self._high(fd) for fd in (cmd_r, out_w))

        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--mute-audio", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "about:blank"]

        def on_fds_3_and_4() -> None:  # runs in the child, before exec
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self.proc = subprocess.Popen(
            [exe, *args], pass_fds=(3, 4, cmd_r, out_w), preexec_fn=on_fds_3_and_4,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(cmd_r)
        os.close(out_w)
        self.timeout, self._id, self._buf = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    @staticmethod
    def _high(fd: int) -> int:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return new

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] \
                    if self.proc.stderr else ""
                raise RuntimeError(f"chromium closed the DevTools pipe; stderr:\n{err}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: bool = True) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read_message(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()


IMAGES_JS = """Promise.all(Array.from(document.images).map(img => img.decode().then(
    () => ({ok: true, w: img.naturalWidth, h: img.naturalHeight, alt: img.alt}),
    e => ({ok: false, w: img.naturalWidth, h: img.naturalHeight, alt: img.alt,
           error: String(e)}))))"""


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                               for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description")
                                           or d.get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def check_page(exe: str, page: Path, profile: Path, width: int = 1280,
               height: int = 900) -> PageCheck:
    """Load ``page`` in headless Chromium and report what happened (see module doc)."""
    b = DevToolsPipe(exe, profile)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)
        b.session = b.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                     "flatten": True}, session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            b.send(f"{domain}.enable")
        b.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                      "deviceScaleFactor": 1, "mobile": False})
        b.events.clear()
        b.send("Page.navigate", {"url": page.resolve().as_uri()})
        b.wait_event("Page.loadEventFired")
        images = b.send("Runtime.evaluate", {"expression": IMAGES_JS, "awaitPromise": True,
                                             "returnByValue": True})["result"]["value"]
        title = b.send("Runtime.evaluate", {"expression": "document.title",
                                            "returnByValue": True})["result"]["value"]
        shot = b.send("Page.captureScreenshot", {"format": "png",
                                                 "captureBeyondViewport": True})["data"]
        pdf = b.send("Page.printToPDF", {"printBackground": True})["data"]
        time.sleep(0.2)  # let late console/log events arrive
        b.send("Runtime.evaluate", {"expression": "1"})
        urls = [e["params"]["request"]["url"] for e in b.events
                if e.get("method") == "Network.requestWillBeSent"]
        return PageCheck(_errors(b.events), urls, images, base64.b64decode(shot), title,
                         base64.b64decode(pdf))
    finally:
        b.close()


def blank_fraction(png: bytes) -> tuple[int, float]:
    """(number of distinct colours, fraction of pixels that differ from the most common one)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    colors = im.getcolors(maxcolors=1 << 24) or []
    top = max(c for c, _ in colors)
    return len(colors), 1.0 - top / (im.width * im.height)


def assert_page_ok(c: PageCheck, n_images: int) -> None:
    assert c.errors == [], c.errors
    bad = [u for u in c.urls if not u.startswith(("file:", "data:", "about:"))]
    assert bad == [], f"the page requested non-local URLs: {bad}"
    assert len(c.images) == n_images
    broken = [i for i in c.images if not (i["ok"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == [], broken
    n_colors, ink = blank_fraction(c.screenshot)
    assert n_colors > 50 and ink > 0.02, f"screenshot looks blank: {n_colors} colours, {ink:.3f}"


# --------------------------------------------------------------------------- the checker fails


def _page(tmp: Path, body: str) -> Path:
    p = tmp / "page.html"
    p.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head>"
                 f"<body>{body}</body></html>")
    return p


def test_checker_passes_a_good_page_and_sees_its_image(chromium: str, tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    text = "<h1>hello</h1>" + "<p>" + "lorem ipsum dolor sit amet " * 200 + "</p>"
    c = check_page(chromium, _page(tmp_path, text + f'<img src="{uri}" width=200>'),
                   tmp_path / "profile")
    assert_page_ok(c, n_images=1)
    assert (c.images[0]["w"], c.images[0]["h"], c.title) == (3, 2, "t")


@pytest.mark.parametrize(("body", "what"), [
    ('<img src="data:image/png;base64,iVBORw0KGgoAAAA=">', "image"),
    ('<img src="missing.png">', "image"),
    ("<script>console.error('boom')</script><p>x</p>", "error"),
    ("<script>throw new Error('uncaught')</script><p>x</p>", "error"),
    ("", "blank"),
])
def test_checker_catches_broken_pages(chromium: str, tmp_path: Path, body: str,
                                      what: str) -> None:
    c = check_page(chromium, _page(tmp_path, body), tmp_path / "profile")
    if what == "image":
        assert c.images and not c.images[0]["ok"], c.images
    elif what == "error":
        assert any(("boom" in e or "uncaught" in e) for e in c.errors), c.errors
    else:
        n_colors, ink = blank_fraction(c.screenshot)
        assert n_colors == 1 and ink == 0.0
    with pytest.raises(AssertionError):
        assert_page_ok(c, n_images=1)


# --------------------------------------------------------------------------- the report page


def n_pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


@pytest.fixture(scope="module")
def tiny_study(mnist_test_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``out/`` of the session's tiny genuine study (real MNIST); copy before modifying."""
    from test_study_genuine import shared_tiny_study

    return shared_tiny_study(tmp_path_factory) / "out"


def _imgs(page: str) -> list[str]:
    return re.findall(r"<img [^>]*>", page)


def test_a_study_run_writes_the_page_and_its_provenance(tiny_study: Path) -> None:
    page = (tiny_study / REPORT_NAME).read_text()
    prov = json.loads((tiny_study / "provenance.json").read_text())
    assert prov["wall_seconds"] > 0
    (mnist,) = [s for s in prov["data_sources"] if s["name"] == "mnist"]
    from invlab.data import load_source

    assert mnist["images"] == len(load_source("mnist")) and mnist["where"]
    assert len(_imgs(page)) == len(list(tiny_study.glob("*.png"))) == 3
    for needle in ("Transforming-MNIST", "Claims check", "cannot be evaluated</span>", "Resolved configuration",
                   "n_si: 20", "Cells (from store.sqlite)", "sum of cell wall times", f"{mnist['images']:,}",
                   "@media print", "break-inside: avoid"):
        assert needle in page, needle
    # the paper's numbers sit under ours (M23 Table 1: WT R4 accuracy 94.60 ± 0.10)
    assert re.search(r'<td>[\d.]+<span class="paper">94\.60 ± 0\.10</span></td>', page)


def test_the_real_tiny_genuine_report_in_chromium(chromium: str, tiny_study: Path,
                                                  tmp_path: Path) -> None:
    c = check_page(chromium, tiny_study / REPORT_NAME, tmp_path / "profile")
    assert_page_ok(c, n_images=3)
    assert c.title == "invlab report — genuine"
    assert all(i["w"] >= 400 for i in c.images), c.images  # the figures, not placeholders
    assert c.pdf.startswith(b"%PDF") and n_pdf_pages(c.pdf) >= 2
    (tmp_path / "screenshot.png").write_bytes(c.screenshot)


@pytest.mark.parametrize("study", ["genuine", "drift", "spectral",
                                   pytest.param("origins", marks=pytest.mark.slow)])
def test_committed_results_render_without_a_store(chromium: str, tmp_path: Path, study: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = ROOT / "results" / study
    if not (src / "config.json").exists():
        pytest.skip(f"no committed results in {src}")
    d = tmp_path / study
    shutil.copytree(src, d, ignore=shutil.ignore_patterns(REPORT_NAME))
    assert main(["report", str(d), "--html"]) == 0
    out, err = capsys.readouterr()
    # what the files hold is redrawn first (drift, spectral: Fig. 4 / Fig. 5 from summary.json)
    assert out.split()[-1] == str(d / REPORT_NAME) and "no results store" in err
    assert all(Path(p).parent == d for p in out.split())
    page = (d / REPORT_NAME).read_text()
    assert "No results store" in page
    if (src / "provenance.json").exists():  # committed with the run: wall time and data shown
        prov = json.loads((src / "provenance.json").read_text())
        assert f"{prov['data_sources'][0]['images']:,}" in page
        assert "no provenance.json" not in page
    else:
        assert "not recorded" in page
    c = check_page(chromium, d / REPORT_NAME, tmp_path / "profile")
    assert_page_ok(c, n_images=len(list(src.glob("*.png"))))


def test_cli_report_html_rebuilds_from_the_store(tiny_study: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.studies.registry import Study

    d = tmp_path / "out"
    shutil.copytree(tiny_study, d)
    (d / REPORT_NAME).unlink()
    built: list[str] = []
    # the study's tables and figures are rebuilt first (tested in test_report.py; stubbed for
    # speed), then invlab.build_report writes the page
    monkeypatch.setattr(Study, "report",
                        lambda self, out: built.append(out) or [str(Path(out) / "table1_mnist.md")])
    assert main(["report", str(d), "--html"]) == 0
    printed = capsys.readouterr().out.split()
    assert built == [str(d)] and printed == [str(d / "table1_mnist.md"), str(d / REPORT_NAME)]
    page = (d / REPORT_NAME).read_text()
    assert len(_imgs(page)) == 3 and "Cells (from store.sqlite)" in page
    assert main(["report", str(d)]) == 0  # without --html: the page is not rewritten
    assert str(d / REPORT_NAME) not in capsys.readouterr().out


# --------------------------------------------------------------------------- from minimal files


def _minimal_study(d: Path, evil: str = "<script>alert(1)</script>") -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"study": f"toy{evil}", "config": {"preset": evil},
                                               "invlab_version": "9.9", "git_rev": "abc1234"}))
    (d / "table_toy.md").write_text(f"### Toy table {evil}\n\n| a |\n|---|\n| 1 |\n")
    (d / "table_toy.csv").write_text(f"method,acc %,paper acc %,note\nWT,94.5 ± 0.3,94.60,"
                                     f"\"{evil}\"\nDA,93.1,,ok\n")
    write_claims(d, ClaimSet(f"Claims {evil}", (
        decide(f"first {evil}", "a > 0", {"a": 1.0}, True),
        decide("second", "b > 0", {"b": -1.0}, False),
        decide("third", "c > 0", {"c": 2.0}, True),
        decide("fourth", "d > 0", {"d": float("nan")}, True))))
    (d / "fig9_toy.png").write_bytes(tiny_png(40, 30))
    return d


def test_page_escapes_everything_and_embeds_the_figure(tmp_path: Path) -> None:
    d = _minimal_study(tmp_path / "toy")
    page = render_html(d)
    assert "<script" not in page and "alert(1)</" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5  # title, table, claims...
    (img,) = _imgs(page)
    uri = "data:image/png;base64," + base64.b64encode((d / "fig9_toy.png").read_bytes()).decode()
    assert f'src="{uri}"' in img and 'width="31"' in img  # 40 px at the display scale
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing external


def test_paper_numbers_sit_under_ours_and_claims_are_counted(tmp_path: Path) -> None:
    page = render_html(_minimal_study(tmp_path / "toy", evil=""))
    head = re.search(r"<thead>(.*?)</thead>", page).group(1)
    assert re.findall(r"<th[^>]*>(.*?)</th>", head) == [
        "method", 'acc %<span class="paper">paper</span>', "note"]
    assert '<td>94.5 ± 0.3<span class="paper">94.60</span></td>' in page
    assert '<td>93.1<span class="paper">–</span></td>' in page  # no paper number
    assert "2 of 3 evaluated hold" in page and "1 cannot be evaluated</span>" in page
    assert page.count('<li class="fail">') == 1 and page.count('<li class="pass">') == 2
    assert page.count('<li class="na">') == 1 and "NaN statistic: d" in page
    assert '<span class="no">DOES NOT HOLD</span>' in page


def test_what_is_not_recorded_is_said(tmp_path: Path) -> None:
    page = render_html(_minimal_study(tmp_path / "toy"))
    assert "not recorded" in page and "No results store" in page
    assert "Sizes and locations not recorded" in page


def test_any_directory_of_tables_and_figures_renders(tmp_path: Path) -> None:
    d = tmp_path / "future-study"
    d.mkdir()
    (d / "metrics.csv").write_text("x,y\n1,2\n")
    page = write_html_report(d).read_text()
    assert "future-study" in page and "<td>2</td>" in page and "1 table" in page


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no study directory at"):
        render_html(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no study outputs"):
        render_html(tmp_path / "empty")
    d = _minimal_study(tmp_path / "toy")
    (d / "fig9_toy.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(ValueError, match="is not a PNG file"):
        render_html(d)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_genuine_study_report_in_chromium(chromium: str, mnist_test_dir: Path,
                                                tmp_path: Path) -> None:
    """`invlab study genuine --quick` writes report.html; it passes every browser check."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "invlab.cli", "study", "genuine", "--quick",
                    "--out", str(tmp_path / "out"), "--checkpoints", str(tmp_path / "ck"),
                    "--no-progress"], check=True, env=env, cwd=tmp_path, timeout=1800)
    out = tmp_path / "out"
    n_png = len(list(out.glob("*.png")))
    assert n_png >= 3
    c = check_page(chromium, out / REPORT_NAME, tmp_path / "profile")
    assert_page_ok(c, n_images=n_png)
    assert n_pdf_pages(c.pdf) >= 2


def test_old_directories_with_only_claims_md_render_as_text(tmp_path: Path) -> None:
    """A result directory from before claims.json: its claims.md is shown, never counted."""
    d = _minimal_study(tmp_path / "toy", evil="")
    (d / "claims.json").unlink()
    (d / "claims.md").write_text("### Claims check\n\n- **TRUE**: one <holds>.\n")
    page = render_html(d)
    assert "- **TRUE**: one &lt;holds&gt;." in page and " hold</span>" not in page
    assert "older invlab" in page
    (d / "claims.md").unlink()
    assert "has no claims check" in render_html(d)


def test_long_tables_go_last_and_show_their_first_rows(tmp_path: Path) -> None:
    """A per-model long table (generalization's models.csv) does not bury the summary tables:
    it comes after them and shows its first rows, naming the file with all of them."""
    from invlab.report.html import LONG_TABLE_ROWS, SHOWN_ROWS

    d = tmp_path / "zoo"
    d.mkdir()
    n = LONG_TABLE_ROWS + 1
    (d / "models.csv").write_text("model,value\n" + "".join(f"m{i},{i}\n" for i in range(n)))
    (d / "ranking.csv").write_text("measure,rho\nei,0.4\n")
    page = write_html_report(d).read_text()
    assert page.index('id="table-ranking"') < page.index('id="table-models"')
    assert f"the first {SHOWN_ROWS} of {n:,} rows" in page
    assert f"<td>{SHOWN_ROWS - 1}</td>" in page and f"<td>{SHOWN_ROWS}</td>" not in page
