#!/usr/bin/env bash
# Build the Debian package and install it into an empty folder with dpkg, then check what an
# operations team relies on. Run by .ci/run after the tests, on their debug build:
#
#   dist/check-package.sh              # package the dev build (no second, LTO build)
#   dist/check-package.sh optimized    # package target/optimized (after `cargo build --profile optimized`)
#
# What it covers: the package's files, modes, owners and conffiles as dpkg installs them; the
# maintainer scripts as dpkg runs them (DPKG_ROOT, `--force-script-chrootless`): the system
# user made, the key files made once and kept on reinstall, the unit enabled, state kept on
# removal and deleted on purge; `check-config` of the installed configuration; the installed
# binary started on the installed configuration and key files (paths moved into the folder)
# answering a panel; `--version` against the package version; `systemd-analyze verify` and
# `security` of the unit; the system calls the daemon makes, as an unprivileged user, against
# the unit's SystemCallFilter. What it does not: run the unit under a real systemd (no service
# manager runs here; the readiness, watchdog, journal and reload protocol are tested by
# `cargo test`, tests/it/service.rs), nor resolve dependencies (the folder has no libc6:
# --force-depends).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-dev}
case "$profile" in
    dev) bin=target/debug/meldkamer ;;
    optimized) bin=target/optimized/meldkamer ;;
    *) echo "usage: $0 [dev|optimized]" >&2; exit 2 ;;
esac
out=target/ci-artifacts
mkdir -p "$out"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

work=$(mktemp -d)
# cargo-deb warns that a dev profile is meant for testing: that is what this is.
cargo deb --locked --profile "$profile" --no-build -o "$out/" > "$work/deb.log" 2>&1 || { cat "$work/deb.log"; fail "cargo deb"; }
grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' "$work/deb.log" || true
deb=$(tail -n 1 "$work/deb.log")
[ -f "$deb" ] || fail "no package built"
ok "built $deb"

daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"

# An empty root: dpkg's database and the base accounts (as base-passwd makes them).
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
printf 'root:*::\nnogroup:*::\n' > "$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"

# The maintainer scripts run on this machine (chrootless): whatever they would ask of a
# running systemd goes to stubs, so a developer's own services are never touched. (They ask
# only where /run/systemd/system exists; deb-systemd-helper, which honours DPKG_ROOT, is real.)
mkdir -p "$work/stubs"
for stub in systemctl deb-systemd-invoke; do
    printf '#!/bin/sh\necho "%s $*" >> "%s"\n' "$stub" "$work/stubs.log" > "$work/stubs/$stub"
    chmod 755 "$work/stubs/$stub"
done
dpkg_root() { PATH="$work/stubs:$PATH" dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@"; }
dpkg_root -i "$deb" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i"; }
ok "installed into an empty root"

# Files where the README says they are.
uid=$(awk -F: '$1 == "meldkamer" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "meldkamer" { print $3 }' "$root/etc/group")
[ -n "$uid" ] || fail "no meldkamer user"
grep -q "^meldkamer:x:$uid:$gid:[^:]*:/var/lib/meldkamer:/usr/sbin/nologin$" "$root/etc/passwd" \
    || fail "the meldkamer user: $(grep '^meldkamer:' "$root/etc/passwd")"
[ "$uid" -lt 1000 ] || fail "meldkamer is not a system user (uid $uid)"
ok "system user meldkamer ($uid:$gid), no login, home /var/lib/meldkamer"
check() { # path mode uid gid
    got=$(stat -c '%a %u %g' "$root$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2 $3 $4" ] || fail "$1: $got, expected $2 $3 $4"
}
check /usr/bin/meldkamer 755 0 0
check /usr/lib/systemd/system/meldkamer.service 644 0 0
check /etc/meldkamer 750 0 "$gid"
check /etc/meldkamer/meldkamer.toml 640 0 "$gid"
for k in pepper keys audit-key; do
    check "/etc/meldkamer/$k" 400 "$uid" "$gid"
    grep -qxE '[0-9a-f]{64}' "$root/etc/meldkamer/$k" || fail "/etc/meldkamer/$k is not 32 bytes as hex"
done
check /var/lib/meldkamer 750 "$uid" "$gid"
check /var/backups/meldkamer 700 "$uid" "$gid"
check /usr/lib/systemd/system/meldkamer-backup.service 644 0 0
check /usr/lib/systemd/system/meldkamer-backup.timer 644 0 0
[ ! -e "$root/etc/systemd/system/timers.target.wants/meldkamer-backup.timer" ] || fail "the backup timer is enabled by the package"
check /usr/share/doc/meldkamer/README.md 644 0 0
[ -L "$root/etc/systemd/system/multi-user.target.wants/meldkamer.service" ] || fail "the unit is not enabled"
ok "files, modes and owners as documented; key files made (0400 meldkamer); the service enabled, the backup timer not"
conffiles=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}\n' meldkamer)
grep -q '^ /etc/meldkamer/meldkamer.toml ' <<< "$conffiles" || fail "/etc/meldkamer/meldkamer.toml is not a conffile"
ok "/etc/meldkamer/meldkamer.toml is a conffile"

