"""Markdown to a standalone HTML page: tables, code, relative images, nothing remote."""

from __future__ import annotations

from lmforge.reports.html import markdown_to_html

MD = """# Report <1>

| model | bleu |
|---|---|
| tiny | 12.5 |

```python
print("a < b")
```

![loss]({loss})

![bars](plots/bars.png)
"""


def test_tables_code_and_images(tmp_path):
    page = markdown_to_html(
        MD.format(loss=tmp_path / "out" / "loss.png"), "Run <x> & y", base_dir=tmp_path / "out"
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Run &lt;x&gt; &amp; y</title>" in page
    assert "<table>" in page and "<td>12.5</td>" in page
    assert '<code class="language-python">print(&quot;a &lt; b&quot;)' in page
    assert 'src="loss.png"' in page  # an absolute path inside base_dir becomes relative
    assert 'src="plots/bars.png"' in page  # a relative one is kept
    assert "<style>" in page
    assert "http" not in page and "<script" not in page and "<link" not in page


def test_images_outside_the_page_directory_get_a_relative_path(tmp_path):
    page = markdown_to_html(
        f"![a]({tmp_path / 'plots' / 'a.png'})", "t", base_dir=tmp_path / "report"
    )
    assert 'src="../plots/a.png"' in page
