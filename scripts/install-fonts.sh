#!/usr/bin/env bash
# A font with Chinese glyphs for plot labels (`lmforge explain` token labels, report titles):
# matplotlib ships none. Installs WenQuanYi Micro Hei (~5 MB) from the system's package
# manager. Does nothing when a CJK font is already installed or we cannot install; lmforge
# then writes such characters as \uXXXX escapes and says so (or set LMFORGE_CJK_FONT).
set -u
if command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing a CJK font for plot labels (apt-get install fonts-wqy-microhei)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null); then
    # matplotlib indexes fonts once into its cache; drop the index so the next start sees this one
    rm -f "${MPLCONFIGDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/matplotlib}"/fontlist-v*.json
  else
    echo "warning: could not install fonts-wqy-microhei; Chinese plot labels will show as \\uXXXX escapes" >&2
  fi
else
  echo "note: no CJK font found; Chinese plot labels will show as \\uXXXX escapes (install fonts-wqy-microhei or fonts-noto-cjk with your package manager, or set LMFORGE_CJK_FONT=/path/to/font)" >&2
fi
exit 0
