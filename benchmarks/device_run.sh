#!/usr/bin/env bash
# The lent GPU's one command, on a bare copy of this repository:
#
#   benchmarks/device_run.sh OUTDIR [--smoke]
#
# 1. installs the wheels carried beside the code (.whl/, made by
#    `make device-payload`) with pip --no-index --no-deps --target: nothing is
#    fetched, nothing the image has is replaced;
# 2. runs each section of benchmarks/device_check.py as its own process under
#    `timeout` with its budget (SECTION_BUDGET_S there; 9.5 min in all), nin_jax
#    imported from this checkout (PYTHONPATH) and Fashion-MNIST read from the
#    carried IDX files (.data/fashion-mnist);
# 3. leaves OUTDIR/<section>.json as each section goes (a section cut off by
#    its budget keeps the rows it finished, or says it timed out),
#    OUTDIR/summary.json at the end, and this script's log in OUTDIR/device_run.log.
# Exit status 0 when every section completed (a skipped one counts: it says why).
#
# Environment: PYTHON (default python3), NIN_SITE (where the wheels go,
# default /tmp/nin_site), NIN_IDX_DIR (default .data/fashion-mnist).
set -uo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 OUTDIR [--smoke]" >&2
  exit 2
fi
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "error: cannot create $1" >&2; exit 2; }
shift
SMOKE=()
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=(--smoke) ;;
    *) echo "error: unknown argument $arg (usage: $0 OUTDIR [--smoke])" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${NIN_SITE:-/tmp/nin_site}
IDX_DIR=${NIN_IDX_DIR:-.data/fashion-mnist}
exec > >(tee -a "$OUTDIR/device_run.log") 2>&1
start=$(date +%s)
echo "device_run: $(date -u '+%F %T UTC') on $(hostname), $($PYTHON -V 2>&1), out $OUTDIR ${SMOKE[*]}"

# The sections, in order, and their budgets: `install` (this script's own step) first.
declare -A BUDGET
SECTIONS=()
while read -r name seconds; do
  BUDGET[$name]=$seconds
  [ "$name" = install ] || SECTIONS+=("$name")
done < <($PYTHON benchmarks/device_check.py --budgets)
[ -n "${BUDGET[install]:-}" ] || { echo "error: device_check.py --budgets failed"; exit 1; }

# The carried wheels: only these, only from here, beside (not over) the image's packages.
wheels=(.whl/*.whl)
if [ -e "${wheels[0]}" ]; then
  echo "installing ${#wheels[@]} carried wheel(s): ${wheels[*]##*/}"
  timeout "${BUDGET[install]}" "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
    || { echo "error: installing the carried wheels failed"; exit 1; }
else
  echo "no .whl/ folder: using the packages already installed"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

failed=()
for section in "${SECTIONS[@]}"; do
  budget=${BUDGET[$section]}
  echo "== $section (budget ${budget} s)"
  t0=$(date +%s)
  timeout -k 10 "$budget" "$PYTHON" benchmarks/device_check.py --section "$section" \
      --output_dir "$OUTDIR" --idx_dir "$IDX_DIR" "${SMOKE[@]}"
  code=$?
  took=$(( $(date +%s) - t0 ))
  if [ $code -eq 0 ]; then
    echo "== $section done in ${took} s"
    continue
  fi
  failed+=("$section")
  if [ $code -eq 124 ] || [ $code -eq 137 ]; then
    echo "== $section: stopped at its budget of ${budget} s (rows so far are kept)"
  else
    echo "== $section: failed with exit status $code after ${took} s"
  fi
  "$PYTHON" - "$OUTDIR/$section.json" "$section" "$budget" "$code" "$took" <<'EOF'
import json, os, sys
path, section, budget, code, took = sys.argv[1:]
record = {'section': section, 'rows': []}
if os.path.exists(path):
  with open(path) as f:
    record = json.load(f)
record.update(complete=False, exit_status=int(code), wall_s=int(took), budget_s=int(budget),
              timed_out=int(code) in (124, 137))
with open(path, 'w') as f:
  json.dump(record, f, indent=2)
EOF
done

total=$(( $(date +%s) - start ))
"$PYTHON" - "$OUTDIR" "$total" "${failed[*]:-}" "${SECTIONS[*]}" <<'EOF'
import json, os, sys
outdir, total, failed, sections = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
summary = {'total_s': total, 'incomplete': failed, 'sections': {}}
for name in sections.split():
  path = os.path.join(outdir, f'{name}.json')
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
    summary['sections'][name] = {k: record.get(k) for k in (
        'complete', 'elapsed_s', 'budget_s', 'skipped', 'timed_out', 'tensorflow_imported')}
with open(os.path.join(outdir, 'summary.json'), 'w') as f:
  json.dump(summary, f, indent=2)
print(json.dumps(summary))
EOF
echo "device_run: done in ${total} s; incomplete: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
