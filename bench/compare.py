#!/usr/bin/env python3
"""Wharf and its peers, side by side, in one sitting: the workloads of `wharf-bench`
against each broker in turn, round after round, with the machine's own limits measured
in between. Started by bench/compare.sh, which installs and builds what this needs.

Each round starts every broker afresh (its own data directory, loopback port), measures
its idle RSS, runs the workloads against it, and stops it before the next broker starts,
so only one broker runs at a time. Each round first measures the machine (fio, iperf3,
`wharf-bench disk`) and then waits for the disk to settle. Before each workload the
machine's dirty pages are written out (sync), so no run pays for the previous one's
writeback. While a workload runs, the broker's CPU time (every process of its session:
user + system) and its RSS (sampled every 100 ms) are read from /proc. The report gives medians over rounds and Wharf/peer ratios, and checks the
targets of the benchmark issue.

Standard library only.
"""

import argparse
import bisect
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


SETTLE_AFTER_FIO_S = 20

# ---------------------------------------------------------------- /proc sampling


def session_pids(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is the state (field 3); the session id is field 6.
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def cpu_seconds(sid):
    """User + system CPU of every process in the session, and of the children it reaped."""
    total = 0
    for pid in session_pids(sid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based), f[11..14].
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def rss_bytes(sid, pids=None):
    total = 0
    for pid in session_pids(sid) if pids is None else pids:
        try:
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(statm[1]) * PAGE
    return total


class RssSampler:
    """The largest RSS of a session while it runs, sampled every 100 ms.

    Only the session's own /proc/<pid>/statm files are read while the workload runs;
    all of /proc is scanned for them before it starts and once more after it ends.
    Scanning /proc ten times a second tripled the latency p99 being measured, and even
    a scan every 2 s showed in it. A broker's processes are all started before a
    workload begins (the session is idle for 2 s first)."""

    def __init__(self, sid):
        self.sid, self.peak, self._stop = sid, 0, threading.Event()
        self._pids = session_pids(sid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.sid, self._pids))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.sid))


# ---------------------------------------------------------------- brokers


