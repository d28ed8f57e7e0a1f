#!/usr/bin/env bash
# Runs clang-tidy (the repo's .clang-tidy) on the C++ files changed since a base ref, or on the
# files given, with the build's compile_commands.json. Prints the findings and exits 1 when there
# are any (or when clang-tidy cannot parse a file), 0 when there are none.
#
# Usage: scripts/check-tidy.sh [--base REF] [FILE...]
#        scripts/check-tidy.sh --all
#
#   (no arguments)  the files changed since the merge base of HEAD and the base (committed,
#                   staged, unstaged and untracked). The base is --base REF, else $IOT_TIDY_BASE,
#                   else origin/main, else main. When HEAD is that merge base (a run on main
#                   itself, as CI's clean clone of main) or no base ref exists (a clone of one
#                   other branch), the files of the last commit (HEAD~1..HEAD) and the working
#                   tree's changes; a shallow clone without HEAD's parent checks everything.
#   FILE...         exactly these files
#   --all           every tracked C++ file
#
# Generated code (protobuf/gRPC, under the build dir) is never checked. A changed header is
# checked through a translation unit that includes it (its .cpp of the same name if there is one,
# else the first source that includes it); only findings in the selected files are reported.
# The fuzz targets (fuzz/, built only by preset fuzz) are not in build/'s compile_commands.json:
# IOT_BUILD_DIR=build-fuzz checks them.
#
# Environment:
#   IOT_BUILD_DIR    build dir holding compile_commands.json [build] (`cmake --preset ci` or
#                    `dev` writes it; the generated proto headers must exist: build once)
#   IOT_CLANG_TIDY   clang-tidy binary [/usr/bin/clang-tidy: Debian's clang-tidy-14]
#   IOT_TIDY_JOBS    clang-tidy processes in parallel [2]
#   IOT_TIDY_BASE    the base ref when --base is not given (e.g. the commit a CI push started from)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IOT_REPO_ROOT"

base=""
all=0
files=()
while (($#)); do
  case "$1" in
    --base)
      (($# >= 2)) || iot::die "--base needs a ref"
      base=$2
      shift 2
      ;;
    --all)
      all=1
      shift
      ;;
    -h | --help)
      iot::usage "$0"
      exit 0
      ;;
    -*) iot::die "unknown option $1 (see --help)" ;;
    *)
      files+=("$1")
      shift
      ;;
  esac
done

tidy=${IOT_CLANG_TIDY:-/usr/bin/clang-tidy}
command -v "$tidy" >/dev/null || iot::die "$tidy not found (Debian package clang-tidy)"
build_dir=${IOT_BUILD_DIR:-build}
db=$build_dir/compile_commands.json
[[ -f $db ]] || iot::die "$db missing: configure first (cmake --preset ci)"
jobs=${IOT_TIDY_JOBS:-2}

is_cxx() { [[ $1 =~ \.(h|hpp|cpp|cc)$ ]]; }
is_generated() { [[ $1 =~ (^|/)build[^/]*/ || $1 =~ \.pb\.(h|cc)$ ]]; }

if ((all)); then
  mapfile -t files < <(git ls-files -- '*.h' '*.hpp' '*.cpp' '*.cc')
