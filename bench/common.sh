# Set-up shared by the bench scripts (sourced, not run): the repository
# root in $root, a scratch directory $work removed on exit, and a release
# berth in $berth whose data directory lives in $work.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth-target}"
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked -p berth -q
berth="$CARGO_TARGET_DIR/release/berth"
export BERTH_HOME="$work/home"
