"""Translation pairs from gettext catalogs (``.po`` and compiled ``.mo``), read with polib.

Every program translated with gettext ships its messages and their translations; the
catalogs for one language give an English -> that-language parallel corpus. Rows:
``source`` (msgid), ``target`` (msgstr; ``msgstr[0]``, the singular, for plural entries),
``lang`` (the catalog's locale, without codeset), ``domain`` (the catalog's name) and
``provenance`` (``gettext:<domain>:<path>``, plus ``:<line>`` for ``.po`` files).

Skipped: the header (msgid ""), obsolete (``#~``), fuzzy, untranslated (empty msgstr) and
empty (whitespace-only) entries. Compiled ``.mo`` files hold no fuzzy or obsolete entries at
all: ``msgfmt`` leaves them out. Exact repeats of a (source, target) pair keep the first.

Which catalogs belong to ``--lang`` (see :func:`language_matches`): the language must be the
same and so must any ``@modifier``; the codeset (``.UTF-8``, ``.cp936``) is ignored, since
polib decodes by the catalog's own charset. When the request names a region or script, a
catalog naming none is accepted (gettext's own fallback from ``zh_CN`` to ``zh``); for
Chinese, regions compare by script, so ``zh_CN``, ``zh_SG``, ``zh_Hans`` and ``zh_Hans_CN``
are one written language and ``zh_TW``, ``zh_HK``, ``zh_MO`` and ``zh_Hant`` another;
otherwise the region must be equal. A request without a region takes every region.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polib

from lmforge.data.harvest import Deduplicator, HarvestStats, Row, existing_paths, timed
from lmforge.errors import UserError

# language[_Script][_REGION][.codeset][@modifier], with "_" or "-" between the parts.
_LOCALE = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})"
    r"(?:[_-](?P<script>[A-Za-z]{4}))?"
    r"(?:[_-](?P<region>[A-Za-z]{2}|\d{3}))?"
    r"(?:\.(?P<codeset>[\w-]+))?"
    r"(?:@(?P<modifier>\w+))?$"
)
_SCRIPT_OF_REGION = {
    "zh": {"CN": "Hans", "SG": "Hans", "TW": "Hant", "HK": "Hant", "MO": "Hant"},
}
_CATALOG_SUFFIXES = (".mo", ".po")


@dataclass(frozen=True)
class Locale:
    """A parsed locale name such as ``zh_CN.UTF-8`` or ``zh_Hans`` or ``sr@latin``."""

    language: str
    script: str | None = None
    region: str | None = None
    modifier: str | None = None

    @property
    def written_script(self) -> str | None:
        """The script, given or implied by the region (``zh_CN`` -> ``Hans``)."""
        if self.script:
            return self.script
        return _SCRIPT_OF_REGION.get(self.language, {}).get(self.region or "")

    def __str__(self) -> str:
        parts = [self.language, self.script, self.region]
        tag = "_".join(p for p in parts if p)
        return f"{tag}@{self.modifier}" if self.modifier else tag


def parse_locale(name: str) -> Locale | None:
    """Parse a locale name; None when ``name`` is not one (e.g. ``LC_MESSAGES``)."""
    match = _LOCALE.match(name)
    if match is None:
        return None
    script, region = match["script"], match["region"]
    return Locale(
        language=match["language"].lower(),
        script=script.title() if script else None,
        region=region.upper() if region else None,
        modifier=match["modifier"],
    )


def language_matches(requested: Locale, catalog: Locale) -> bool:
    """Whether a catalog in locale ``catalog`` serves a request for ``requested``."""
    if requested.language != catalog.language or requested.modifier != catalog.modifier:
        return False
    if not (requested.script or requested.region):
        return True
    if not (catalog.script or catalog.region):
        return True  # the generic catalog, as gettext falls back from zh_CN to zh
    if requested.written_script and catalog.written_script:
        return requested.written_script == catalog.written_script
    return requested.region == catalog.region


def default_locale_dirs() -> list[Path]:
    """System locale folders, the interpreter's, and ``locale`` folders in site-packages."""
    candidates = [
        Path("/usr/share/locale"),
        Path("/usr/local/share/locale"),
        Path(sys.base_prefix, "share", "locale"),
    ]
    for key in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[key]))
    dirs: list[Path] = []
    for path in candidates:
        if path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def harvest_gettext(
    lang: str, paths: Sequence[str | Path] | None = None
) -> tuple[Iterator[Row], HarvestStats]:
    """Harvest (source, target) pairs for ``lang`` from catalogs under ``paths``.

    ``paths`` may name catalog files (read if their language matches or cannot be told) or
    folders (searched for ``.mo``/``.po`` catalogs of ``lang``). Default:
    :func:`default_locale_dirs`. Unknown ``lang`` or a missing path raises a UserError.
    """
    requested = parse_locale(lang)
    if requested is None:
        raise UserError(
            f"--lang {lang!r} is not a locale name; use language[_REGION], e.g. zh_CN, de, pt_BR"
        )
    roots = existing_paths(paths, "gettext catalogs") if paths else default_locale_dirs()
    for root in roots:
        if root.is_file():
            named_catalog_locale(root, requested)  # a wrong-language file is an error now
    stats = HarvestStats(sources=[str(r) for r in roots])

    def rows() -> Iterator[Row]:
        dedup = Deduplicator(stats)
        for path, locale in catalogs(roots, requested):
            for row in _catalog_rows(path, locale, stats):
                if dedup.is_new(row["source"], row["target"]):
                    yield row

    return timed(rows(), stats), stats


