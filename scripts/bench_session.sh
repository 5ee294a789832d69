# Sourced at the top of each benchmark script (after `set -euo pipefail`).
# The script re-runs itself in a session of its own, so that its scheduler
# autogroup can be given the same priority as its processes (with autogroups,
# nice values count only inside a session). Then: NICE (default -19; 0 when
# not allowed, i.e. not root) for the session and every process the script
# starts, and LABEL (default: the git commit) for wisp-load's records.
if [ -z "${WISP_BENCH_SETSID:-}" ]; then
  WISP_BENCH_SETSID=1 exec setsid --wait "$0" "$@"
fi
NICE=${NICE:--19}
if ! nice -n "$NICE" true 2>/dev/null; then NICE=0; fi
echo "$NICE" > /proc/self/autogroup 2>/dev/null || true
LABEL=${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
