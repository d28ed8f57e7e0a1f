#!/usr/bin/env bash
# Checks the include boundaries between the parts of the tree (issue #16): no part includes
# another part's headers. Lists every offending #include (file:line) and exits 1.
#
#   services/S/**   its own iot/S/..., iot/common/..., any service's generated gRPC/protobuf
#                   contract (iot/*/v1/*.pb.h), and the libraries' headers (below)
#   broker/**, common/**, tools/**
#                   iot/common/..., contracts, libraries (and iot/testing/... in their tests,
#                   bench and tools)
#   libraries       the thing-model library (target thing_model_validation: product model,
#                   validator, model cache, Alibaba TSL conversion) — its headers still sit in
#                   services/thing_model/include/iot/thing_model/ (issue #16 item 1 moves it to
#                   libs/); only those four are open to other parts, never the thing-model
#                   service's own headers (service_spec.h, pg_registry.h, ...)
#
# tests/ and fuzz/ are harnesses of the parts they test and may include their headers.
#
# Usage: scripts/check-boundaries.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

library_headers='iot/thing_model/(product_model|validator|model_cache|alink_tsl)\.h'
contract='iot/[a-z_]+/v1/[a-z_]+(\.grpc)?\.pb\.h'

# allowed_for PATH: the extended regex of the iot/... headers a file at PATH may include.
allowed_for() {
  local path=$1 own=""
  case "$path" in
    services/*)
      own=${path#services/}
      own="|iot/${own%%/*}/.*"
      ;;
  esac
  local testing=""
  case "$path" in
    */tests/* | */bench/* | tools/*) testing="|iot/testing/.*" ;;
  esac
  printf '^(iot/common/.*|%s|%s%s%s)$' "$contract" "$library_headers" "$own" "$testing"
}

checked=0
bad=()
while IFS= read -r -d '' file; do
  checked=$((checked + 1))
  allowed=$(allowed_for "$file")
  while IFS=: read -r line header; do
    [[ "$header" =~ $allowed ]] || bad+=("$file:$line: #include \"$header\"")
  done < <(grep -nE '^#include "iot/' "$file" | sed -E 's/^([0-9]+):#include "([^"]+)".*/\1:\2/')
done < <(git ls-files -z -- 'services/*' 'broker/*' 'common/*' 'tools/*' |
  grep -zE '\.(h|hpp|cpp|cc)$')

if ((${#bad[@]})); then
  printf '%s\n' "check-boundaries: ${#bad[@]} include(s) across part boundaries:" "${bad[@]/#/  }" >&2
  echo "a part may include its own headers, iot/common, the gRPC contracts and the libraries" >&2
  exit 1
fi
iot::info "check-boundaries: $checked files OK"