def catalogs(roots: Sequence[Path], requested: Locale) -> list[tuple[Path, Locale]]:
    """The catalogs of ``requested`` under ``roots`` with their locales, in sorted path order."""
    found: dict[Path, tuple[Path, Locale]] = {}
    for root in roots:
        if root.is_file():
            found.setdefault(root.resolve(), (root, named_catalog_locale(root, requested)))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
            for name in filenames:
                if not name.endswith(_CATALOG_SUFFIXES):
                    continue
                path = Path(dirpath, name)
                locale = catalog_locale(path, read_header=False)
                if locale is not None and language_matches(requested, locale):
                    found.setdefault(path.resolve(), (path, locale))
    return sorted(found.values(), key=lambda item: str(item[0]))


def named_catalog_locale(path: Path, requested: Locale) -> Locale:
    """The locale of a catalog file the user named: its own if it can be told (a UserError
    if that is another language), else the requested one."""
    locale = catalog_locale(path, read_header=True)
    if locale is not None and not language_matches(requested, locale):
        raise UserError(
            f"{path} is a {locale} catalog, not {requested}; name a {requested} catalog "
            "or pick --lang to match"
        )
    return locale or requested


def catalog_locale(path: Path, read_header: bool) -> Locale | None:
    """A catalog's locale: the folder above ``LC_MESSAGES``, else a stem like ``zh_CN.po``,
    else (with ``read_header``) the catalog's ``Language`` header."""
    if path.parent.name == "LC_MESSAGES":
        return parse_locale(path.parent.parent.name)
    locale = parse_locale(path.stem)
    if locale is not None or not read_header:
        return locale
    catalog = _load(path)
    return parse_locale(catalog.metadata.get("Language", "")) if catalog is not None else None


def catalog_domain(path: Path) -> str:
    """The gettext domain: the file stem (``LC_MESSAGES/grep.mo`` -> ``grep``); for a
    ``po/zh_CN.po`` layout, where the stem is the language, the project folder's name."""
    if path.parent.name == "LC_MESSAGES" or parse_locale(path.stem) is None:
        return path.stem
    folder = path.parent
    if folder.name == "po" and folder.parent.name:
        folder = folder.parent
    return folder.name or path.stem


def _load(path: Path) -> polib.POFile | polib.MOFile | None:
    """Read a catalog with polib; None when it is not a readable catalog."""
    try:
        if path.suffix == ".mo":
            return polib.mofile(str(path))
        return polib.pofile(str(path))
    except (OSError, ValueError, LookupError, UnicodeDecodeError, struct.error):
        return None


def _catalog_rows(path: Path, locale: Locale, stats: HarvestStats) -> Iterator[Row]:
    catalog = _load(path)
    if catalog is None:
        stats.files_skipped["unreadable"] += 1
        return
    stats.files_scanned += 1
    domain = catalog_domain(path)
    is_po = path.suffix == ".po"
    for entry in catalog:
        target = entry.msgstr_plural.get(0, "") if entry.msgid_plural else entry.msgstr
        if entry.obsolete:
            reason = "obsolete"
        elif "fuzzy" in entry.flags:
            reason = "fuzzy"
        elif entry.msgid == "":
            reason = "header"
        elif target == "":
            reason = "untranslated"
        elif not entry.msgid.strip() or not target.strip():
            reason = "empty"
        else:
            where = f"gettext:{domain}:{path}" + (f":{entry.linenum}" if is_po else "")
            yield {
                "source": entry.msgid,
                "target": target,
                "lang": str(locale),
                "domain": domain,
                "provenance": where,
            }
            continue
        stats.items_skipped[reason] += 1
