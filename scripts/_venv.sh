# Shared by scripts/demo and scripts/test: create .venv (or $SIMRECORDER_VENV) and
# install this checkout into it with the extras given as "$1" (e.g. "all,test").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIMRECORDER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
target="$ROOT"
if [ -n "$extras" ]; then target="$ROOT[$extras]"; fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
