#!/usr/bin/env bash
# Partition-log append/read throughput next to the disk's own limits, in one sitting.
#
# Each round runs, back to back on the disk that holds ./target:
#   fio: sequential buffered 16 KiB writes (1 GiB file, the log benchmark's footprint)
#   fio: 16 KiB writes, each followed by fdatasync, appending to a new file (the reference
#        for flush=always), and the same overwriting a laid-out file (the disk's best case)
#   cargo bench -p wharf-log --bench log   (criterion: append never/always, read)
# Disk figures on shared virtual machines drift by several times within minutes, so the
# rounds alternate and the table reports medians and per-round ratios.
#
# Usage: bench/log-vs-disk.sh [ROUNDS]   (default 3). Needs fio: apt-get install -y fio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
command -v fio >/dev/null || { echo "fio not found: apt-get install -y fio" >&2; exit 1; }
out=target/log-vs-disk
rm -rf "$out"
mkdir -p "$out/fio"
trap 'rm -rf "$out/fio"' EXIT

for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds" >&2
  fio --output-format=json --name=seq --directory="$out/fio" --rw=write --bs=16k --size=1G \
    --ioengine=psync --time_based --runtime=10 --ramp_time=2 > "$out/seq-$r.json"
  rm -f "$out"/fio/*
  # Appending, as a log does: a new file that every write extends (no preallocation, no
  # wrap-around), so each fdatasync also commits the new file size and block allocation.
  fio --output-format=json --name=sync --directory="$out/fio" --rw=write --bs=16k --size=8G \
    --ioengine=psync --fallocate=none --fdatasync=1 --runtime=10 > "$out/sync-$r.json"
  rm -f "$out"/fio/*
  # Overwriting a laid-out file in place: no metadata to commit, the disk's best case.
  fio --output-format=json --name=sync-over --directory="$out/fio" --rw=write --bs=16k --size=256M \
    --ioengine=psync --overwrite=1 --fdatasync=1 --time_based --runtime=10 > "$out/over-$r.json"
  rm -f "$out"/fio/*
  cargo bench -q -p wharf-log --bench log >&2
  for b in append/never/1-appenders append/always/1-appenders append/always/8-appenders read/1MiB-fetches; do
    mkdir -p "$out/criterion-$r/$b"
    cp target/criterion/$b/new/*.json "$out/criterion-$r/$b/"
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, os, sys, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
mib = 2 ** 20
def fio(kind, r):
    w = json.load(open(f"{out}/{kind}-{r}.json"))["jobs"][0]["write"]
    return w["bw_bytes"]
def crit(path, r):
    base = f"{out}/criterion-{r}/{path}"
    ns = json.load(open(f"{base}/estimates.json"))["mean"]["point_estimate"]
    per_iter = json.load(open(f"{base}/benchmark.json"))["throughput"]["Bytes"]
    return per_iter / (ns / 1e9)
R = range(1, rounds + 1)
seq = [fio("seq", r) for r in R]
sync = [fio("sync", r) for r in R]
over = [fio("over", r) for r in R]
rows = [
    ("append, flush=never, 1 appender", "append/never/1-appenders", seq, "fio buffered write"),
    ("append, flush=always, 1 appender", "append/always/1-appenders", sync, "fio appending write+fdatasync"),
    ("(same, against overwriting in place)", "append/always/1-appenders", over, "fio overwriting write+fdatasync"),
    ("append, flush=always, 8 appenders", "append/always/8-appenders", sync, "fio appending write+fdatasync"),
    ("(same, against overwriting in place)", "append/always/8-appenders", over, "fio overwriting write+fdatasync"),
    ("read, 1 MiB fetches (page cache)", "read/1MiB-fetches", seq, "fio buffered write"),
]
fmt = lambda xs: " / ".join(f"{x/mib:.1f}" for x in xs)
print("| measurement | MiB/s per round | median MiB/s | ratio per round | median ratio |")
print("|---|---|---:|---|---:|")
print(f"| fio sequential buffered write, 16 KiB | {fmt(seq)} | {statistics.median(seq)/mib:.1f} | | |")
print(f"| fio 16 KiB write + fdatasync each, appending | {fmt(sync)} | {statistics.median(sync)/mib:.1f} | | |")
print(f"| fio 16 KiB write + fdatasync each, overwriting in place | {fmt(over)} | {statistics.median(over)/mib:.1f} | | |")
for name, path, ref, refname in rows:
    v = [crit(path, r) for r in R]
    ratios = [a / b for a, b in zip(v, ref)]
    print(f"| {name} | {fmt(v)} | {statistics.median(v)/mib:.1f} | "
          + " / ".join(f"{x:.2f}" for x in ratios)
          + f" | **{statistics.median(ratios):.2f}×** {refname} |")
PY
