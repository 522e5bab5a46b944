"""benchmarks/accuracy/report.py: sections of runs whose folders are gone are kept from the existing page, in the
page's order, word for word."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))
import report  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "accuracy" / "report.py"
PAGE = f"""# old header

## {report.TITLE['isic2018']}

isic text
| a | b |

## {report.TITLE['busi']}

busi text

## {report.PRECISION_TITLE}

precision text
"""


def test_kept_section_is_the_heading_up_to_the_next():
    assert report.kept_section(PAGE, report.TITLE["busi"]) == f"## {report.TITLE['busi']}\n\nbusi text\n"
    with pytest.raises(ValueError, match="no section '## nothing'"):
        report.kept_section(PAGE, "nothing")


def test_keeping_every_section_rewrites_the_page_with_the_new_header(tmp_path):
    (tmp_path / "results.md").write_text(PAGE)
    (tmp_path / "header.md").write_text("# new header\n")
    (tmp_path / "footer.md").write_text("## protocol\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--keep", "precision", "busi", "isic2018", "--docs",
                           str(tmp_path), "--header", str(tmp_path / "header.md"), "--footer",
                           str(tmp_path / "footer.md")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = PAGE.replace("# old header", "# new header") + "\n## protocol\n"
    assert (tmp_path / "results.md").read_text() == expected
