#!/usr/bin/env bash
# Creates .venv with a Python that Rasa 3.6 supports, Rasa Open Source and this project.
# Safe to run again: when nothing it depends on has changed it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

RASA_VERSION="${RASA_VERSION:-3.6.21}"
VENV=.venv
STAMP="$VENV/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) rasa==$RASA_VERSION"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/rasa" ]; then
  exit 0
fi

# The Python the package claims and its tests run on (pyproject.toml: requires-python).
supported() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; }

find_python() {
  for c in ${PYTHON:-} python3.9 python3; do
    p=$(command -v "$c" 2>/dev/null) || continue
    if supported "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

# Debian 12 ships only Python 3.11; Debian 11 (bullseye) has 3.9 and is served by the same
# mirror. Pin it low so that nothing else is taken from it.
install_python39_from_bullseye() {
  echo "setup: no Python 3.9 found; installing it from Debian bullseye" >&2
  command -v apt-get >/dev/null || { echo "setup: install Python 3.9 and run again" >&2; exit 1; }
  cat > /etc/apt/sources.list.d/bullseye.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' > /etc/apt/preferences.d/bullseye-low
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.9/bullseye python3.9-minimal/bullseye \
    libpython3.9-stdlib/bullseye libpython3.9-minimal/bullseye >/dev/null
  # uv inspects the interpreter with distutils, whose bullseye package conflicts with
  # bookworm's python3; unpack it beside the interpreter instead.
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq python3-distutils/bullseye python3-lib2to3/bullseye)
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
  cp -r "$tmp/root/usr/lib/python3.9/distutils" "$tmp/root/usr/lib/python3.9/lib2to3" /usr/lib/python3.9/
  rm -rf "$tmp"
}

PY=$(find_python) || { install_python39_from_bullseye; PY=$(find_python); }
echo "setup: using $PY ($("$PY" --version 2>&1))"

if ! command -v uv >/dev/null; then
  python3 -m pip install --quiet uv || "$PY" -m pip install --quiet uv
fi

[ -x "$VENV/bin/python" ] && supported "$VENV/bin/python" || uv venv --quiet -p "$PY" "$VENV"
uv pip install --quiet -p "$VENV/bin/python" -e '.[test,docs]' "rasa==$RASA_VERSION"
# redis-server for the tests of the Redis store and outbox (they are skipped without it).
if command -v apt-get >/dev/null; then
  command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "setup: could not install redis-server; the Redis tests will be skipped" >&2
  # chromium and its driver for the playground's browser test (skipped without them).
  command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "setup: could not install chromium; the playground's browser test will be skipped" >&2
fi
echo "$want" > "$STAMP"
"$VENV/bin/python" -c 'import rasa, sanic; print(f"setup: rasa {rasa.__version__}, sanic {sanic.__version__}")'
