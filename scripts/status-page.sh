#!/usr/bin/env bash
# Compresses the status page the binary carries: src/gateway/ops/status.html -> status.html.gz.
# Run it after editing status.html (a unit test fails while the two differ). `-n` leaves the
# name and time out, so the same page gives the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
gzip -9 -n -c src/gateway/ops/status.html > src/gateway/ops/status.html.gz
echo "status.html: $(wc -c < src/gateway/ops/status.html) bytes, gzip: $(wc -c < src/gateway/ops/status.html.gz) bytes"