elif ((${#files[@]} == 0)); then
  base=${base:-${IOT_TIDY_BASE:-}}
  if [[ -z $base ]]; then
    for ref in origin/main main; do
      if git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
        base=$ref
        break
      fi
    done
  fi
  since=""
  if [[ -n $base ]]; then
    since=$(git merge-base "$base" HEAD) || iot::die "no merge base of $base and HEAD"
  fi
  if [[ -z $since || $since == "$(git rev-parse HEAD)" ]]; then
    # Nothing ahead of the base (or no base): what the last commit changed.
    if since=$(git rev-parse -q --verify 'HEAD~1^{commit}'); then
      base="HEAD~1 (${base:-no origin/main or main}${base:+ is HEAD})"
    else
      iot::warn "check-tidy: HEAD has no parent here (shallow clone?): checking every file"
      all=1
    fi
  fi
  if ((all)); then
    mapfile -t files < <(git ls-files -- '*.h' '*.hpp' '*.cpp' '*.cc')
  else
    mapfile -t files < <({
      git diff --name-only --diff-filter=d "$since" --
      git ls-files --others --exclude-standard
    } | sort -u)
  fi
fi

selected=()
for f in "${files[@]}"; do
  f=${f#./}
  if is_cxx "$f" && ! is_generated "$f" && [[ -f $f ]]; then
    selected+=("$f")
  fi
done
if ((${#selected[@]} == 0)); then
  iot::info "check-tidy: no C++ files to check${base:+ (changed since $base)}"
  exit 0
fi

# The sources compile_commands.json knows, relative to the repo, generated ones left out.
mapfile -t known < <(/usr/bin/python3 - "$db" "$IOT_REPO_ROOT" <<'EOF'
import json, os, sys
root = os.path.realpath(sys.argv[2])
for entry in json.load(open(sys.argv[1])):
    path = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
    if path.startswith(root + "/"):
        print(os.path.relpath(path, root))
EOF
)
declare -A in_db=()
for f in "${known[@]}"; do
  is_generated "$f" || in_db[$f]=1
done

# The header's include path: what follows include/ (iot/...), else its file name.
include_path() {
  local include=${1#*include/}
  [[ $include == "$1" ]] && include=${1##*/}
  printf '%s' "$include"
}

# The first source of compile_commands.json that includes header $1, directly or through other
# headers (breadth first); empty when none does.
includer_unit() {
  local -a queue=("$1") next=()
  local -A seen=(["$1"]=1)
  local h k
  while ((${#queue[@]})); do
    next=()
    for h in "${queue[@]}"; do
      while IFS= read -r k; do
        if [[ -n ${in_db[$k]:-} ]]; then
          printf '%s' "$k"
          return
        fi
        if [[ $k =~ \.(h|hpp)$ && -z ${seen[$k]:-} ]]; then
          seen[$k]=1
          next+=("$k")
        fi
      done < <(printf '%s\n' "${tracked[@]}" | xargs grep -lF "$(include_path "$h")\"" | sort || true)
    done
    queue=("${next[@]}")
  done
}

# A translation unit for each selected file: itself, or one that includes the header.
mapfile -t tracked < <(git ls-files -- '*.h' '*.hpp' '*.cpp' '*.cc')
# A translation unit for each selected file: itself, or one that includes the header.
declare -A units=()
unchecked=()
for f in "${selected[@]}"; do
  if [[ -n ${in_db[$f]:-} ]]; then
    units[$f]=1
    continue
  fi
  # --all: every source is a unit already, and they reach the headers.
  if ((!all)) && [[ $f =~ \.(h|hpp)$ ]]; then
    name=${f##*/}
    stem=${name%.*}
    unit=""
    for k in "${!in_db[@]}"; do
      if [[ $k =~ (^|/)$stem\.(cpp|cc)$ ]] && grep -qF "$name\"" "$k"; then
        unit=$k
        break
      fi
    done
    if [[ -z $unit ]]; then
      unit=$(includer_unit "$f")
    fi
    if [[ -n $unit ]]; then
      units[$unit]=1
      continue
    fi
  fi
  ((all)) && [[ $f =~ \.(h|hpp)$ ]] && continue
  unchecked+=("$f")
done
if ((${#unchecked[@]})); then
  iot::warn "check-tidy: in no translation unit of $db, not checked: ${unchecked[*]}"
fi
if ((${#units[@]} == 0)); then
  iot::info "check-tidy: nothing to run"
  exit 0
fi

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT
start=$SECONDS
iot::info "check-tidy: ${#selected[@]} files, ${#units[@]} translation units, $jobs jobs ($("$tidy" --version | grep -o 'version [0-9.]*'))"
# Every repo header is analysed (findings outside the selected files are dropped below).
# shellcheck disable=SC2016  # a sed expression, not a shell one
header_filter="^$(printf '%s' "$IOT_REPO_ROOT" | sed 's/[.[\*^$()+?{|]/\\&/g')/(common|services|libs|tools|broker|tests)/"
# shellcheck disable=SC2016  # expanded by the inner sh, from its arguments
printf '%s\0' "${!units[@]}" | sort -z |
  xargs -0 -P "$jobs" -I{} sh -c '
    out="$1/$(printf "%s" "$2" | tr / _).log"
    "$3" -p "$4" --quiet --header-filter="$5" "$2" >"$out" 2>&1 || echo "$2" >>"$1/failed"
  ' _ "$out_dir" {} "$tidy" "$build_dir" "$header_filter"

# Keep the diagnostics (with their notes and source lines) located in a selected file; the
# same finding in a header reached through several units is printed once.
report=$out_dir/report
/usr/bin/python3 - "$IOT_REPO_ROOT" "$out_dir" "${selected[@]}" >"$report" <<'EOF'
import glob, os, re, sys
root, out_dir, selected = os.path.realpath(sys.argv[1]), sys.argv[2], set(sys.argv[3:])
head = re.compile(r"^(/[^:]+):(\d+):(\d+): (warning|error): ")
seen, blocks = set(), []
for log in sorted(glob.glob(os.path.join(out_dir, "*.log"))):
    block, keep = [], False
    for line in open(log, errors="replace").read().splitlines() + [""]:
        m = head.match(line)
        if m or line == "" or re.match(r"^\d+ (warning|error)s? generated", line):
            if block and keep and block[0] not in seen:
                seen.add(block[0])
                blocks.append("\n".join(block))
            block, keep = [], False
            if m:
                path = os.path.relpath(os.path.realpath(m.group(1)), root)
                block, keep = [line], path in selected
            continue
        if block:
            block.append(line)
print("\n".join(blocks))
EOF
findings=$(grep -cE '^/[^:]+:[0-9]+:[0-9]+: (warning|error): ' "$report" || true)
elapsed=$((SECONDS - start))
if [[ -s $out_dir/failed ]]; then
  # clang-tidy exits non-zero on compile errors; those show in the report as `error:` lines.
  if ((findings == 0)); then
    cat "$out_dir"/*.log >&2
    iot::die "check-tidy: clang-tidy failed on: $(tr '\n' ' ' <"$out_dir/failed")"
  fi
fi
if ((findings > 0)); then
  cat "$report"
  echo "check-tidy: $findings findings in ${#selected[@]} files (${elapsed}s)" >&2
  grep -oE '\[[a-z0-9.-]+(,[a-z0-9.-]+)*\]$' "$report" | sort | uniq -c | sort -rn >&2
  exit 1
fi
iot::info "check-tidy: ${#selected[@]} files OK (${elapsed}s)"
