# shellcheck shell=bash
# A JetStream nats-server for benchmark scripts. Source it, then:
#
#   nats_start PORT STORE_DIR    starts `nats-server -js` on 127.0.0.1:PORT with its
#                                JetStream store (and log, and pid file) in STORE_DIR, in
#                                the background; returns once the port answers. Sets
#                                NATS_PID and NATS_URL (nats://127.0.0.1:PORT).
#   nats_stop [STORE_DIR]        stops the server started by nats_start (NATS_PID, or the
#                                pid recorded in STORE_DIR/nats-server.pid) and waits for it.
#
# Needs Debian's nats-server package (apt-get install -y nats-server). Its JetStream file
# store fsyncs on a timer, as a default deployment does (every 60 s in 2.9; 2.10 and later
# have sync_interval, default 2 minutes): a PubAck means stored, not fsynced.

nats_bin() {
    command -v nats-server 2>/dev/null || { [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server; }
}

nats_start() {
    local port="${1:?nats_start PORT STORE_DIR}" store="${2:?nats_start PORT STORE_DIR}" bin
    bin="$(nats_bin)" || { echo "nats-server not found: apt-get install -y nats-server" >&2; return 1; }
    mkdir -p "$store"
    "$bin" -js -sd "$store" -a 127.0.0.1 -p "$port" >"$store/nats-server.log" 2>&1 &
    NATS_PID=$!
    NATS_URL="nats://127.0.0.1:$port"
    echo "$NATS_PID" >"$store/nats-server.pid"
    local i
    for i in $(seq 1 100); do
        # Our server's own "ready" too, so another process on the port does not count.
        if grep -q "Server is ready" "$store/nats-server.log" &&
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "nats-server (pid $NATS_PID) on $NATS_URL, store $store" >&2
            return 0
        fi
        if ! kill -0 "$NATS_PID" 2>/dev/null; then
            echo "nats-server exited; its log:" >&2
            cat "$store/nats-server.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nats-server did not answer on port $port within 10 s" >&2
    nats_stop "$store"
    return 1
}

nats_stop() {
    local pid="${NATS_PID:-}"
    if [[ -z "$pid" && -n "${1:-}" && -f "$1/nats-server.pid" ]]; then
        pid="$(cat "$1/nats-server.pid")"
    fi
    [[ -n "$pid" ]] || return 0
    kill "$pid" 2>/dev/null || true
    # Only our own child can be waited for; a pid from the file is polled instead.
    wait "$pid" 2>/dev/null || while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    [[ -n "${1:-}" ]] && rm -f "$1/nats-server.pid"
    unset NATS_PID
}
