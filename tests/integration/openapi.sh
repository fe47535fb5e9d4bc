#!/bin/sh
# openapi.sh - docs/openapi.yaml is valid OpenAPI 3.1 (checked by a real
# validator, pinned in tests/openapi/package.json) and matches what a live
# `clearbox serve` answers: each response is validated against the document's
# schema for its operation and status (tests/openapi/check.mjs).
#
# Needs node + npm (installs tests/openapi/node_modules with `npm ci` when
# missing; skips with a message when npm is unavailable). The live part needs
# $CLEARBOX (set by `make test`) and root (the sandbox); it runs the service on
# a loopback port chosen by the kernel, with a database in a temp dir.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
dir="$here/tests/openapi"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "SKIP openapi: npm/node not available (Debian: apt-get install npm)"
    echo "0 passed, 0 failed"
    exit 0
fi
if [ ! -d "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null 2>&1 || {
        echo "FAIL openapi: npm ci in tests/openapi failed"
        echo "0 passed, 1 failed"
        exit 1
    }
fi

base=""
tmp=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if [ -n "${CLEARBOX:-}" ] && [ -x "${CLEARBOX:-}" ] && [ "$(id -u)" = 0 ]; then
    "$CLEARBOX" serve --listen 127.0.0.1:0 --db "sqlite:$tmp/db" --workers 1 \
        --audit-log "$tmp/audit.log" --node-id "openapi-$$" >"$tmp/serve.log" 2>&1 &
    pid=$!
    i=0
    while [ $i -lt 100 ]; do
        listen=$(sed -n 's/.*"event":"service.started".*"listen":"\([^"]*\)".*/\1/p' "$tmp/serve.log")
        [ -n "$listen" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$listen" ]; then
        echo "FAIL openapi: clearbox serve did not start:"
        sed 's/^/    /' "$tmp/serve.log" | tail -20
        echo "0 passed, 1 failed"
        exit 1
    fi
    base="http://$listen"
else
    echo "SKIP openapi live checks: needs \$CLEARBOX and root"
fi

cd "$dir" && node check.mjs "$here/docs/openapi.yaml" $base
