# shellcheck shell=bash
# Shared by the tools/ scripts: install what a fresh Debian machine lacks and start the
# local RabbitMQ. Sourced, never executed.

log() { printf '==> %s\n' "$*"; }

# apt_install PACKAGE...: installs the packages (root only; says so otherwise).
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: missing packages ($*); run as root or install them with apt-get" >&2
        exit 1
    fi
    log "installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A TCP connect to the AMQP port is enough to know that something listens.
broker_answers() {
    timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null
}

# ensure_rabbitmq: a broker at 127.0.0.1:5672, installed and started when none answers.
ensure_rabbitmq() {
    if broker_answers; then
        command -v rabbitmqctl >/dev/null || apt_install rabbitmq-server
        return
    fi
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting rabbitmq-server"
    rabbitmq-server -detached
    for _ in $(seq 1 60); do
        if broker_answers && rabbitmqctl -q await_startup >/dev/null 2>&1; then
            return
        fi
        sleep 1
    done
    echo "ERROR: RabbitMQ did not start within 60 s" >&2
    exit 1
}

# ensure_build_tools: cargo must exist; a C compiler too (ring, the TLS library, builds C).
ensure_build_tools() {
    if ! command -v cargo >/dev/null; then
        echo "ERROR: cargo not found: install the Rust toolchain (https://rustup.rs)" >&2
        exit 1
    fi
    command -v cc >/dev/null || apt_install gcc libc6-dev
}
