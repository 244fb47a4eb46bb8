"""Harvesting translation pairs from .po and .mo catalogs written with polib in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import polib
import pytest

from lmforge.data.harvest.gettext import (
    catalog_domain,
    harvest_gettext,
    language_matches,
    parse_locale,
)
from lmforge.errors import UserError


def _catalog() -> polib.POFile:
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Language": "zh_CN"}
    po.append(polib.POEntry(msgid="Open file", msgstr="打开文件"))
    po.append(polib.POEntry(msgid="Guess", msgstr="猜测", flags=["fuzzy"]))
    po.append(polib.POEntry(msgid="Not yet", msgstr=""))
    po.append(polib.POEntry(msgid="Gone", msgstr="没了", obsolete=True))
    po.append(polib.POEntry(msgid="Blank", msgstr="   "))
    po.append(
        polib.POEntry(msgid="%d file", msgid_plural="%d files", msgstr_plural={0: "%d 个文件"})
    )
    po.append(polib.POEntry(msgid="Open", msgctxt="menu", msgstr="打开"))
    return po


def _write(po: polib.POFile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mo":
        po.save_as_mofile(str(path))
    else:
        po.save(str(path))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line == text)


def test_po_rows_are_exact(tmp_path: Path) -> None:
    po = _write(_catalog(), tmp_path / "zh_CN" / "LC_MESSAGES" / "editor.po")
    rows, stats = harvest_gettext("zh_CN", [tmp_path])
    rows = list(rows)

    def row(source: str, target: str, msgid_line: str) -> dict:
        where = f"gettext:editor:{po}:{_line_of(po, msgid_line)}"
        return {
            "source": source,
            "target": target,
            "lang": "zh_CN",
            "domain": "editor",
            "provenance": where,
        }

    assert rows[:2] == [
        row("Open file", "打开文件", 'msgid "Open file"'),
        row("%d file", "%d 个文件", 'msgid "%d file"'),  # plural: msgstr[0]
    ]
    assert [(r["source"], r["target"]) for r in rows[2:]] == [("Open", "打开")]
    assert stats.items_skipped == {"fuzzy": 1, "untranslated": 1, "obsolete": 1, "empty": 1}
    assert stats.files_scanned == 1 and stats.rows == 3


def test_mo_rows_and_duplicates_across_formats(tmp_path: Path) -> None:
    # msgfmt (and polib) compile only translated entries: no fuzzy, untranslated or obsolete.
    _write(_catalog(), tmp_path / "a" / "zh_CN" / "LC_MESSAGES" / "editor.po")
    mo = _write(_catalog(), tmp_path / "b" / "zh_CN" / "LC_MESSAGES" / "editor.mo")
    rows, stats = harvest_gettext("zh_CN", [tmp_path / "b"])
    assert list(rows) == [
        {
            "source": source,
            "target": target,
            "lang": "zh_CN",
            "domain": "editor",
            "provenance": f"gettext:editor:{mo}",
        }
        for source, target in [
            ("%d file", "%d 个文件"),
            ("Open file", "打开文件"),
            ("Open", "打开"),  # .mo entries are sorted by context + msgid
        ]
    ]
    assert stats.items_skipped == {"empty": 1}  # the whitespace msgstr is compiled in

    rows, stats = harvest_gettext("zh_CN", [tmp_path])  # the same pairs in .po and .mo
    assert len(list(rows)) == 3
    assert stats.duplicates == 3 and stats.files_scanned == 2


def test_language_matching_picks_catalog_folders(tmp_path: Path) -> None:
    po = polib.POFile()
    for tag in ("zh_CN", "zh_Hans", "zh_CN.UTF-8", "zh", "zh_TW", "zh_Hant", "de", "en@quot"):
        po.clear()
        po.append(polib.POEntry(msgid="Yes", msgstr=f"yes-{tag}"))
        _write(po, tmp_path / tag / "LC_MESSAGES" / "app.mo")
    rows, _ = harvest_gettext("zh_CN", [tmp_path])
    assert sorted(r["target"] for r in rows) == [
        "yes-zh",
        "yes-zh_CN",
        "yes-zh_CN.UTF-8",
        "yes-zh_Hans",
    ]
    rows, _ = harvest_gettext("zh_TW", [tmp_path])
    assert sorted(r["lang"] for r in rows) == ["zh", "zh_Hant", "zh_TW"]


@pytest.mark.parametrize(
    ("requested", "catalog", "expected"),
    [
        ("zh_CN", "zh_Hans", True),
        ("zh_Hans", "zh_SG", True),
        ("zh_CN", "zh_Hans_CN", True),
        ("zh_CN", "zh_TW", False),
        ("zh_CN", "zh", True),
        ("pt_BR", "pt_PT", False),
        ("pt_BR", "pt", True),
        ("pt", "pt_BR", True),
        ("sr", "sr@latin", False),
        ("de", "da", False),
    ],
)
def test_language_matches(requested: str, catalog: str, expected: bool) -> None:
    assert language_matches(parse_locale(requested), parse_locale(catalog)) is expected


def test_domain_from_layout() -> None:
    assert catalog_domain(Path("/x/locale/de/LC_MESSAGES/grep.mo")) == "grep"
    assert catalog_domain(Path("/src/sed/po/de.po")) == "sed"
    assert catalog_domain(Path("/src/app/messages.po")) == "messages"


def test_named_files_and_bad_catalogs(tmp_path: Path) -> None:
    po = polib.POFile()
    po.metadata = {"Language": "de"}
    po.append(polib.POEntry(msgid="Yes", msgstr="Ja"))
    german = _write(po, tmp_path / "messages.po")
    with pytest.raises(UserError, match="is a de catalog, not zh_CN"):
        harvest_gettext("zh_CN", [german])
    rows, _ = harvest_gettext("de_DE", [german])
    assert [(r["source"], r["target"], r["lang"]) for r in rows] == [("Yes", "Ja", "de")]

    broken = tmp_path / "zh_CN" / "LC_MESSAGES" / "broken.mo"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a catalog at all")
    rows, stats = harvest_gettext("zh_CN", [tmp_path])
    assert list(rows) == [] and stats.files_skipped == {"unreadable": 1}

    with pytest.raises(UserError, match="--lang 'zh CN' is not a locale name"):
        harvest_gettext("zh CN", [tmp_path])
    with pytest.raises(UserError, match="nope does not exist"):
        harvest_gettext("zh_CN", [tmp_path / "nope"])


def test_cli(tmp_path: Path, cli) -> None:
    locale = tmp_path / "locale"
    _write(_catalog(), locale / "zh_CN" / "LC_MESSAGES" / "editor.mo")
    out = tmp_path / "zh.jsonl"

    result = cli("data", "harvest", "gettext", "--lang", "zh_CN", locale, "--out", out)
    assert result.code == 0, result.err
    assert [json.loads(line)["target"] for line in out.read_text().splitlines()] == [
        "%d 个文件",
        "打开文件",
        "打开",
    ]
    assert f"wrote 3 translation pairs to {out}" in result.out
    assert "scanned 1 zh_CN catalogs" in result.out and "skipped: 1 empty" in result.out

    result = cli("data", "harvest", "gettext", "--lang", "zh_CN", locale, "--out", out)
    assert result.code == 2 and "already exists; pass --overwrite" in result.err
    result = cli(
        "data", "harvest", "gettext", "--lang", "zh_CN", locale, "--out", out, "--overwrite"
    )
    assert result.code == 0

    fresh = tmp_path / "ja.jsonl"
    result = cli("data", "harvest", "gettext", "--lang", "ja", locale, "--out", fresh)
    assert result.code == 0
    assert result.out.startswith(
        f"nothing found: no translation pairs in ja catalogs under {locale}"
    )
    assert not fresh.exists()

    result = cli("data", "harvest", "gettext", "--lang", "ja", tmp_path / "nope", "--out", fresh)
    assert result.code == 2 and "nope does not exist" in result.err