class Broker:
    """One broker process (and its children) in a session of its own."""

    name = "?"
    driver = "?"
    # Workloads this broker takes part in.
    workloads = ()
    boot_timeout = 30

    def __init__(self, bins, workdir):
        self.bins, self.workdir = bins, workdir
        self.proc = None
        self.port = free_port()

    def command(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def url(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logfile = open(self.workdir / "broker.log", "w")
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.workdir,
        )
        self.sid = self.proc.pid
        self.wait_ready()

    def wait_ready(self):
        wait_port(self.port, self.boot_timeout, self.proc)

    def slow_syncs(self):
        """fdatasyncs of 50 ms or more the broker logged so far (None: it logs none)."""
        return None

    def sync_counts(self):
        """The broker's fdatasyncs so far: (all, over 1 ms, over 5 ms); None where it does
        not say."""
        return None

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of the session (a BEAM's helpers, say).
        for pid in session_pids(self.sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logfile.close()
        self.proc = None


class Wharf(Broker):
    name, driver = "wharf", "kafka"
    workloads = ("produce", "consume", "e2e", "latency", "fanout", "partitions")

    def __init__(self, bins, workdir):
        super().__init__(bins, workdir)
        self.http_port = free_port()

    def command(self):
        return [
            str(self.bins["wharf"]), "serve",
            "--data-dir", str(self.workdir / "data"),
            "--kafka-addr", f"127.0.0.1:{self.port}",
            "--http-addr", f"127.0.0.1:{self.http_port}",
        ]  # fmt: skip

    def sync_counts(self):
        """From Wharf's own `wharf_log_sync_duration_seconds` histogram (GET /metrics): how
        many fdatasyncs it ran, and how many took over 1 ms and over 5 ms; so a round's
        tail can be set against the disk's behaviour during that very run."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        le = {}
        for line in text.splitlines():
            if line.startswith("wharf_log_sync_duration_seconds_bucket{"):
                try:
                    bound = line.split('le="', 1)[1].split('"', 1)[0]
                    le[bound] = le.get(bound, 0) + float(line.rsplit(" ", 1)[1])
                except (IndexError, ValueError):
                    return None
        if "+Inf" not in le:
            return (0, 0, 0)
        total = le["+Inf"]
        return (total, total - le.get("0.001", total), total - le.get("0.005", total))

    def env(self):
        return {**os.environ, "RUST_LOG": "warn"}

    def slow_syncs(self):
        self.logfile.flush()
        try:
            return (self.workdir / "broker.log").read_text(errors="replace").count("slow fdatasync")
        except OSError:
            return 0


class WharfNoSync(Wharf):
    """Wharf with --flush never: the same broker without its fdatasync, to tell the
    disk's share of latency and CPU from the rest (not a durable configuration)."""

    name = "wharf-nosync"
    workloads = ("e2e", "latency")

    def command(self):
        return super().command() + ["--flush", "never"]


class WharfOtlp(Wharf):
    """Wharf with tracing on (`--otlp-endpoint`) exporting to `wharf-bench otlp-sink`, a
    collector stand-in that counts spans and drops them (in a session of its own, so its
    CPU is not the broker's). No message carries a `traceparent`: the cost of looking."""

    name = "wharf-otlp"
    workloads = ("e2e", "latency")
    bench_args = ()

    def __init__(self, bins, workdir):
        super().__init__(bins, workdir)
        self.sink_port = free_port()
        self.sink = None

    def command(self):
        return super().command() + ["--otlp-endpoint", f"http://127.0.0.1:{self.sink_port}"]

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sink_out = open(self.workdir / "otlp-sink.json", "w")
        self.sink = subprocess.Popen(
            [str(self.bins["wharf-bench"]), "otlp-sink", "--addr", f"127.0.0.1:{self.sink_port}"],
            stdin=subprocess.DEVNULL, stdout=self.sink_out, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_port(self.sink_port, 30, self.sink)
        super().start()

    def stop(self):
        super().stop()
        if self.sink is not None:
            self.sink.terminate()
            try:
                self.sink.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait()
            self.sink_out.close()
            try:
                log(f"   otlp-sink received {(self.workdir / 'otlp-sink.json').read_text().strip()}")
            except OSError:
                pass
            self.sink = None


class WharfTraced(WharfOtlp):
    """As `wharf-otlp`, with every message carrying a sampled `traceparent` of its own
    (`wharf-bench --traceparent`): every message gets its publish, persist and deliver
    spans exported."""

    name = "wharf-traced"
    bench_args = ("--traceparent",)


class WharfTraced1(WharfOtlp):
    """As `wharf-traced`, with 1% of the messages' traces sampled (the others carry an
    unsampled `traceparent`): head sampling at the producer, as traced services are
    usually run."""

    name = "wharf-traced-1pct"
    bench_args = ("--traceparent", "0.01")


class WharfHttp(Wharf):
    """Wharf's HTTP/JSON queue API (`--driver http`): the same broker, reached on its HTTP
    port, for the `queue` workload (publish, long-poll pull, ack). Its peer is Wharf
    itself over the Kafka protocol: the `e2e` row of `wharf`."""

    name, driver = "wharf-http", "http"
    workloads = ("queue",)

    def __init__(self, bins, workdir):
        super().__init__(bins, workdir)
        # Its HTTP API is the port the workload speaks to.
        self.http_port = self.port

    def command(self):
        return [
            str(self.bins["wharf"]), "serve",
            "--data-dir", str(self.workdir / "data"),
            "--kafka-addr", "127.0.0.1:0",
            "--http-addr", f"127.0.0.1:{self.port}",
        ]  # fmt: skip


class Tansu(Broker):
    """tansu (a Kafka-compatible broker in Rust) on its SQLite (libSQL) storage engine, a
    file in its data dir, with its default settings."""

    name, driver = "tansu", "kafka"
    workloads = ("produce", "consume", "e2e", "latency", "fanout", "partitions")

    def command(self):
        return [
            str(self.bins["tansu"]), "broker",
            "--kafka-listener-url", f"tcp://127.0.0.1:{self.port}",
            "--kafka-advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
            # A path relative to the working directory (the broker runs in its workdir).
            "--storage-engine", "sqlite://tansu.db",
        ]  # fmt: skip

    def env(self):
        return {**os.environ, "RUST_LOG": "warn"}


class JetStream(Broker):
    """NATS with JetStream on file storage (its defaults: acks after the write, fsync every 2 min)."""

    name, driver = "jetstream", "jetstream"
    workloads = ("produce", "consume", "e2e", "latency", "fanout", "queue")

    def command(self):
        return [
            str(self.bins["nats-server"]), "-js",
            "-sd", str(self.workdir / "store"),
            "-a", "127.0.0.1", "-p", str(self.port),
        ]  # fmt: skip

    def url(self):
        return f"nats://127.0.0.1:{self.port}"


class CoreNats(JetStream):
    """Core NATS: no storage, no acknowledgements (the fan-out reference, and the floor
    for latency on this machine: a message through a broker with no disk at all)."""

    name, driver = "nats", "nats"
    workloads = ("latency", "fanout")

    def command(self):
        return [str(self.bins["nats-server"]), "-a", "127.0.0.1", "-p", str(self.port)]


class RabbitMQ(Broker):
    """RabbitMQ with durable classic queues, persistent messages and publisher confirms.

    Debian's scripts in /usr/sbin switch to the rabbitmq user when run as root (losing
    HOME and the cookie); the ones in /usr/lib/rabbitmq/bin do not. The node is private:
    its own name, ports, Mnesia, logs, cookie and an empty plugin list (faster boot).
    SIGTERM to the start script stops the node cleanly."""

    name, driver = "rabbitmq", "amqp"
    workloads = ("produce", "consume", "e2e", "latency", "fanout", "queue")
    boot_timeout = 120

    def env(self):
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(12).hex())
            cookie.chmod(0o400)
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        conf = self.workdir / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        return {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": f"wharfbench-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(conf),
        }

    def command(self):
        return [str(self.bins["rabbitmq-server"])]

    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"


BROKERS = {b.name: b for b in (Wharf, WharfNoSync, WharfOtlp, WharfTraced, WharfTraced1, WharfHttp, Tansu, JetStream, CoreNats, RabbitMQ)}


# ---------------------------------------------------------------- workloads


def workload_args(name, a):
    d = str(a.duration)
    return {
        "produce": ["produce", "--duration", d],
        "consume": ["consume", "--messages", str(a.consume_messages)],
        "e2e": ["e2e", "--duration", d],
        "latency": ["latency", "--rate", str(a.rate), "--duration", d],
        "fanout": ["fanout", "--groups", "4", "--duration", d],
        "partitions": ["partitions", "--partitions", "1000", "--duration", d],
        "queue": ["queue", "--consumers", "4", "--duration", d],
    }[name]


def run_workload(bins, broker, workload, a, outdir, label):
    report = outdir / f"{label}.json"
    cmd = [
        str(bins["wharf-bench"]),
        "--driver", broker.driver,
        "--brokers", broker.url(),
        "--json", str(report),
        *workload_args(workload, a),
        *getattr(broker, "bench_args", ()),
    ]  # fmt: skip
    # Every workload starts with no dirty pages on the machine: writeback left over from
    # the previous workload would otherwise slow this one's fsyncs.
    os.sync()
    time.sleep(1)
    slow0 = broker.slow_syncs()
    syncs0 = broker.sync_counts()
    cpu0 = cpu_seconds(broker.sid)
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with RssSampler(broker.sid) as rss:
        with open(outdir / f"{label}.log", "w") as out:
            try:
                subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=a.duration * 6 + 180, check=True
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                log(f"   {label}: FAILED ({e}); see {outdir / (label + '.log')}")
                return None
    cpu = cpu_seconds(broker.sid) - cpu0
    syncs1 = broker.sync_counts()
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    r = json.loads(report.read_text())
    msgs = r["messages"]
    return {
        "msgs_per_s": r["msgs_per_s"],
        "mb_per_s": r["mb_per_s"],
        "messages": msgs,
        "failed": r["failed"],
        "latency": r.get("latency"),
        "cpu_s": cpu,
        "cpu_us_per_msg": cpu / msgs * 1e6 if msgs else None,
        # wharf-bench's own CPU (producer and consumer clients): they share the cores.
        "client_cpu_us_per_msg": client_cpu / msgs * 1e6 if msgs else None,
        "rss_peak": rss.peak,
        # fdatasyncs of 50 ms or more during the run (Wharf logs them; None elsewhere).
        "slow_syncs": None if slow0 is None else broker.slow_syncs() - slow0,
        # Wharf's fdatasyncs during the run: all, over 1 ms, over 5 ms (None elsewhere).
        "syncs": None if syncs0 is None or syncs1 is None else [b - a for a, b in zip(syncs0, syncs1)],
        "report": str(report),
    }


# ---------------------------------------------------------------- machine limits


def fio(args, workdir):
    d = workdir / "fio"
    d.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(
            ["fio", "--output-format=json", f"--directory={d}", *args],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return json.loads(out[out.index("{") :])["jobs"][0]


def disk_floor(bins, workdir, rate, mode, group=False):
    """wharf-bench disk: fdatasync'd writes at the latency workload's rate, timed from when
    each was due, like its messages; with `group`, synced in groups on a thread of their
    own, as a broker commits. Returns the latency summary (p99 and curve, µs)."""
    out = workdir / f"disk-{mode}{'-group' if group else ''}.json"
    subprocess.run(
        [str(bins["wharf-bench"]), "--json", str(out), "disk", "--dir", str(workdir / "disk"),
         "--rate", str(rate), "--duration", "10", "--mode", mode]
        + (["--group-commit"] if group else []),
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(out.read_text())["latency"]


def machine_limits(workdir, bins, rate):
    seq = fio(
        ["--name=seq", "--rw=write", "--bs=1m", "--size=1G", "--ioengine=psync", "--end_fsync=1"],
        workdir,
    )
    # 4 KiB appends, each followed by fdatasync, to a new file: what a durable
    # acknowledgement of a small batch costs at least.
    sync = fio(
        [
            "--name=sync", "--rw=write", "--bs=4k", "--size=4G", "--ioengine=psync",
            "--fallocate=none", "--fdatasync=1", "--runtime=10", "--time_based=0",
        ],  # fmt: skip
        workdir,
    )
    lat = sync["sync"]["lat_ns"]
    out = {
        "fio_seq_write_mib_s": seq["write"]["bw_bytes"] / MIB,
        "fio_fdatasync_per_s": sync["write"]["iops"],
        "fio_fdatasync_p50_us": lat["percentile"]["50.000000"] / 1000,
        "fio_fdatasync_p99_us": lat["percentile"]["99.000000"] / 1000,
        "fio_fdatasync_p999_us": lat["percentile"]["99.900000"] / 1000,
        "fio_fdatasync_max_us": lat["max"] / 1000,
        # The disk alone at the latency workload's rate, stalls counted per write held
        # back (as the workload counts messages): appending, and into zeroed space.
    }
    for mode in ("append", "overwrite"):
        lat = disk_floor(bins, workdir, rate, mode)
        out[f"disk_{mode}_p99_us"] = lat["p99_us"]
        out[f"disk_{mode}_curve"] = lat["curve"]
    # Into zeroed space, committed in groups: what the disk gives a broker that syncs
    # each message before a consumer may see it, at best.
    lat = disk_floor(bins, workdir, rate, "overwrite", group=True)
    out["disk_group_p99_us"] = lat["p99_us"]
    out["disk_group_curve"] = lat["curve"]
    # The machine's own trip at that rate: no broker, no disk, one thread to another
    # over loopback TCP. Its tail is what the machine adds to any broker's (a CPU taken
    # away while a message is on its way).
    lb = loopback(bins, workdir, rate)
    out["loopback_p99_us"] = lb["latency"]["p99_us"]
    out["loopback_p999_us"] = lb["latency"]["p999_us"]
    out["loopback_max_us"] = lb["latency"]["max_us"]
    out["loopback_over_1ms_pct"] = 100 * lb["over_1ms"] / max(lb["messages"], 1)
    out["loopback_curve"] = lb["latency"]["curve"]
    return out


def loopback(bins, workdir, rate):
    """wharf-bench loopback: messages from one thread to another over loopback TCP at the
    latency workload's rate, timed from when each was due. Returns its JSON report."""
    out = workdir / "loopback.json"
    subprocess.run(
        [str(bins["wharf-bench"]), "--json", str(out), "loopback", "--rate", str(rate),
         "--duration", "10"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(out.read_text())


def share_over(curve, us):
    """The share of messages (%) over `us` µs, read off a latency curve of (percentile, µs)
    points: 100 less the highest percentile still at or under `us` (so never less than
    the curve resolves)."""
    at_or_under = [float(p) for p, v in curve if v <= us]
    return 100 - max(at_or_under, default=0.0)


def quantiles(curve, n):
    """n evenly spaced quantiles (µs) of a latency curve of (percentile, µs) points."""
    pts = sorted((float(p), float(v)) for p, v in curve)
    xs = [p for p, _ in pts]
    out = []
    for i in range(n):
        pct = (i + 0.5) * 100 / n
        j = bisect.bisect_left(xs, pct)
        if j == 0:
            out.append(pts[0][1])
        elif j >= len(pts):
            out.append(pts[-1][1])
        else:
            (p0, v0), (p1, v1) = pts[j - 1], pts[j]
            out.append(v0 + (v1 - v0) * (pct - p0) / (p1 - p0) if p1 > p0 else v1)
    return out


def sum_p99(curve_a, curve_b, n=2000):
    """The p99 (µs) of A + B, A and B independent and distributed as the two curves: the
    latency of a trip that costs one of each."""
    a, b = quantiles(curve_a, n), sorted(quantiles(curve_b, n))
    lo, hi = a[0] + b[0], max(a) + b[-1]
    want = 0.99 * n * n
    while hi - lo > 1:
        t = (lo + hi) / 2
        if sum(bisect.bisect_right(b, t - x) for x in a) >= want:
            hi = t
        else:
            lo = t
    return hi


def floors(results, limits, trip_broker):
    """Per round: p99 of `trip_broker`'s latency run plus the disk measured at that rate
    into zeroed space, committed in groups (`disk_group_curve`; sittings before it was
    measured: one sync per write, `disk_overwrite_curve`), in ms."""
    out = []
    for i, lim in enumerate(limits):
        runs = results.get((trip_broker, "latency"), [])
        run = runs[i] if i < len(runs) else None
        disk = lim.get("disk_group_curve") or lim.get("disk_overwrite_curve")
        if run and run.get("latency") and disk:
            out.append(sum_p99(run["latency"]["curve"], disk) / 1000)
    return out


def round_p99s(results, broker):
    """The `latency` p99 (ms) of each round, None where the round failed."""
    return [(r.get("latency") or {}).get("p99_us", 0) / 1000 if r and r.get("latency") else None
            for r in results.get((broker, "latency"), [])]


def iperf3_loopback():
    port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # No probe connection first: the one-off server (-1) would count it as its test.
        for _ in range(20):
            time.sleep(0.25)
            r = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "5", "-J"],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
        raise RuntimeError(f"iperf3 client failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    finally:
        server.kill()
        server.wait()


def machine():
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = next(
        (l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")),
        "?",
    )
    disk = subprocess.run(["df", "-h", str(ROOT)], capture_output=True, text=True).stdout.splitlines()[-1]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(mem) / 2**20, 1),
        "kernel": os.uname().release,
        "disk": disk,
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---------------------------------------------------------------- report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0, unit=""):
    if x is None:
        return "–"
    if abs(x) >= 1e6 and digits == 0:
        return f"{x / 1e6:.2f}M{unit}"
    if abs(x) >= 1e4 and digits == 0:
        return f"{x / 1e3:.0f}k{unit}"
    return f"{x:.{digits}f}{unit}"


def summarize(results, limits, brokers, workloads):
    """Medians per (broker, workload) over the rounds that succeeded."""
    s = {}
    for b in brokers:
        for w in workloads:
            runs = [r for r in results.get((b, w), []) if r]
            if not runs:
                continue
            lat = [r["latency"] for r in runs if r.get("latency")]
            s[(b, w)] = {
                "rounds": len(runs),
                "msgs_per_s": med([r["msgs_per_s"] for r in runs]),
                "mb_per_s": med([r["mb_per_s"] for r in runs]),
                "cpu_us_per_msg": med([r["cpu_us_per_msg"] for r in runs]),
                "client_cpu_us_per_msg": med([r.get("client_cpu_us_per_msg") for r in runs]),
                "rss_peak_mib": med([r["rss_peak"] / MIB for r in runs]),
                "p50_ms": med([l["p50_us"] / 1000 for l in lat]) if lat else None,
                "p99_ms": med([l["p99_us"] / 1000 for l in lat]) if lat else None,
                "p999_ms": med([l["p999_us"] / 1000 for l in lat]) if lat else None,
                "per_round": [r["msgs_per_s"] for r in runs],
                "p99_per_round": [l["p99_us"] / 1000 for l in lat],
                "slow_syncs": [r.get("slow_syncs") for r in runs],
            }
    return s


def ratio(a, b):
    return a / b if a is not None and b else None


def render(meta, s, idle, limits, brokers, workloads, plots):
    out = []
    w = out.append
    m = meta["machine"]
    w(f"Measured {meta['date']} with `bench/compare.sh` ({meta['rounds']} rounds, "
      f"{meta['duration']} s per run, 1 KiB messages, acks=all / durable settings on every broker).")
    w("")
    w(f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
      f"disk `{m['disk']}`; load average before the run {' '.join(m['loadavg_before'])}. "
      "Client (`wharf-bench`) and broker share the cores.")
    w("")
    w("Peers: " + ", ".join(f"{b} ({meta['versions'].get(b, '?')})" for b in brokers) + ".")
    w("")
    w("Machine limits in the same sitting (median of rounds):")
    w("")
    w("| limit | median | per round |")
    w("|---|---:|---|")
    for key, label, d in [
        ("fio_seq_write_mib_s", "fio sequential buffered write, 1 MiB blocks (MiB/s)", 0),
        ("fio_fdatasync_per_s", "fio 4 KiB appending write + fdatasync (per s)", 0),
        ("fio_fdatasync_p50_us", "fio fdatasync latency p50 (µs)", 0),
        ("fio_fdatasync_p99_us", "fio fdatasync latency p99 (µs)", 0),
        ("fio_fdatasync_p999_us", "fio fdatasync latency p99.9 (µs)", 0),
        ("fio_fdatasync_max_us", "fio fdatasync latency max (µs)", 0),
        ("disk_append_p99_us", "`wharf-bench disk --mode append` at the latency rate, p99 from due (µs)", 0),
        ("disk_overwrite_p99_us", "`wharf-bench disk --mode overwrite` at the latency rate, p99 from due (µs)", 0),
        ("disk_group_p99_us", "`wharf-bench disk --mode overwrite --group-commit` at the latency rate, p99 from due (µs)", 0),
        ("loopback_p99_us", "`wharf-bench loopback` at the latency rate (no broker, no disk), p99 from due (µs)", 0),
        ("loopback_p999_us", "`wharf-bench loopback` at the latency rate, p99.9 from due (µs)", 0),
        ("loopback_over_1ms_pct", "`wharf-bench loopback` at the latency rate, messages over 1 ms (%)", 2),
        ("iperf3_loopback_mb_s", "iperf3 loopback (MB/s)", 0),
    ]:
        vals = [l[key] for l in limits if key in l]
        if vals:
            w(f"| {label} | {med(vals):.{d}f} | {' / '.join(f'{v:.{d}f}' for v in vals)} |")
    w("")
    peers = [b for b in brokers if b != "wharf"]
    for wl in workloads:
        rows = [b for b in brokers if (b, wl) in s]
        if not rows:
            continue
        w(f"### {wl}")
        w("")
        w(f"`wharf-bench {' '.join(workload_args(wl, meta['args']))}`")
        w("")
        has_lat = any(s[(b, wl)]["p99_ms"] is not None for b in rows)
        head = "| broker | msgs/s (median) | per round | MB/s | broker CPU µs/msg | client CPU µs/msg | peak RSS MiB |"
        if has_lat:
            head += " p50 ms | p99 ms | p99.9 ms |"
        head += " Wharf/peer msgs/s | Wharf/peer CPU/msg |"
        w(head)
        w("|" + "---|" * (head.count("|") - 1))
        # The queue workload's Wharf is its HTTP API; elsewhere, the Kafka protocol.
        me = "wharf-http" if wl == "queue" else "wharf"
        ws = s.get((me, wl))
        for b in rows:
            r = s[(b, wl)]
            line = (f"| {b} | {fmt(r['msgs_per_s'])} | {' / '.join(fmt(x) for x in r['per_round'])} | "
                    f"{fmt(r['mb_per_s'], 1)} | {fmt(r['cpu_us_per_msg'], 2)} | "
                    f"{fmt(r['client_cpu_us_per_msg'], 2)} | {fmt(r['rss_peak_mib'], 1)} |")
            if has_lat:
                per = " / ".join(f"{x:.2f}" for x in r["p99_per_round"])
                line += f" {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} ({per}) | {fmt(r['p999_ms'], 2)} |"
            if b == me or ws is None:
                line += " | |"
            else:
                tr = ratio(ws["msgs_per_s"], r["msgs_per_s"])
                cr = ratio(ws["cpu_us_per_msg"], r["cpu_us_per_msg"])
                line += f" {fmt(tr, 2, '×')} | {fmt(cr, 2, '×')} |"
            w(line)
        w("")
        slow = (s.get(("wharf", wl)) or {}).get("slow_syncs") or []
        if any(slow):
            w(f"Wharf logged fdatasyncs of 50 ms or more in this workload: "
              f"{' / '.join(str(x) for x in slow)} per round (the disk stalling; every "
              "acknowledgement waiting on such a sync waits as long).")
            w("")
        if wl == "queue":
            e = s.get(("wharf", "e2e"))
            w("Messages count once a consumer's ack was accepted; latency is from the send "
              "to that acknowledgement. For comparison, Wharf over the Kafka protocol (`e2e`, "
              "1 consumer): " + (f"{fmt(e['msgs_per_s'])} msgs/s, p99 {fmt(e['p99_ms'], 2)} ms."
                                 if e else "not measured in this sitting."))
            w("")
        if wl in plots:
            w(f"![{wl}: end-to-end latency by percentile, median round]({plots[wl]})")
            w("")
    w("### Memory")
    w("")
    w("| broker | idle RSS MiB (median) | peak RSS under e2e MiB |")
    w("|---|---:|---:|")
    for b in brokers:
        e = s.get((b, "e2e"))
        w(f"| {b} | {fmt(med(idle.get(b, [])), 1)} | {fmt(e['rss_peak_mib'] if e else None, 1)} |")
    w("")
    w("### Targets")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    for name, measured, ok in targets(s, idle, limits):
        said = ok if isinstance(ok, str) else ("yes" if ok else ("no" if ok is not None else "not measured"))
        w(f"| {name} | {measured} | {said} |")
    w("")
    return "\n".join(out)


def targets(s, idle, limits):
    g = lambda b, wl, k: (s.get((b, wl)) or {}).get(k)
    rows = []
    e_w, e_js, e_rb = g("wharf", "e2e", "msgs_per_s"), g("jetstream", "e2e", "msgs_per_s"), g("rabbitmq", "e2e", "msgs_per_s")
    r = ratio(e_w, e_js)
    rows.append(("e2e ≥ 3× NATS JetStream", fmt(r, 2, "×"), None if r is None else r >= 3))
    r = ratio(e_w, e_rb)
    rows.append(("e2e ≥ 10× RabbitMQ durable", fmt(r, 2, "×"), None if r is None else r >= 10))
    r = ratio(g("wharf", "e2e", "cpu_us_per_msg"), g("jetstream", "e2e", "cpu_us_per_msg"))
    rows.append(("broker CPU per message (e2e) ≤ ¼ of JetStream's", fmt(r, 2, "×"), None if r is None else r <= 0.25))
    lw, lr = g("wharf", "latency", "p99_ms"), g("rabbitmq", "latency", "p99_ms")
    r = ratio(lw, lr)
    rows.append(("latency p99 at the fixed rate ≤ ½ RabbitMQ's", fmt(r, 2, "×"), None if r is None else r <= 0.5))
    # Round by round, next to the disk alone in the same round (committing in groups, at
    # that rate): where the disk's own p99 is over ½ RabbitMQ's, no broker that lets a
    # consumer see only what is durable can meet the target in that round.
    rp = s.get("round_p99", {})
    rw, rr = rp.get("wharf") or [], rp.get("rabbitmq") or []
    dg = [l.get("disk_group_p99_us") for l in limits]
    if rw and rr:
        cells, met, over, n = [], 0, 0, 0
        for i, (a, b) in enumerate(zip(rw, rr)):
            if a is None or b is None:
                cells.append("–")
                continue
            n += 1
            met += a <= b / 2
            d = dg[i] if i < len(dg) else None
            sy = (s.get("round_syncs") or [])[i] if i < len(s.get("round_syncs") or []) else None
            notes = []
            if d is not None:
                over += d / 1000 > b / 2
                notes += [f"disk {d / 1000:.2f} ms", f"½ RabbitMQ {b / 2:.2f} ms"]
            if sy:
                notes.append(f"Wharf's fdatasyncs over 1 ms: {sy[1]:.0f} of {sy[0]:.0f}, over 5 ms: {sy[2]:.0f}")
            cells.append(f"{a / b:.2f}×" + (f" ({', '.join(notes)})" if notes else ""))
        said = f"; met in {met} of {n} rounds; the disk alone was over ½ RabbitMQ's p99 in {over}"
        rows.append(("(per round) Wharf/RabbitMQ latency p99; the disk's own p99 at that rate committing in groups (a run of its own); Wharf's slow fdatasyncs during its run", " / ".join(cells) + said, "–"))
    # Round by round, how much of the 1% a p99 leaves each broker's messages over 1 ms
    # take, beside the machine's own trip in the same round: what the machine takes of
    # every broker's budget before any broker does anything.
    shares = {b: [share_over(r["latency"]["curve"], 1000) if r and r.get("latency") else None
                  for r in s.get("round_curves", {}).get(b, [])]
              for b in ("wharf", "nats", "rabbitmq")}
    lb = [l.get("loopback_over_1ms_pct") for l in limits]
    if shares["wharf"] and any(v is not None for v in lb):
        cells = []
        for i in range(len(shares["wharf"])):
            parts = []
            for b, label in (("wharf", "Wharf"), ("rabbitmq", "RabbitMQ"), ("nats", "core NATS")):
                v = shares[b][i] if i < len(shares[b]) else None
                if v is not None:
                    parts.append(f"{label} {v:.2f}%")
            if i < len(lb) and lb[i] is not None:
                parts.append(f"machine {lb[i]:.2f}%")
            cells.append(", ".join(parts) or "–")
        rows.append(("(per round) messages over 1 ms: each broker's latency run, and the machine's own trip (`wharf-bench loopback`) in the same round", " / ".join(cells), "–"))
    f99 = med([l.get("fio_fdatasync_p99_us") for l in limits])
    if lw is not None and f99 is not None:
        d = lw - f99 / 1000
        rows.append(("latency p99 within 0.5 ms of fio's fdatasync p99", f"{lw:.2f} ms vs {f99 / 1000:.2f} ms ({d:+.2f} ms)", d <= 0.5))
    else:
        rows.append(("latency p99 within 0.5 ms of fio's fdatasync p99", "–", None))
    # Not a target of its own: the same comparison against the disk measured the way the
    # workload is (see docs/benchmarks.md, "Latency").
    dd = med([l.get("disk_overwrite_p99_us") for l in limits])
    if lw is not None and dd is not None:
        d = lw - dd / 1000
        rows.append(("(limit) latency p99 within 0.5 ms of the disk's own p99 at that rate", f"{lw:.2f} ms vs {dd / 1000:.2f} ms ({d:+.2f} ms)", d <= 0.5))
    # An estimate of what a message that a consumer may see only once it is durable costs
    # at least: the cheapest broker trip measured here (core NATS, which stores nothing)
    # plus the disk at that rate, committing in groups, summed as independent draws (see
    # docs/benchmarks.md). The two were measured in separate runs, so a disk stall in one
    # and not the other moves it: an estimate, not a bound.
    fl = s.get("floors", {})
    fn, fw = med(fl.get("nats") or []), med(fl.get("wharf-nosync") or [])
    if fn is not None and lw is not None:
        per = " / ".join(f"{v:.2f}" for v in fl["nats"])
        half = f"; ½ RabbitMQ's p99 {lr / 2:.2f} ms is {'under' if lr / 2 < fn else 'over'} it" if lr else ""
        rows.append(("(estimate) p99 of core NATS's trip + the disk at that rate", f"{fn:.2f} ms ({per}); Wharf {lw:.2f} ms ({lw - fn:+.2f} ms){half}", "–"))
    if fw is not None and lw is not None:
        per = " / ".join(f"{v:.2f}" for v in fl["wharf-nosync"])
        rows.append(("(estimate) p99 of Wharf's own trip without the disk + the disk at that rate", f"{fw:.2f} ms ({per}); Wharf {lw:.2f} ms ({lw - fw:+.2f} ms)", "–"))
    r = ratio(g("wharf", "fanout", "msgs_per_s"), g("nats", "fanout", "msgs_per_s"))
    rows.append(("fanout to 4 groups ≥ core NATS", fmt(r, 2, "×"), None if r is None else r >= 1))
    iw = med(idle.get("wharf", []))
    rows.append(("idle RSS ≤ 16 MiB", fmt(iw, 1, " MiB"), None if iw is None else iw <= 16))
    pw = g("wharf", "e2e", "rss_peak_mib")
    rows.append(("RSS under e2e ≤ 128 MiB", fmt(pw, 1, " MiB"), None if pw is None else pw <= 128))
    return rows


def update_docs(path, text):
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} section to replace")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


# ---------------------------------------------------------------- main


def versions(bins):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"

    v = {"wharf": first_line([str(bins["wharf"]), "--version"])}
    v["wharf-nosync"] = v["wharf-http"] = v["wharf-otlp"] = v["wharf-traced"] = v["wharf-traced-1pct"] = v["wharf"]
    if "tansu" in bins:
        v["tansu"] = first_line([str(bins["tansu"]), "--version"])
    if "nats-server" in bins:
        v["jetstream"] = v["nats"] = first_line([str(bins["nats-server"]), "--version"])
    dpkg = first_line(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"])
    v["rabbitmq"] = f"rabbitmq-server {dpkg}"
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rate", type=int, default=2000, help="latency workload rate (msg/s)")
    ap.add_argument("--consume-messages", type=int, default=200_000)
    ap.add_argument("--brokers", default="wharf,wharf-nosync,wharf-http,tansu,jetstream,nats,rabbitmq")
    ap.add_argument("--workloads", default="latency,produce,consume,e2e,fanout,partitions,queue")
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="wharf, wharf-bench, tansu, nats-server, rabbitmq-server")
    ap.add_argument("--out", type=Path, help="results directory (default target/compare/<time>)")
    ap.add_argument("--docs", type=Path, help="replace the compare section of this markdown file")
    a = ap.parse_args()

    bins = {
        "wharf": ROOT / "target/release/wharf",
        "wharf-bench": ROOT / "target/release/wharf-bench",
        "nats-server": shutil.which("nats-server") or "/usr/sbin/nats-server",
        "rabbitmq-server": "/usr/lib/rabbitmq/bin/rabbitmq-server",
    }
    if shutil.which("tansu"):
        bins["tansu"] = shutil.which("tansu")
    for b in a.bin:
        k, v = b.split("=", 1)
        bins[k] = str(Path(v).resolve())
    brokers = [b for b in a.brokers.split(",") if b]
    for b in brokers:
        if b not in BROKERS:
            raise SystemExit(f"unknown broker {b}; known: {', '.join(BROKERS)}")
    need = {"wharf": ["wharf"], "wharf-nosync": ["wharf"], "wharf-otlp": ["wharf", "wharf-bench"], "wharf-traced": ["wharf", "wharf-bench"], "wharf-traced-1pct": ["wharf", "wharf-bench"], "wharf-http": ["wharf"], "tansu": ["tansu"], "jetstream": ["nats-server"], "nats": ["nats-server"],
            "rabbitmq": ["rabbitmq-server"]}
    for b in brokers:
        for n in need[b]:
            if n not in bins or not Path(bins[n]).exists():
                raise SystemExit(f"{b} needs {n}, which was not found (give --bin {n}=PATH)")
    workloads = [w for w in a.workloads.split(",") if w]

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = a.out or ROOT / "target/compare" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="wharf-compare-", dir=ROOT / "target"))
    meta = {"date": stamp, "rounds": a.rounds, "duration": a.duration, "args": a, "machine": machine(),
            "versions": versions(bins)}
    log(f"results in {outdir}")

    results, idle, limits = {}, {}, []
    running = []
    # RabbitMQ starts Erlang's port mapper (epmd) as a daemon outside its session.
    epmd_was_running = subprocess.run(["pgrep", "-x", "epmd"], capture_output=True).returncode == 0

    def cleanup(*_):
        for b in running:
            b.stop()
        running.clear()
        if not epmd_was_running and shutil.which("epmd"):
            subprocess.run(["epmd", "-kill"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
    try:
        try:
            mb = iperf3_loopback()
        except Exception as e:  # iperf3 missing or refused: note it, go on
            log(f"iperf3: {e}")
            mb = None
        for r in range(1, a.rounds + 1):
            log(f"== round {r}/{a.rounds}: fio")
            lim = machine_limits(scratch, bins, a.rate)
            if mb is not None:
                lim["iperf3_loopback_mb_s"] = mb
            limits.append(lim)
            log(f"   fio: {json.dumps({k: round(v) for k, v in lim.items() if not k.endswith('_curve')})}")
            # fio just wrote a GiB: give the disk (and the host under a VM) time to
            # finish with it, or the first broker's fsyncs pay for fio's writes.
            time.sleep(SETTLE_AFTER_FIO_S)
            # Alternate the order, so no broker always runs first (or on a warmer disk).
            order = brokers if r % 2 else list(reversed(brokers))
            for name in order:
                broker = BROKERS[name](bins, scratch / f"{name}-{r}")
                log(f"== round {r}/{a.rounds}: {name}")
                try:
                    broker.start()
                except Exception as e:
                    log(f"   {name} did not start: {e}")
                    broker.stop()
                    continue
                running.append(broker)
                time.sleep(2)
                idle.setdefault(name, []).append(rss_bytes(broker.sid) / MIB)
                for wl in workloads:
                    if wl not in broker.workloads:
                        continue
                    label = f"{name}-{wl}-r{r}"
                    res = run_workload(bins, broker, wl, a, outdir, label)
                    results.setdefault((name, wl), []).append(res)
                    if res:
                        lat = res["latency"]
                        log(f"   {wl:<10} {res['msgs_per_s']:>12.0f} msg/s  cpu {res['cpu_us_per_msg'] or 0:7.2f} µs/msg"
                            f"  rss {res['rss_peak'] / MIB:6.1f} MiB"
                            + (f"  p99 {lat['p99_us'] / 1000:.2f} ms" if lat else "")
                            + (f"  slow fsyncs {res['slow_syncs']}" if res["slow_syncs"] else ""))
                broker.stop()
                running.remove(broker)
                shutil.copy(broker.workdir / "broker.log", outdir / f"{name}-r{r}-broker.log")
                shutil.rmtree(broker.workdir, ignore_errors=True)
    finally:
        cleanup()

    s = summarize(results, limits, brokers, workloads)
    # Latency plots: the median round of each broker, one chart per workload.
    plots = {}
    for wl in ("latency", "e2e"):
        reports = []
        for b in brokers:
            runs = [r for r in results.get((b, wl), []) if r and r.get("latency")]
            if runs:
                runs.sort(key=lambda r: r["latency"]["p99_us"])
                reports.append(f"{b}={runs[len(runs) // 2]['report']}")
        if reports:
            png = outdir / f"{wl}-latency.png"
            subprocess.run([str(bins["wharf-bench"]), "plot", "--out", str(png),
                            "--title", f"{wl}: end-to-end latency by percentile (median round)", *reports],
                           check=False)
            if png.exists():
                plots[wl] = png
    if a.docs:
        # Plots referenced from the docs live next to them.
        img = a.docs.parent / "img"
        img.mkdir(exist_ok=True)
        for wl, png in list(plots.items()):
            dest = img / f"compare-{wl}-latency.png"
            shutil.copy(png, dest)
            plots[wl] = os.path.relpath(dest, a.docs.parent)
    s["floors"] = {b: floors(results, limits, b) for b in ("nats", "wharf-nosync")}
    s["round_p99"] = {b: round_p99s(results, b) for b in ("wharf", "rabbitmq")}
    s["round_curves"] = {b: results.get((b, "latency"), []) for b in ("wharf", "nats", "rabbitmq")}
    s["round_syncs"] = [r.get("syncs") if r else None for r in results.get(("wharf", "latency"), [])]
    text = render(meta, s, idle, limits, brokers, workloads, plots)
    (outdir / "table.md").write_text(text + "\n")
    raw = {f"{b}/{w}": v for (b, w), v in results.items()}
    (outdir / "results.json").write_text(json.dumps(
        {"meta": {k: v for k, v in meta.items() if k != "args"}, "limits": limits, "idle_rss_mib": idle,
         "runs": raw}, indent=1, default=str))
    print(text)
    if a.docs:
        update_docs(a.docs, text)
        log(f"updated {a.docs}")


if __name__ == "__main__":
    main()
