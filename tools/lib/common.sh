# shellcheck shell=bash
# Shared by the tools/ scripts: install what a fresh Debian machine lacks and start the
# local RabbitMQ and MariaDB. Sourced, never executed.

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

# A TCP connect to MariaDB's port, as for the broker.
database_answers() {
    timeout 2 bash -c '</dev/tcp/127.0.0.1/3306' 2>/dev/null
}

# ensure_mariadb: MariaDB at 127.0.0.1:3306 with root usable over TCP without a password,
# as the store tests (autoscaler/tests/store.rs) expect: Debian's mariadb-server,
# installed and started when nothing answers. Each test creates and drops a database of
# its own, so nothing else is created here.
ensure_mariadb() {
    if ! database_answers; then
        [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
        # The package's postinst may have started it already (sysv init outside systemd).
        if ! database_answers; then
            log "starting mariadbd"
            install -d -o mysql -g mysql /run/mysqld
            if [ ! -d /var/lib/mysql/mysql ]; then
                mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
            fi
            start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
                --user=mysql --bind-address=127.0.0.1 --port=3306
        fi
        for _ in $(seq 1 60); do
            if database_answers && mariadb-admin ping >/dev/null 2>&1; then
                break
            fi
            sleep 1
        done
        if ! database_answers; then
            echo "ERROR: MariaDB did not start within 60 s" >&2
            exit 1
        fi
    fi
    if ! mariadb -h 127.0.0.1 -u root -e 'SELECT 1' >/dev/null 2>&1; then
        # Debian's root logs in through the unix socket only; the tests come over TCP, as
        # root@localhost (127.0.0.1 resolves to it) or root@127.0.0.1 (skip-name-resolve).
        # The password first: sqlx cannot answer the unix_socket plugin.
        log "letting root in over TCP from 127.0.0.1 without a password"
        mariadb -u root -e "ALTER USER 'root'@'localhost'
                IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
            CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
    fi
}

# ensure_build_tools: cargo must exist; a C compiler too (ring, the TLS library, builds C).
ensure_build_tools() {
    if ! command -v cargo >/dev/null; then
        echo "ERROR: cargo not found: install the Rust toolchain (https://rustup.rs)" >&2
        exit 1
    fi
    command -v cc >/dev/null || apt_install gcc libc6-dev
}

# create_agent_user USER PASSWORD VHOST EXCHANGE: the agents' broker login on the local
# RabbitMQ (made again when it exists), with exactly the permissions doc/security.md
# gives: configure nothing; write (publish) the exchange only, on the routing keys
# heartbeat.*, metrics.* and pool-ack.* only; read (consume) splitter queues only.
create_agent_user() {
    local user=$1 password=$2 vhost=$3 exchange=$4
    local exchange_re=${exchange//./\\.}
    rabbitmqctl -q delete_user "$user" >/dev/null 2>&1 || true
    rabbitmqctl -q add_user "$user" "$password" >/dev/null
    rabbitmqctl -q set_permissions -p "$vhost" "$user" \
        '^$' "^${exchange_re}\$" "^${exchange_re}\\.splitter\\." >/dev/null
    rabbitmqctl -q set_topic_permissions -p "$vhost" "$user" "$exchange" \
        '^(heartbeat|metrics|pool-ack)\.' '^$' >/dev/null
}