# The version the binary states is the package's.
pkg_version=$(dpkg-deb -f "$deb" Version)
bin_version=$("$root/usr/bin/meldkamer" --version | awk '{ print $2 }')
[ "$pkg_version" = "$bin_version" ] || fail "package $pkg_version, meldkamer --version $bin_version"
ok "meldkamer --version: $("$root/usr/bin/meldkamer" --version) = package $pkg_version"

"$root/usr/bin/meldkamer" check-config "$root/etc/meldkamer/meldkamer.toml" || fail "check-config"

# The installed binary on the installed configuration and key files, its paths moved into
# the root and its listener onto a free port: import a record, start, answer a panel, back up.
cfg="$work/meldkamer.toml"
sed -e "s#\"/var/lib/meldkamer#\"$root/var/lib/meldkamer#" -e "s#\"/etc/meldkamer#\"$root/etc/meldkamer#" \
    -e "s#\"/run/meldkamer#\"$root/var/lib/meldkamer#" -e 's#127.0.0.1:7000#127.0.0.1:0#' \
    "$root/etc/meldkamer/meldkamer.toml" > "$cfg"
printf '[[account]]\naccount = "1234"\n' > "$work/records.toml"
"$root/usr/bin/meldkamer" import --config "$cfg" "$work/records.toml" >/dev/null || fail "import"
"$root/usr/bin/meldkamer" serve --config "$cfg" > "$work/ready" 2> "$work/serve.log" &
daemon_pid=$!
for _ in $(seq 1 300); do grep -q '^meldkamer ready' "$work/ready" && break; sleep 0.1; done
tcp=$(grep -o 'tcp=[0-9.:]*' "$work/ready" | cut -d= -f2) || { cat "$work/serve.log"; fail "no ready line"; }
answer=$("$root/usr/bin/meldkamer" send --target "$tcp" --account 1234 --sia BA,01) || true
grep -q '"acknowledged": true' <<< "$answer" || fail "no ACK from the installed daemon: $answer"
"$root/usr/bin/meldkamer" backup --config "$cfg" "$work/backup.db" >/dev/null || fail "backup"
kill "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=
ok "the installed binary, configuration and key files: import, serve, ACK, backup"

# A reinstall (upgrade path) keeps the key files and the state.
sum_before=$(cat "$root"/etc/meldkamer/{pepper,keys,audit-key} | sha256sum)
dpkg_root -i "$deb" > "$work/reinstall.log" 2>&1 || { cat "$work/reinstall.log"; fail "reinstall"; }
[ "$(cat "$root"/etc/meldkamer/{pepper,keys,audit-key} | sha256sum)" = "$sum_before" ] || fail "a reinstall replaced key files"
[ -f "$root/var/lib/meldkamer/meldkamer.db" ] || fail "a reinstall lost the database"
ok "reinstall keeps the key files and the database"

# Removal keeps state and keys; purge deletes them.
dpkg_root -r meldkamer > /dev/null 2>&1 || fail "dpkg -r"
[ ! -e "$root/usr/bin/meldkamer" ] || fail "the binary stayed after removal"
[ -f "$root/var/lib/meldkamer/meldkamer.db" ] || fail "removal deleted the database"
[ -f "$root/etc/meldkamer/pepper" ] || fail "removal deleted the pepper"
ok "removal keeps /var/lib/meldkamer and the key files"
dpkg_root -P meldkamer > /dev/null 2>&1 || fail "dpkg -P"
[ ! -e "$root/var/lib/meldkamer" ] || fail "purge left /var/lib/meldkamer"
[ ! -e "$root/etc/meldkamer" ] || fail "purge left /etc/meldkamer"
grep -q '^meldkamer:' "$root/etc/passwd" || fail "purge removed the system user"
[ -d "$root/var/backups/meldkamer" ] || fail "purge deleted the backups"
ok "purge deletes the state, the configuration and the key files (the system user and the backups stay)"

