#!/usr/bin/env bash
# Wharf next to its peers, measured in one sitting on this machine, into docs/benchmarks.md.
#
#   bench/compare.sh [compare.py options]      e.g. --rounds 5 --duration 20
#
# 1. Installs what is missing: Debian's nats-server (JetStream and core NATS),
#    rabbitmq-server, fio, iperf3 and fonts-dejavu-core (the plots' font); tansu (a
#    Kafka-compatible broker in Rust) with `cargo install --locked --features libsql`
#    into target/peers/tansu, for its SQLite storage engine, the one that keeps data in
#    a local file as Wharf does (about 20 minutes the first time; set
#    WHARF_COMPARE_NO_TANSU=1 to leave it out).
# 2. Builds wharf and wharf-bench in release mode.
# 3. Runs bench/compare.py: every broker in turn (one at a time, started afresh each
#    round on a loopback port, in a scratch directory under target/), every workload,
#    the rounds alternating the order, fio and iperf3 in the same sitting; medians,
#    Wharf/peer ratios, broker CPU per message and RSS from /proc, the targets checked.
#    The tables replace the section between the compare markers in docs/benchmarks.md;
#    raw reports stay in target/compare/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
[[ -x /usr/sbin/rabbitmq-server ]] || missing+=(rabbitmq-server)
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # Without systemd the packages' services cannot start; nothing is left listening.
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

brokers="wharf,wharf-nosync,wharf-http,tansu,jetstream,nats,rabbitmq"
tansu_version=0.6.0
tansu=target/peers/tansu/bin/tansu
bin_args=()
if [[ "${WHARF_COMPARE_NO_TANSU:-}" == 1 ]]; then
    brokers="wharf,wharf-nosync,wharf-http,jetstream,nats,rabbitmq"
else
    if [[ ! -x "$tansu" ]]; then
        echo "== cargo install tansu $tansu_version (once; takes a while)" >&2
        cargo install --locked --quiet --version "$tansu_version" --features libsql \
            --root target/peers/tansu tansu
    fi
    bin_args+=(--bin "tansu=$tansu")
fi

echo "== cargo build --release -p wharf-server -p wharf-bench" >&2
cargo build --release --locked -q -p wharf-server -p wharf-bench

exec python3 bench/compare.py --brokers "$brokers" "${bin_args[@]}" --docs docs/benchmarks.md "$@"
