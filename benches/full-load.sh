#!/bin/bash
# The full-load run and the one-hour soak of BENCHMARKS.md (issue 24, item 2): 1,000,000
# accounts polling over UDP and TCP, alarms at 100/s pushed to an operator API subscriber
# that closes them, 200 accounts falling silent on the way, samples of memory, file sizes and
# metrics. Run from the repository root after the import (config/bench-full.toml says how):
#
#   B=target/optimized/meldkamer T=900 SP=40 benches/full-load.sh    # 15 minutes
#   B=target/optimized/meldkamer T=3900 benches/full-load.sh         # the soak, 65 minutes
#
# B is the daemon, G the load generator (default: B); T the seconds of load; SP the seconds
# between two groups of 10 accounts falling silent. Results in /var/tmp/fl/out.
set -u
B=${B:-target/optimized/meldkamer}
G=${G:-$B}
C=config/bench-full.toml; O=/var/tmp/fl/out; T=${T:-3900}
mkdir -p $O
$B serve --config $C > $O/ready.txt 2> $O/daemon.log & PID=$!
echo $PID > $O/daemon.pid
until grep -q "ready" $O/ready.txt; do sleep 0.2; done
S=$(date +%s%3N); echo $S > $O/start_ms
# 1,000,000 accounts poll every 81 s (12,346 polls/s, inside their 90 s deadline): half over
# UDP (16 sockets), half over 256 kept TCP connections; a poll without an answer in 2 s is
# sent once more, as panels do. 200 accounts leave in groups of 10 every SP s.
$G bench --target 127.0.0.1:7050 --poll-accounts 500000 --poll-interval 81 --connections 16 \
   --duration $T --json > $O/polls-udp.json 2> $O/polls-udp.err & P1=$!
$G bench --target 127.0.0.1:7050 --poll-tcp --first-record 500000 --poll-accounts 499800 \
   --poll-interval 81 --connections 256 --duration $T --json > $O/polls-tcp.json 2> $O/polls-tcp.err & P2=$!
LEAVERS=()
for k in $(seq 0 19); do
  $G bench --target 127.0.0.1:7050 --first-record $((999800 + 10 * k)) --poll-accounts 10 \
     --poll-interval 30 --poll-warmup 5 --connections 1 --duration $((90 + ${SP:-180} * k)) --json \
     > $O/leaver-$k.json 2>&1 & LEAVERS+=($!)
done
# alarms at 100/s from accounts 0…, each pushed to the subscriber and closed 5 s later
echo "bench-soak-password-1" | $G bench --target 127.0.0.1:7050 --push-latency /var/tmp/fl/api.sock \
   --operator sam --password-stdin --alarms $((T * 100 - 1000)) --rate 100 --close-after 5 --json \
   > $O/push.json 2> $O/push.err & P3=$!
# samples every 10 s: time, RSS kB, db bytes, wal bytes; metrics every 60 s
( while kill -0 $PID 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/{print $2}' /proc/$PID/status) $(stat -c %s /var/tmp/fl/full.db) $(stat -c %s /var/tmp/fl/full.db-wal 2>/dev/null || echo 0)" >> $O/samples.txt
    if [ $(( $(date +%s) % 60 )) -lt 10 ]; then
      { echo "## $(date +%s)"; curl -s 127.0.0.1:9470/metrics; } >> $O/metrics.txt
    fi
    sleep 10
  done ) & SAMP=$!
wait $P1 $P2 $P3 "${LEAVERS[@]}"
{ echo "## end $(date +%s)"; curl -s 127.0.0.1:9470/metrics; } >> $O/metrics.txt
t0=$(date +%s%3N); kill -TERM $PID; wait $PID; echo "sigterm_ms $(( $(date +%s%3N) - t0 ))" > $O/stop.txt
kill $SAMP 2>/dev/null
$G bench --deadline-latency /var/tmp/fl/full.db --since-ms $S --json > $O/deadlines.json
echo done > $O/done
