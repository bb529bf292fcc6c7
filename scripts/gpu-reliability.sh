#!/usr/bin/env bash
# The reliability suite of issue 17 (item 10) on the GPU machine: compute-sanitizer
# over every kernel family, out of memory, dispose while in flight, index arithmetic
# past 2^31 elements, a soak of at least 10 minutes; then a report,
# bench/results/reliability.<card>.md (+ .json), with every figure.
#
#   scripts/gpu-reliability.sh PHASE... [options]
#
# Phases (run in the order given; each writes its own JSON into the results dir):
#   sanitizer     workload natively, then under each tool (--tools, default all four)
#   oom           fill the card, a call gets OutOfMemoryError, free, recover (needs the GPU to itself)
#   dispose       inputs disposed while calls are in flight, allocator churning
#   index         B*H*S*D > 2^31 with a sliding-window mask, rows vs a float64 reference
#   soak          the soak in the foreground (--minutes, default 10.5)
#   soak-start    the soak detached (setsid), so it outlives this device call
#   soak-wait     wait for a detached soak (at most --max-wait seconds, default 540)
#   report        merge the results into the Markdown report (no GPU needed)
#   all           sanitizer dispose index soak oom report (no time limit per command)
#   call1, call2, call3   the suite in device calls of at most 600 s (see below)
# Options:
#   --results DIR      results dir (default $FLEXATTN_RELIABILITY_DIR or /tmp/flexattn-reliability;
#                      it persists across device calls while the machine stays warm, and is
#                      mirrored into $OUT/reliability after every phase)
#   --device cpu       degraded local run on the CPU backend (what can run without a GPU)
#   --dry-run          only load every script and parse its arguments
#   --minutes M        soak length (default 10.5)       --tools LIST   sanitizer tools
#   --tool-timeout S   per sanitizer tool (default 240) --max-wait S  for soak-wait
#   --slow-size S      lengths under racecheck/initcheck: small (default) or full
#   --limit S          seconds a callN plan may take (default 590)
#   --from DIR         extra results dir for report (repeatable), e.g. files a device call sent back
#
# In device calls (carry [".device", "build/Release/flexattn.node", "dist"], each ≤ 600 s,
# the next one within the machine's idle window so /tmp survives):
#   call1: soak-start, index, dispose, sanitizer (memcheck, synccheck) in the time left
#   call2: sanitizer (racecheck, initcheck), soak-wait (bounded), oom once the soak is over, report
#   call3: only if the report says INCOMPLETE: the sanitizer tools still missing, soak-wait, oom, report
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 && [ -f .device/boot.sh ]; then source .device/boot.sh; fi

PHASES=() ; COMMON=() ; FROM=()
MINUTES=10.5 ; TOOLS="" ; TOOL_TIMEOUT=240 ; MAX_WAIT=540 ; DRY=0 ; SLOW_SIZE=small ; LIMIT=590
RESULTS=${FLEXATTN_RELIABILITY_DIR:-/tmp/flexattn-reliability}
while [ $# -gt 0 ]; do
  case "$1" in
    --results) RESULTS=$2; shift 2 ;;
    --device) COMMON+=(--device "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --tool-timeout) TOOL_TIMEOUT=$2; shift 2 ;;
    --max-wait) MAX_WAIT=$2; shift 2 ;;
    --slow-size) SLOW_SIZE=$2; shift 2 ;;
    --limit) LIMIT=$2; shift 2 ;;
    --from) FROM+=(--from "$2"); shift 2 ;;
    -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-reliability: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) PHASES+=("$1"); shift ;;
  esac
