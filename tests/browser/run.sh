#!/usr/bin/env bash
# Runs Duet's browser end-to-end tests (tests/browser/*.test.js), first installing what is
# missing: Debian's chromium, firefox-esr and pulseaudio, the web client's npm packages
# (playwright-core, puppeteer-core, typescript, axe-core),
# and the relay binary. Usable from anywhere; CI calls it as it is.
#
#   DUET_RELAY_PROFILE=release   test the release relay (default: debug, which `cargo test` builds anyway)
#   DUET_RELAY_BIN=/path/relay   test that binary and build nothing
#   DUET_CLIENT_BIN=/path/client the native client for native.test.js (default: beside the relay)
#   DUET_TEST_PATIENCE=2         double every timeout on a loaded machine
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
[ -x "${DUET_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ -x "${DUET_FIREFOX:-/usr/bin/firefox-esr}" ] || missing+=(firefox-esr)
command -v pulseaudio >/dev/null 2>&1 || missing+=(pulseaudio)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "browser tests: installing Debian's ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ ! -d web-client/node_modules/playwright-core ] || [ ! -d web-client/node_modules/puppeteer-core ] || [ ! -d web-client/node_modules/typescript ] || [ ! -d web-client/node_modules/axe-core ]; then
  echo "browser tests: installing the web client's npm packages" >&2
  (cd web-client && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ -z "${DUET_RELAY_BIN:-}" ]; then
  profile="${DUET_RELAY_PROFILE:-debug}"
  if [ "$profile" = release ]; then
    cargo build --release -p duet-relay -p duet-client
  else
    cargo build -p duet-relay -p duet-client
  fi
  export DUET_RELAY_BIN="$PWD/target/$profile/duet-relay"
fi
# The native client (tests/browser/native.test.js): the one beside the relay binary.
if [ -z "${DUET_CLIENT_BIN:-}" ] && [ -x "$(dirname "$DUET_RELAY_BIN")/duet-client" ]; then
  export DUET_CLIENT_BIN="$(dirname "$DUET_RELAY_BIN")/duet-client"
fi

mkdir -p test-output
exec node --test --test-concurrency=1 tests/browser/*.test.js
