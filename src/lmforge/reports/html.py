"""Markdown reports as standalone HTML pages: one file, inline CSS, nothing from the network.

The conversion is Python-Markdown's with its ``tables`` and ``fenced_code`` extensions. Image
paths are made relative to the directory the page is written to, so the page and its PNGs
can be moved or zipped together and opened from disk.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
  "Microsoft YaHei", sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
  line-height: 1.5; color: #1f2328; }
h1, h2, h3 { line-height: 1.25; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.7rem; }
th { background: #f6f8fa; }
td { font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; background: #f6f8fa; }
pre { padding: 0.8rem; overflow-x: auto; }
img { max-width: 100%; height: auto; }
""".strip()


class _RelativeImages(Treeprocessor):
    """Rewrite absolute local image paths relative to the page's directory."""

    def __init__(self, md: markdown.Markdown, base_dir: Path) -> None:
        super().__init__(md)
        self.base_dir = base_dir

    def run(self, root: Element) -> None:
        for img in root.iter("img"):
            src = img.get("src", "")
            if urlsplit(src).scheme or not os.path.isabs(src):
                continue  # a URL, or already relative
            img.set("src", Path(os.path.relpath(Path(src).resolve(), self.base_dir)).as_posix())


class _RelativeImagesExtension(Extension):
    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.base_dir = base_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Markdown's API)
        md.treeprocessors.register(_RelativeImages(md, self.base_dir), "relative_images", 0)


def markdown_to_html(md: str, title: str, *, base_dir: str | Path) -> str:
    """A complete HTML page of the Markdown ``md``, for a file written into ``base_dir``."""
    body = markdown.markdown(
        md,
        extensions=["tables", "fenced_code", _RelativeImagesExtension(Path(base_dir).resolve())],
        output_format="html",
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
