#!/usr/bin/env bash
# Checks that every tracked C++ file (*.h *.hpp *.cpp *.cc, outside build dirs) is formatted by
# .clang-format. Lists the files that are not and exits 1; --fix formats them in place instead.
#
# Usage: scripts/check-format.sh [--fix]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

fix=0
case "${1:-}" in
  "") ;;
  --fix) fix=1 ;;
  *) iot::die "usage: scripts/check-format.sh [--fix]" ;;
esac

command -v clang-format >/dev/null || iot::die "clang-format not found (run scripts/install-deps.sh)"

mapfile -d '' files < <(git ls-files -z -- '*.h' '*.hpp' '*.cpp' '*.cc' |
  grep -zEv '^(build|build-[^/]*|\.state|\.tools|node_modules)/')
if ((${#files[@]} == 0)); then
  iot::info "check-format: no C++ files tracked"
  exit 0
fi

if ((fix)); then
  clang-format -i -- "${files[@]}"
  iot::info "check-format: formatted ${#files[@]} files"
  exit 0
fi

bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue # deleted in the work tree, not yet committed
  clang-format --dry-run -Werror -- "$f" >/dev/null 2>&1 || bad+=("$f")
done

if ((${#bad[@]})); then
  printf '%s\n' "check-format: ${#bad[@]} of ${#files[@]} files are not clang-formatted:" "${bad[@]/#/  }" >&2
  echo "fix with: scripts/check-format.sh --fix   (or clang-format -i FILE...)" >&2
  exit 1
fi
iot::info "check-format: ${#files[@]} files OK ($(clang-format --version | grep -o 'version [0-9.]*'))"
