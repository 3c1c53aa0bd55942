# shellcheck shell=bash
# A private RabbitMQ node for benchmarks, next to Wharf: source this file, then
#
#   rabbitmq_start 5672 /tmp/rmq-data     # boots a node, waits until AMQP answers
#   wharf-bench --driver amqp --brokers "$(rabbitmq_url 5672)" e2e --duration 10
#   rabbitmq_stop /tmp/rmq-data           # stops it (and epmd, if rabbitmq_start started it)
#
# The node is Debian's rabbitmq-server (apt-get install rabbitmq-server; no systemd
# needed), run as the calling user, with everything under the data dir: Mnesia and
# message store, logs, config, an empty plugin list (no management plugin: faster
# boot) and a home with its own Erlang cookie, so rabbitmqctl reaches it with
#   HOME=DATA_DIR/home rabbitmqctl -n "$(rabbitmq_node PORT)" status
# The Erlang distribution port is AMQP port + 20000 (RabbitMQ's own rule) unless
# RABBITMQ_DIST_PORT is set. The Debian scripts in /usr/sbin switch to the rabbitmq
# user when run as root; the ones in /usr/lib/rabbitmq/bin used here do not.

RABBITMQ_BIN_DIR=${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}

rabbitmq_node() { echo "wharfbench-$1@localhost"; }
rabbitmq_url() { echo "amqp://guest:guest@127.0.0.1:$1/%2f"; }

# rabbitmq_start PORT DATA_DIR [TIMEOUT_S]: boots a node in the background, returns once
# it accepts AMQP connections (about 6 s on an idle 2-core machine), or fails with the
# end of its log after TIMEOUT_S (default 120).
rabbitmq_start() {
    local port=$1 dir=$2 timeout=${3:-120}
    if [[ ! -x "$RABBITMQ_BIN_DIR/rabbitmq-server" ]]; then
        echo "rabbitmq_start: $RABBITMQ_BIN_DIR/rabbitmq-server missing: apt-get install rabbitmq-server" >&2
        return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "rabbitmq_start: port $port is already in use" >&2
        return 1
    fi
    mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
    dir=$(cd "$dir" && pwd)
    if [[ ! -e "$dir/home/.erlang.cookie" ]]; then
        (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/home/.erlang.cookie")
        chmod 0400 "$dir/home/.erlang.cookie"
    fi
    echo '[].' > "$dir/enabled_plugins"
    echo "listeners.tcp.default = $port" > "$dir/rabbitmq.conf"
    rm -f "$dir/started-epmd"
    (exec 3<>/dev/tcp/127.0.0.1/4369) 2>/dev/null || touch "$dir/started-epmd"
    # setsid: its own process group, so rabbitmq_stop can kill the VM and its helpers.
    HOME="$dir/home" \
    RABBITMQ_NODENAME="$(rabbitmq_node "$port")" \
    RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="${RABBITMQ_DIST_PORT:-$((port + 20000))}" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        setsid "$RABBITMQ_BIN_DIR/rabbitmq-server" < /dev/null > "$dir/server.log" 2>&1 &
    echo $! > "$dir/server.pid"
    local deadline=$((SECONDS + timeout))
    # The AMQP listener opens last, once the node has booted.
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "rabbitmq_start: the node on port $port did not come up; $dir/server.log ends:" >&2
            tail -n 30 "$dir/server.log" >&2
            rabbitmq_stop "$dir"
            return 1
        fi
        sleep 0.2
    done
}

# rabbitmq_stop DATA_DIR: stops the node that rabbitmq_start started there. SIGTERM makes
# the start script stop the node cleanly (as rabbitmqctl stop would); after 30 s its
# process group is killed. epmd is stopped too if rabbitmq_start started it (epmd -kill
# refuses while other nodes are registered).
rabbitmq_stop() {
    local dir=$1 pid i
    [[ -f "$dir/server.pid" ]] || return 0
    pid=$(cat "$dir/server.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/server.pid"
    if [[ -f "$dir/started-epmd" ]]; then
        epmd -kill >/dev/null 2>&1 || true
        rm -f "$dir/started-epmd"
    fi
}
