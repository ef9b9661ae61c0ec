# Shared by the vm/ scripts (sourced, never run). Paths, errors, the kernel
# table and a private apt configuration that never touches the host's apt.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=$(dirname "$VM_DIR")
# Everything vm/ writes on the host lives here (git-ignored with target/).
VM_CACHE=${PELAGOS_VM_CACHE:-$PROJECT/target/vm}

# Exit status for "the VM (not the command) failed", as `pelagos-net run` uses it.
VM_FAIL=125

vm_die() {
  echo "${VM_PROG:-vm}: $*" >&2
  exit "$VM_FAIL"
}

vm_say() {
  echo "${VM_PROG:-vm}: $*" >&2
}

# Kernel series -> Debian suite whose linux-image-amd64 provides it.
vm_suite_of() {
  case "$1" in
    5.10) echo bullseye ;;
    6.1) echo bookworm ;;
    6.12) echo trixie ;;
    *) return 1 ;;
  esac
}
VM_KERNELS="5.10 (Debian 11), 6.1 (Debian 12, the default), 6.12 (Debian 13)"

# The Debian mirror the host's apt already uses (so proxies and local
# mirrors keep working), else deb.debian.org. $1: debian | debian-security.
vm_mirror() {
  local kind=$1 env_var uri
  if [ "$kind" = debian ]; then env_var=PELAGOS_VM_MIRROR; else env_var=PELAGOS_VM_SECURITY_MIRROR; fi
  if [ -n "${!env_var:-}" ]; then
    echo "${!env_var}"
    return
  fi
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE "(https?|file)://[^ ]+/$kind/?( |$)" | head -1 | tr -d ' ')
  echo "${uri:-http://deb.debian.org/$kind}"
}

# apt-get / apt-cache against a private state under the cache, for one
# Debian suite: the host's sources, lists, pins and dpkg status stay untouched
# and no root is needed. Sets the array APT_OPTS.
vm_apt_config() {
  local suite=$1 dir="$VM_CACHE/apt/$1" keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$keyring" ] || vm_die "no Debian archive keyring at $keyring: install it (sudo apt-get install debian-archive-keyring)"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  local main sec
  main=$(vm_mirror debian)
  sec=$(vm_mirror debian-security)
  {
    echo "deb [signed-by=$keyring] $main $suite main"
    echo "deb [signed-by=$keyring] $main $suite-updates main"
    echo "deb [signed-by=$keyring] $sec $suite-security main"
  } >"$dir/sources.list"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Dir::State::status=/dev/null
    -o APT::Architecture=amd64 -o APT::Architectures=amd64
    -o "APT::Sandbox::User=$(id -un)" -o Debug::NoLocking=1
  )
}

# Where the unpacked kernel of a series lives ($VM_CACHE/kernels/<series>/current).
vm_kernel_dir() {
  echo "$VM_CACHE/kernels/$1/current"
}

# A statically linked busybox: the host's (busybox-static), else the one
# fetch-kernel unpacked into the cache. Empty when there is none.
vm_busybox() {
  local b
  for b in /usr/bin/busybox /bin/busybox "$VM_CACHE/busybox/bin/busybox"; do
    if [ -x "$b" ] && ! LC_ALL=C ldd "$b" >/dev/null 2>&1; then
      echo "$b"
      return
    fi
  done
}