# The unit: systemd's own checks, where systemd is installed.
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify resolves ExecStart on this machine, so point it at the package's binary.
    mkdir -p "$work/unit"
    dpkg-deb -x "$deb" "$work/pkg"
    for u in meldkamer.service meldkamer-backup.service meldkamer-backup.timer; do
        sed "s#/usr/bin/meldkamer#$work/pkg/usr/bin/meldkamer#" "$work/pkg/usr/lib/systemd/system/$u" > "$work/unit/$u"
    done
    systemd-analyze verify "$work/unit/meldkamer.service" "$work/unit/meldkamer-backup.timer" "$work/unit/meldkamer-backup.service" \
        || fail "systemd-analyze verify"
    ok "systemd-analyze verify (the service, the backup service and its timer)"
    for u in meldkamer.service meldkamer-backup.service; do
        systemd-analyze security --offline=true --threshold=20 "$work/pkg/usr/lib/systemd/system/$u" > "$work/security-$u.txt" \
            || { cat "$work/security-$u.txt"; fail "systemd-analyze security $u: exposure above 2.0"; }
        grep 'Overall exposure level' "$work/security-$u.txt"
        cp "$work/security-$u.txt" "$out/systemd-analyze-security-$u.txt"
    done
else
    echo "SKIPPED: systemd-analyze is not installed; the unit was not verified"
fi

# The unit's SystemCallFilter against what the daemon calls, as an unprivileged user.
if command -v strace >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1; then
    expand() {
        systemd-analyze syscall-filter "$1" | tail -n +2 | sed -e 's/#.*//' -e 's/^ *//' | while read -r n; do
            [ -z "$n" ] && continue
            case "$n" in @*) expand "$n" ;; *) echo "$n" ;; esac
        done
    }
    expand @system-service | sort -u > "$work/allowed"
    expand @privileged | sort -u > "$work/privileged"
    run="$work/run"; mkdir -p "$run"; chown nobody "$run"; chmod 711 "$work"
    cat > "$run/c.toml" <<EOT
[receiver]
tcp_listen = "127.0.0.1:0"
udp_listen = "127.0.0.1:0"
[store]
path = "$run/m.db"
[metrics]
listen = "127.0.0.1:0"
[operator]
socket = "$run/m.sock"
EOT
    setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
        strace -f -qq -o "$run/trace" "$PWD/$bin" serve --config "$run/c.toml" > "$run/ready" 2> "$run/log" &
    daemon_pid=$!
    for _ in $(seq 1 300); do grep -q '^meldkamer ready' "$run/ready" && break; sleep 0.1; done
    tcp=$(grep -o 'tcp=[0-9.:]*' "$run/ready" | cut -d= -f2) || { cat "$run/log"; fail "no ready line under strace"; }
    udp=$(grep -o 'udp=[0-9.:]*' "$run/ready" | cut -d= -f2)
    metrics=$(grep -o 'metrics=[0-9.:]*' "$run/ready" | cut -d= -f2)
    "$bin" send --target "$tcp" --account 1234 --sia BA,01 > /dev/null
    "$bin" send --target "$udp" --udp --account 1234 --sia BA,02 > /dev/null
    exec 3<>"/dev/tcp/${metrics%:*}/${metrics##*:}"; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3 > /dev/null; exec 3<&-
    pid=$(pgrep -P "$daemon_pid" -x meldkamer || true)
    [ -n "$pid" ] || fail "no daemon under strace"
    kill -HUP "$pid"
    for _ in $(seq 1 100); do grep -q 'reload done' "$run/log" && break; sleep 0.1; done
    grep -q 'reload done' "$run/log" || { cat "$run/log"; fail "no reload under strace"; }
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$PWD/$bin" backup --config "$run/c.toml" "$run/copy.db" > /dev/null
    kill -TERM "$pid"
    wait "$daemon_pid" || true; daemon_pid=
    awk '{ s = $2; sub(/\(.*/, "", s); print s }' "$run/trace" | grep -E '^[a-z_0-9]+$' | sort -u > "$run/used"
    denied=$(comm -23 "$run/used" "$work/allowed"; comm -12 "$run/used" "$work/privileged")
    [ -z "$denied" ] || fail "system calls the unit's SystemCallFilter refuses: $denied"
    ok "all $(wc -l < "$run/used") system calls of start, TCP, UDP, metrics, reload, backup and stop pass SystemCallFilter=@system-service ~@privileged"
else
    echo "SKIPPED: strace, setpriv or systemd-analyze missing; the system call filter was not checked"
fi
echo "package checks passed: $deb"
