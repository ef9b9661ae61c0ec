# check_row ROW PROBE_OUTPUT VMRUN_EXIT: compares one row of
# vm/hostile-matrix.md with what vm/lib/matrix-probe printed in the guest.
# Prints the verdict ("ok", "known bug" or "FAIL") and then one line per
# difference. Sourced by vm/hostile-matrix.

# The probe's value for KEY.
probe() {
  sed -n "s/^$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')=//p" "$probe_out" | head -1
}

# The interface only MODE gives the command (see the table's preamble).
iface_of() {
  case "$1" in
    slirp4netns) echo tap0 ;;
    pasta) echo vmnet0 ;;
    bridge) echo eth0 ;;
    loopback) echo lo ;;
  esac
}

# Appends to $diffs what differs from the doctor cell ("NAME: STATUS") and the
# fix cell (text in backticks).
check_doctor() {
  local name=${1%%: *} status=${1#*: } fix=${2//\`/} got
  got=$(probe "check.$name")
  [ -n "$got" ] || got="pass or info, without a fix|"
  [ "${got%%|*}" = "$status" ] || diffs+=("doctor's '$name' check: expected $status, got ${got%%|*}")
  [[ "${got#*|}" == *"$fix"* ]] || diffs+=("doctor's '$name' fix: expected it to contain '$fix', got '${got#*|}'")
}

# The auto cell: "exit 125", "MODE" or "MODE, degraded".
check_auto() {
  local want=$1 mode exit ifaces warning
  exit=$(probe auto.exit) mode=$(probe auto.mode) ifaces=$(probe auto.ifaces) warning=$(probe auto.warning)
  if [ "$want" = "exit 125" ]; then
    [ "$exit" = 125 ] || diffs+=("run --network auto: expected exit 125, got $exit in mode '$mode'")
    return
  fi
  local want_mode=${want%%,*}
  [ "$exit" = 0 ] || diffs+=("run --network auto: expected exit 0, got $exit ($warning)")
  [ "$mode" = "$want_mode" ] || diffs+=("run --network auto: expected mode $want_mode, got '$mode'")
  if [ "$want_mode" = loopback ]; then
    [ "$ifaces" = lo ] || diffs+=("run --network auto: loopback must show only lo, the command saw '$ifaces'")
  else
    [[ ",$ifaces," == *",$(iface_of "$want_mode"),"* ]] ||
      diffs+=("run --network auto: $want_mode must show $(iface_of "$want_mode"), the command saw '$ifaces'")
  fi
  if [[ "$want" == *degraded ]]; then
    [[ "$warning" == *"degraded network"* ]] || diffs+=("run --network auto: expected a 'degraded network' warning, got '$warning'")
  else
    [ -z "$warning" ] || diffs+=("run --network auto: expected no warning, got '$warning'")
  fi
}

# The strict cell: "runs" or "exit 125: TEXT".
check_strict() {
  local want=$1 exit error
  exit=$(probe strict.exit) error=$(probe strict.error)
  if [ "$want" = runs ]; then
    [ "$exit" = 0 ] || diffs+=("--fallback strict: expected to run, got exit $exit ($error)")
  else
    [ "$exit" = 125 ] || diffs+=("--fallback strict: expected exit 125, got $exit")
    [[ "$error" == *"${want#exit 125: }"* ]] || diffs+=("--fallback strict: expected '${want#exit 125: }', got '$error'")
  fi
}

check_row() {
  local row=$1 vm_exit=$3 cells
  probe_out=$2
  IFS='|' read -ra cells <<<"$row"
  local i
  for i in "${!cells[@]}"; do cells[$i]=$(echo "${cells[$i]}" | sed 's/^ *//; s/ *$//'); done
  # cells: [1] as [2] hostile [3] doctor [4] fix [5] auto [6] strict [7] notes
  diffs=()
  if [ "$vm_exit" != 0 ] || [ -z "$(probe doctor.exit)" ]; then
    echo "FAIL"
    echo "the VM gave no result (vm/run exited $vm_exit)"
    return
  fi
  check_doctor "${cells[3]}" "${cells[4]}"
  check_auto "${cells[5]}"
  check_strict "${cells[6]}"
  if [[ "${cells[7]}" == "KNOWN BUG"* ]]; then
    if [ ${#diffs[@]} = 0 ]; then
      echo "FAIL"
      echo "this row now passes: delete its KNOWN BUG note (here and in README.md)"
    else
      echo "known bug"
      printf '%s\n' "${cells[7]}" "${diffs[@]}"
    fi
  elif [ ${#diffs[@]} = 0 ]; then
    echo "ok"
  else
    echo "FAIL"
    printf '%s\n' "${diffs[@]}"
  fi
}
