#!/usr/bin/env bash
# The real-application benchmark: e2e/bench/story.sh with every pull request the demo's three
# services and seeded database (e2e/demo/preview.yaml), each pod taking 10 s to become Ready and
# the seed's pod running 5 s more, as the issue on real applications asks. Prints delivery
# accepted → `success` deployment status. See e2e/bench/README.md.
#
#   e2e/bench/app.sh                          the defaults (5 one after another, 10 at once)
#   e2e/bench/app.sh -- --sequential 3 --burst 5
set -euo pipefail
cd "$(dirname "$0")/../.."
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi
exec e2e/bench/story.sh -- --app --pod-ready-seconds 10 --seed-seconds 5 --sequential 5 --burst 10 ${extra[@]+"${extra[@]}"}
