#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, when missing:
#  - the official OpenAI Python SDK (the server test drives `ferrite serve` with it), and the
#    agent frameworks pydantic-ai and openai-agents (tool-calling tests),
#  - Chromium and chromedriver (Debian's `chromium`, `chromium-driver`; the HTML report test
#    renders in headless Chromium, the chat page test drives it with Selenium).
# The real models are fetched by the tests themselves (pip, sha256-verified, cached).
set -euo pipefail

command -v python3 >/dev/null || { echo "python3 is required to fetch the test models" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --upgrade
python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet "openai>=1.40,<4"
# Selenium drives Chromium (through Debian's chromedriver) for the chat page test.
python3 -c "import selenium" 2>/dev/null || python3 -m pip install --quiet "selenium>=4.20,<5"
# Real agent clients for the tool-calling tests (versions the tests were written against).
python3 -c "import pydantic_ai, agents" 2>/dev/null \
  || python3 -m pip install --quiet "pydantic-ai-slim[openai]==2.78.0" "openai-agents==0.25.0"

if [ -z "${FERRITE_CHROMIUM:-}" ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    echo "installing Debian's chromium and chromedriver for the browser tests" >&2
    $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
      || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
  else
    echo "install Chromium (or set FERRITE_CHROMIUM to one) for the HTML report test" >&2
    exit 1
  fi
fi