done
[ ${#PHASES[@]} -gt 0 ] || { echo "gpu-reliability: name at least one phase (see --help)" >&2; exit 2; }
mkdir -p "$RESULTS"
export FLEXATTN_RELIABILITY_DIR=$RESULTS
export FLEXATTN_CACHE_DIR=${FLEXATTN_CACHE_DIR:-$RESULTS/kernel-cache}
COMMON+=(--results "$RESULTS")
START=$SECONDS
STATUS=0
R=scripts/reliability

mirror() { # results into $OUT (a device call sends back only what is there); logs truncated to stay under its limits
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT/reliability"
  cp "$RESULTS"/*.json "$OUT/reliability/" 2>/dev/null
  for f in "$RESULTS"/*.log "$RESULTS"/*.out; do [ -f "$f" ] && head -c 2000000 "$f" > "$OUT/reliability/$(basename "$f")"; done
  return 0
}

soak_pid() { [ -f "$RESULTS/soak.pid" ] && kill -0 "$(cat "$RESULTS/soak.pid")" 2>/dev/null && cat "$RESULTS/soak.pid"; }

phase() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name (at +$((SECONDS - START)) s)"
  if [ $DRY = 1 ]; then "$@" --help >/dev/null || { echo "dry run: $name failed to load" >&2; STATUS=1; }; return; fi
  "$@"; local rc=$?
  [ $rc = 0 ] || STATUS=1
  echo "=== $name: exit $rc, $((SECONDS - t0)) s"
  mirror
}

soak_start() {
  if [ $DRY = 1 ]; then node $R/soak.mjs --help >/dev/null || STATUS=1; return; fi
  if pid=$(soak_pid); then echo "soak already running (pid $pid)"; return; fi
  rm -f "$RESULTS/soak.json"
  # setsid: its own session, so the end of this device call's command does not take it down.
  setsid nohup node $R/soak.mjs "${COMMON[@]}" --minutes "$MINUTES" > "$RESULTS/soak.log" 2>&1 < /dev/null &
  echo $! > "$RESULTS/soak.pid"
  echo "soak started (pid $!, $MINUTES min); progress in $RESULTS/soak.json"
  sleep 5; mirror
}

soak_wait() { # seconds
  local limit=$1 t0=$SECONDS
  [ $DRY = 1 ] && return 0
  while pid=$(soak_pid); do
    if [ $((SECONDS - t0)) -ge "$limit" ]; then echo "soak still running after waiting ${limit} s (pid $pid)"; mirror; return 1; fi
    sleep 10
    [ $(((SECONDS - t0) % 60)) -lt 10 ] && node -e "const s=require('$RESULTS/soak.json');console.log('soak: '+s.elapsedMinutes.toFixed(1)+' min, '+s.completed+' calls, '+s.failures+' failures, '+s.errors+' errors')" 2>/dev/null
  done
  echo "soak finished"; tail -2 "$RESULTS/soak.log" 2>/dev/null; mirror
  return 0
}

# sanitizer [TOOLS] [extra args]: tools default to all four (or --tools)
sanitizer() { local t=$1; shift; phase "sanitizer ${t:-all tools}" node $R/sanitizer.mjs "${COMMON[@]}" --reuse-native --tool-timeout "$TOOL_TIMEOUT" --slow-size "$SLOW_SIZE" ${t:+--tools "$t"} "$@"; }
left() { echo $((LIMIT - (SECONDS - START))); } # seconds left of this device call
oom() { phase oom node --expose-gc $R/oom.mjs "${COMMON[@]}"; }
report() { phase report node $R/report.mjs --results "$RESULTS" "${FROM[@]}"; }

for p in "${PHASES[@]}"; do
  case "$p" in
    sanitizer) sanitizer "$TOOLS" ;;
    oom) oom ;;
    dispose) phase dispose node --expose-gc $R/dispose.mjs "${COMMON[@]}" ;;
    index) phase index node $R/index.mjs "${COMMON[@]}" ;;
    soak) phase soak node $R/soak.mjs "${COMMON[@]}" --minutes "$MINUTES" ;;
    soak-start) soak_start ;;
    soak-wait) soak_wait "$MAX_WAIT" || STATUS=1 ;;
    report) report ;;
    all) sanitizer "$TOOLS"; phase dispose node --expose-gc $R/dispose.mjs "${COMMON[@]}"; phase index node $R/index.mjs "${COMMON[@]}"
         phase soak node $R/soak.mjs "${COMMON[@]}" --minutes "$MINUTES"; phase oom node --expose-gc $R/oom.mjs "${COMMON[@]}"; report ;;
    # Each call plan stays inside LIMIT (590 s of the 600 s device-call limit): the sanitizer
    # gets a --deadline, and tools it cannot finish are left for the next call.
    call1) soak_start
           phase index node $R/index.mjs "${COMMON[@]}"
           phase dispose node --expose-gc $R/dispose.mjs "${COMMON[@]}"
           sanitizer "${TOOLS:-memcheck,synccheck}" --deadline $(($(left) - 10)) ;;
    call2) sanitizer "${TOOLS:-racecheck,initcheck}" --deadline $(($(left) - 100))
           # the rest: oom (which needs the GPU to itself) once the soak is over, and the report
           if soak_wait $(($(left) - 80)); then oom; else echo "soak still running: run call3 next"; fi
           report ;;
    call3) sanitizer "" --only-missing --deadline $(($(left) - 120))
           if soak_wait $(($(left) - 80)) && [ ! -f "$RESULTS/oom.json" ]; then oom; fi
           report ;;
    *) echo "gpu-reliability: unknown phase $p (see --help)" >&2; exit 2 ;;
  esac
done
mirror
echo "=== done in $((SECONDS - START)) s, exit $STATUS; results in $RESULTS${OUT:+ (mirrored to $OUT/reliability)}"
exit $STATUS
