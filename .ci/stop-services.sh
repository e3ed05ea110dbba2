#!/usr/bin/env bash
#
# .ci/stop-services.sh -- stop every server that .ci/services.sh started in
# ${PENCHANT_CI_DIR:-/tmp/penchant-ci} and remove their throwaway data.
# Safe to run when nothing is running. CI does not need it (the machine is
# discarded); it is for developers.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/services.sh" stop
