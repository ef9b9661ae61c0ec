# supervise TIMEOUT QEMU...: runs the VM (sourced by vm/run, which set $run)
# and exits with the guest command's status from $run/rc, or 125 with the
# reason the VM gave none: timeout, kernel panic, a guest stage that failed,
# QEMU itself failing. Ctrl-C and SIGTERM stop the VM; vm/run then exits
# 128+signal.

# The reason, from the console log and how QEMU ended.
vm_failure() {
  local qrc=$1 timeout=$2 log=$run/console.log line
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "the guest did not finish within ${timeout}s and was killed (timeout; --timeout sets it)"
  elif line=$(grep -a -m1 'Kernel panic' "$log"); then
    echo "the guest kernel panicked: ${line#*Kernel panic - }"
  elif line=$(grep -a -m1 '^VMRUN-ERROR: ' "$log"); then
    echo "${line#VMRUN-ERROR: }"
  elif [ "$qrc" != 0 ]; then
    echo "qemu-system-x86_64 failed (exit $qrc)"
  else
    echo "the guest stopped without reporting the command's exit status"
  fi
}

supervise() {
  local timeout=$1 qpid qrc signal="" catpid fd
  shift
  cat "$run/err.out" >&2 &
  catpid=$!
  timeout -k 5 "$timeout" "$@" </dev/null &
  qpid=$!
  [ "$verbose" = 1 ] && tail -n +1 -F --pid="$qpid" "$run/console.log" >&2 2>/dev/null &
  for s in INT TERM HUP; do
    # shellcheck disable=SC2064
    trap "signal=$s; kill -TERM $qpid 2>/dev/null" "$s"
  done
  set +e
  wait "$qpid"
  qrc=$?
  while [ -n "$signal" ] && kill -0 "$qpid" 2>/dev/null; do
    wait "$qpid"
    qrc=$?
  done
  # Let cat see the end of the FIFO even if QEMU never opened it.
  exec {fd}<>"$run/err.out"
  exec {fd}>&-
  wait "$catpid"
  [ "$verbose" = 1 ] && sleep 1.1 # the console follower's last read (tail --pid polls each second)
  set -e
  if [ -n "$signal" ]; then
    vm_say "stopped by SIG$signal"
    exit $((128 + $(kill -l "$signal")))
  fi
  if [ -s "$run/rc" ]; then
    exit "$(cat "$run/rc")"
  fi
  vm_say "$(vm_failure "$qrc" "$timeout")"
  if [ -s "$run/console.log" ]; then
    echo "--- last lines of the guest console:" >&2
    tail -n 15 "$run/console.log" | tr -d '\r' >&2
  fi
  exit "$VM_FAIL"
}
