#!/bin/bash
# start-nova.sh - run a real OpenStack Nova (Debian bookworm = OpenStack Zed,
# nova 26.2.2) on ONE machine, loopback only, as a test fixture.
#
#   MariaDB + RabbitMQ + placement-api + glance-api (file store, no auth)
#   + nova-api (noauth2) + nova-conductor + nova-scheduler
#   + nova-compute (compute_driver = fake.FakeDriver)
#   + a ~60-line Neutron stub (nova has no "no network service" mode).
#
# Idempotent: installs missing packages, (re)writes configs under
# $NOVA_FIXTURE_DIR/etc, creates DBs, runs schema syncs, starts what is not already
# running (pid files in $NOVA_FIXTURE_DIR/run, logs in $NOVA_FIXTURE_DIR/log) and waits until
# the compute API answers and the compute host is schedulable.
#
# Auth: nova/placement use "noauth2":  X-Auth-Token: <user>:<project>
#       user "admin" => admin.  e.g.  -H 'X-Auth-Token: admin:admin'
# Endpoints: nova http://127.0.0.1:8774/v2.1  placement :8778  glance :9292
#            fake neutron :9696
set -euo pipefail

BASE=${NOVA_FIXTURE_DIR:-/tmp/nova-fixture}
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log STATE=$BASE/state BIN=$BASE/bin LIB=$BASE/lib
PY=/usr/bin/python3                       # NOT a pyenv/venv python: debs install into /usr/lib/python3
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DBUSER=openstack DBPASS=openstack
DB="mysql+pymysql://$DBUSER:$DBPASS@127.0.0.1"
COMPUTE_HOST=${COMPUTE_HOST:-fake-compute-1}
NOVA_PORT=8774 PLACEMENT_PORT=8778 GLANCE_PORT=9292 NEUTRON_PORT=9696
T0=$(date +%s.%N)
trap 'echo "start-nova.sh FAILED at line $LINENO (see $LOG/*.log)" >&2' ERR
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $T0" | bc)"; }

mkdir -p "$ETC"/{nova,placement,glance} "$RUN" "$LOG" "$BIN" "$LIB" \
         "$STATE"/nova/{instances,lock} "$STATE"/glance/{images,staging,tasks,cache,lock}

# ---------------------------------------------------------------- packages
need=()
$PY -c 'import nova, placement, glance, pymysql' 2>/dev/null ||
    need+=(python3-nova python3-placement python3-glance python3-pymysql)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
[ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
command -v ss >/dev/null || need+=(iproute2)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep postinst from starting daemons
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
    fi
    # (autoscaler: apt-get update first, or a fresh machine's empty lists find nothing)
    apt-get update -qq >"$LOG/apt-update.log" 2>&1 || { tail -20 "$LOG/apt-update.log"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
        >"$LOG/apt-install.log" 2>&1 || { tail -20 "$LOG/apt-install.log"; exit 1; }
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# ---------------------------------------------------------------- helper files
cat >"$LIB/nova_noauth_token.py" <<'EOF'
"""Paste filter placed right after nova's noauth2 filter.

noauth2 builds a RequestContext from "X-Auth-Token: user:project" but does
not store the token in it.  Nova's Glance/Neutron clients use the context
token as user auth; with None, keystoneauth raises "No valid authentication
is available" (boot fails).  Copy the header into the context.
"""


class TokenToContext(object):
    def __init__(self, app):
        self.app = app

    @classmethod
    def factory(cls, global_conf, **local_conf):
        return cls

    def __call__(self, environ, start_response):
        ctx = environ.get('nova.context')
        if ctx is not None and not ctx.auth_token:
            ctx.auth_token = environ.get('HTTP_X_AUTH_TOKEN')
        return self.app(environ, start_response)
EOF

cat >"$LIB/fake_neutron.py" <<'EOF'
"""Minimal Neutron API stub (NOT a real Neutron).

Nova Zed always talks to Neutron, even for servers booted with
"networks": "none": server create needs [neutron] admin auth, GET
/servers/{id} and /servers/detail list ports for security groups, delete
lists ports to deallocate.  Every collection GET answers an empty list.
"""
import json, re, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOST, PORT = sys.argv[1], int(sys.argv[2])


class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = re.sub(r'\.json$', '', urlparse(self.path).path.rstrip('/'))
        parts = [p for p in path.split('/') if p]
        if not parts:
            return self._send(200, {'versions': [{'id': 'v2.0', 'status': 'CURRENT', 'links': [
                {'rel': 'self', 'href': 'http://%s:%d/v2.0/' % (HOST, PORT)}]}]})
        if parts[0] == 'v2.0':
            parts = parts[1:]
        if len(parts) == 1:                       # /v2.0/ports -> {"ports": []}
            return self._send(200, {parts[0].replace('-', '_'): []})
        if not parts:
            return self._send(200, {'resources': []})
        self.do_POST()

    def do_POST(self):
        self._send(404, {'NeutronError': {'type': 'NotFound', 'detail': '',
                                          'message': 'fake neutron: not found'}})
    do_PUT = do_DELETE = do_POST

    def log_message(self, fmt, *args):
        sys.stderr.write('%s %s\n' % (self.log_date_time_string(), fmt % args))
        sys.stderr.flush()


ThreadingHTTPServer((HOST, PORT), H).serve_forever()
EOF

cat >"$LIB/placement_server.py" <<'EOF'
"""Serve placement.wsgi:init_application with a threaded wsgiref server
(the packaged /usr/bin/placement-api test server is single threaded)."""
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from placement.wsgi import init_application


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        pass                              # placement logs requests itself


make_server(sys.argv[1], int(sys.argv[2]), init_application(),
            server_class=Server, handler_class=Handler).serve_forever()
EOF

# console-script wrappers (the python3-* debs ship the modules, the nova-*
# daemon packages would also pull init scripts, dbconfig, users, libvirt...)
mkwrap() {  # name module
    printf '#!%s\nimport sys\nsys.path.insert(0, "%s")\nsys.argv[0] = "%s"\nfrom %s import main\nsys.exit(main())\n' \
        "$PY" "$LIB" "$1" "$2" >"$BIN/$1"
    chmod +x "$BIN/$1"
}
mkwrap nova-api nova.cmd.api
mkwrap nova-conductor nova.cmd.conductor
mkwrap nova-scheduler nova.cmd.scheduler
mkwrap nova-compute nova.cmd.compute
mkwrap nova-manage nova.cmd.manage
mkwrap glance-api glance.cmd.api
mkwrap glance-manage glance.cmd.manage
mkwrap placement-manage placement.cmd.manage

# ---------------------------------------------------------------- configs
cat >"$ETC/nova/nova.conf" <<EOF
[DEFAULT]
host = $COMPUTE_HOST
my_ip = 127.0.0.1
state_path = $STATE/nova
instances_path = $STATE/nova/instances
compute_driver = fake.FakeDriver
transport_url = rabbit://guest:guest@127.0.0.1:5672/
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $NOVA_PORT
osapi_compute_workers = 1
# how often nova-compute reports in; makes the fixture notice state quickly
report_interval = 10
debug = false
# oslo.messaging 14 warns "Using RPCClient manually..." on every RPC client
# nova 26 creates (hundreds of lines per minute in nova-api.log): silence it
default_log_levels = amqp=WARN,amqplib=WARN,boto=WARN,qpid=WARN,sqlalchemy=WARN,suds=INFO,oslo.messaging=INFO,oslo_messaging=INFO,oslo_messaging.rpc.client=ERROR,iso8601=WARN,requests.packages.urllib3.connectionpool=WARN,urllib3.connectionpool=WARN,websocket=WARN,requests.packages.urllib3.util.retry=WARN,urllib3.util.retry=WARN,keystonemiddleware=WARN,routes.middleware=WARN,stevedore=WARN,taskflow=WARN,keystoneauth=WARN,oslo.cache=INFO,oslo_policy=INFO,dogpile.core.dogpile=INFO,glanceclient=WARN,oslo.privsep.daemon=INFO

[api]
auth_strategy = noauth2

[wsgi]
api_paste_config = $ETC/nova/api-paste.ini

[conductor]
workers = 1

[scheduler]
workers = 1
discover_hosts_in_cells_interval = 30

[placement]
auth_type = admin_token
endpoint = http://127.0.0.1:$PLACEMENT_PORT
token = admin:admin
endpoint_override = http://127.0.0.1:$PLACEMENT_PORT

[glance]
endpoint_override = http://127.0.0.1:$GLANCE_PORT

[neutron]
auth_type = admin_token
endpoint = http://127.0.0.1:$NEUTRON_PORT
token = admin:admin
endpoint_override = http://127.0.0.1:$NEUTRON_PORT

[quota]
instances = -1
cores = -1
ram = -1

[vnc]
enabled = false

[oslo_concurrency]
lock_path = $STATE/nova/lock

[oslo_messaging_notifications]
driver = noop
EOF

# DB credentials only for api/conductor/scheduler/nova-manage; nova-compute
# must not have them (else it logs "No DB access allowed in nova-compute").
cat >"$ETC/nova/nova-db.conf" <<EOF
[api_database]
connection = $DB/nova_api?charset=utf8

[database]
connection = $DB/nova?charset=utf8
EOF

cat >"$ETC/nova/api-paste.ini" <<'EOF'
[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2: oscomputeversion_legacy_v2
/v2.1: oscomputeversion_v2
/v2/+: openstack_compute_api_v21_legacy_v2_compatible
/v2.1/+: openstack_compute_api_v21

[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler authtoken keystonecontext osapi_compute_app_v21
noauth2 = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler noauth2 noauth_token osapi_compute_app_v21

[composite:openstack_compute_api_v21_legacy_v2_compatible]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler authtoken keystonecontext legacy_v2_compatible osapi_compute_app_v21
noauth2 = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler noauth2 noauth_token legacy_v2_compatible osapi_compute_app_v21

[filter:request_log]
paste.filter_factory = nova.api.openstack.requestlog:RequestLog.factory
[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory
[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory
[filter:noauth2]
paste.filter_factory = nova.api.openstack.auth:NoAuthMiddleware.factory
[filter:noauth_token]
paste.filter_factory = nova_noauth_token:TokenToContext.factory
[filter:osprofiler]
paste.filter_factory = nova.profiler:WsgiMiddleware.factory
[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
[filter:legacy_v2_compatible]
paste.filter_factory = nova.api.openstack:LegacyV2CompatibleWrapper.factory
[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory
[pipeline:oscomputeversions]
pipeline = cors faultwrap request_log http_proxy_to_wsgi oscomputeversionapp
[pipeline:oscomputeversion_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi oscomputeversionapp_v2
[pipeline:oscomputeversion_legacy_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi legacy_v2_compatible oscomputeversionapp_v2
[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory
[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = nova
[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
EOF

cat >"$ETC/placement/placement.conf" <<EOF
[DEFAULT]
debug = false

[api]
auth_strategy = noauth2

[placement_database]
connection = $DB/placement?charset=utf8
EOF

cat >"$ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
# 0 = serve in the parent process, no forked workers
workers = 0
enabled_backends = file:file
image_cache_dir = $STATE/glance/cache
debug = false

[glance_store]
default_backend = file

[file]
filesystem_store_datadir = $STATE/glance/images/

[os_glance_staging_store]
filesystem_store_datadir = $STATE/glance/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $STATE/glance/tasks/

[database]
connection = $DB/glance?charset=utf8

[paste_deploy]
# empty flavor => pipeline "glance-api" (unauthenticated-context, no keystone)
flavor =
config_file = $ETC/glance/glance-api-paste.ini

[oslo_concurrency]
lock_path = $STATE/glance/lock

[oslo_policy]
policy_file = $ETC/glance/policy.yaml

[oslo_messaging_notifications]
driver = noop
EOF

# the no-auth context is is_admin=True but has no "admin" role, and
# publicize_image is "role:admin" => allow public images for everybody
cat >"$ETC/glance/policy.yaml" <<'EOF'
"publicize_image": ""
EOF

cat >"$ETC/glance/glance-api-paste.ini" <<'EOF'
[pipeline:glance-api]
pipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation unauthenticated-context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource
[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory
[filter:healthcheck]
paste.filter_factory = oslo_middleware:Healthcheck.factory
backends = disable_by_file
disable_by_file_path = /nonexistent/glance/healthcheck_disable
[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory
[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = glance
oslo_config_program = glance-api
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory
EOF

# ---------------------------------------------------------------- MariaDB
if ! mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1
    touch "$LOG/mariadb.log" && chown mysql "$LOG/mariadb.log"
    start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$RUN/mariadb.pid" \
        --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1 --log-error="$LOG/mariadb.log"
    for _ in $(seq 60); do mysqladmin --connect-timeout=2 ping >/dev/null 2>&1 && break; sleep 1; done
    mysqladmin ping >/dev/null
fi
{
    for d in nova_api nova nova_cell0 placement glance; do echo "CREATE DATABASE IF NOT EXISTS $d CHARACTER SET utf8;"; done
    for h in localhost 127.0.0.1; do
        echo "CREATE USER IF NOT EXISTS '$DBUSER'@'$h' IDENTIFIED BY '$DBPASS';"
        for d in nova_api nova nova_cell0 placement glance; do echo "GRANT ALL PRIVILEGES ON $d.* TO '$DBUSER'@'$h';"; done
    done
} | mysql

# ---------------------------------------------------------------- RabbitMQ
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
       RABBITMQ_PID_FILE=$RUN/rabbitmq/rabbitmq.pid \
       RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
mkdir -p "$RUN/rabbitmq" && chown rabbitmq:rabbitmq "$RUN/rabbitmq"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# (not rabbitmq-diagnostics: any Erlang CLI call spawns an epmd daemon)
if ! port_open 5672; then
    log "starting RabbitMQ"
    rm -f "$RABBITMQ_PID_FILE"
    epmd_before=$(ss -ltnpH 'sport = :4369' 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
    rabbitmq-server -detached
    rabbitmqctl -q wait "$RABBITMQ_PID_FILE" --timeout 120
    cp "$RABBITMQ_PID_FILE" "$RUN/rabbitmq.pid"
    if [ -z "$epmd_before" ]; then     # epmd was spawned by us -> stop-nova.sh stops it
        ss -ltnpH 'sport = :4369' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 >"$RUN/epmd.pid" || true
    fi
fi

# ---------------------------------------------------------------- schemas
NOVA_CONF=(--config-file "$ETC/nova/nova.conf" --config-file "$ETC/nova/nova-db.conf")
ncells=$(mysql -N -e 'SELECT COUNT(*) FROM nova_api.cell_mappings' 2>/dev/null || echo 0)
if [ -f "$STATE/.schemas-ok" ] && [ "$ncells" -ge 2 ] && [ -z "${FORCE_DB_SYNC:-}" ]; then
    log "schemas already synced (FORCE_DB_SYNC=1 to redo)"
else
    log "db sync (placement, glance, nova_api, cell0, cell1)"
    "$BIN/placement-manage" --config-file "$ETC/placement/placement.conf" db sync >>"$LOG/dbsync.log" 2>&1
    "$BIN/glance-manage" --config-file "$ETC/glance/glance-api.conf" db_sync >>"$LOG/dbsync.log" 2>&1
    "$BIN/nova-manage" "${NOVA_CONF[@]}" api_db sync >>"$LOG/dbsync.log" 2>&1
    "$BIN/nova-manage" "${NOVA_CONF[@]}" cell_v2 map_cell0 --database_connection "$DB/nova_cell0?charset=utf8" >>"$LOG/dbsync.log" 2>&1
    cells=$("$BIN/nova-manage" "${NOVA_CONF[@]}" cell_v2 list_cells 2>/dev/null || true)
    grep -q ' cell1 ' <<<"$cells" ||
        "$BIN/nova-manage" "${NOVA_CONF[@]}" cell_v2 create_cell --name cell1 >>"$LOG/dbsync.log" 2>&1
    "$BIN/nova-manage" "${NOVA_CONF[@]}" db sync >>"$LOG/dbsync.log" 2>&1
    touch "$STATE/.schemas-ok"
fi
log "schemas ready ($(elapsed)s)"

# ---------------------------------------------------------------- daemons
JUST_STARTED=
# PID 1 here reaps orphans lazily: a killed daemon can linger as a zombie,
# which "kill -0" reports as alive
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
start_daemon() {  # name cmd...
    local name=$1; shift
    local pidf=$RUN/$name.pid
    if [ -f "$pidf" ] && alive "$(cat "$pidf")"; then
        log "$name already running (pid $(cat "$pidf"))"; return 0
    fi
    setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
    echo $! >"$pidf"
    JUST_STARTED="$JUST_STARTED $name"
    log "started $name (pid $!)"
}
wait_http() {  # name url [header]
    local code
    for _ in $(seq 120); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Auth-Token: admin:admin' "$2" || true)
        case $code in 2??|3??) return 0 ;; esac
        sleep 0.5
    done
    log "ERROR: $1 did not answer at $2 (last code $code); see $LOG/$1.log"; return 1
}

start_daemon fake-neutron "$PY" "$LIB/fake_neutron.py" 127.0.0.1 $NEUTRON_PORT
start_daemon glance-api "$BIN/glance-api" --config-file "$ETC/glance/glance-api.conf"
start_daemon placement-api env OS_PLACEMENT_CONFIG_DIR="$ETC/placement" "$PY" "$LIB/placement_server.py" 127.0.0.1 $PLACEMENT_PORT
start_daemon nova-conductor "$BIN/nova-conductor" "${NOVA_CONF[@]}"
start_daemon nova-scheduler "$BIN/nova-scheduler" "${NOVA_CONF[@]}"
start_daemon nova-api "$BIN/nova-api" "${NOVA_CONF[@]}"
wait_http placement-api http://127.0.0.1:$PLACEMENT_PORT/
# nova-compute registers its resource provider in placement at start-up
COMPUTE_T0=$(date -u +%Y-%m-%dT%H:%M:%S)
start_daemon nova-compute "$BIN/nova-compute" --config-file "$ETC/nova/nova.conf"   # no DB creds
wait_http fake-neutron http://127.0.0.1:$NEUTRON_PORT/
wait_http glance-api http://127.0.0.1:$GLANCE_PORT/v2/images
wait_http nova-api http://127.0.0.1:$NOVA_PORT/v2.1/flavors

# ---------------------------------------------------------------- compute host
# compute node record -> resource provider in placement -> map the host into
# cell1 (discover_hosts) -> hypervisor visible in the API (needs the mapping)
api() { curl -sf -H 'X-Auth-Token: admin:admin' "http://127.0.0.1:$NOVA_PORT/v2.1$1"; }
for i in $(seq 240); do
    out=$(curl -sf -H 'X-Auth-Token: admin:admin' "http://127.0.0.1:$PLACEMENT_PORT/resource_providers?name=$COMPUTE_HOST" || true)
    grep -q "\"$COMPUTE_HOST\"" <<<"$out" && break
    [ "$i" = 240 ] && { log "ERROR: no resource provider for $COMPUTE_HOST; see $LOG/nova-compute.log"; exit 1; }
    sleep 0.5
done
for i in $(seq 30); do
    out=$(api /os-hypervisors || true)
    grep -q "\"$COMPUTE_HOST\"" <<<"$out" && break
    [ "$i" = 30 ] && { log "ERROR: $COMPUTE_HOST not mapped to a cell; see $LOG/dbsync.log"; exit 1; }
    "$BIN/nova-manage" "${NOVA_CONF[@]}" cell_v2 discover_hosts >>"$LOG/dbsync.log" 2>&1
done
# RPC servers consuming? (after a restart the old service record still looks "up")
deadline=$(( $(date +%s) + 120 ))
while :; do
    q=$(rabbitmqctl -q list_queues name consumers 2>/dev/null || true)
    ok=1
    for name in conductor scheduler "compute.$COMPUTE_HOST"; do
        awk -v n="$name" '$1 == n && $2 > 0 {f = 1} END {exit !f}' <<<"$q" || ok=0
    done
    [ $ok = 1 ] && break
    [ "$(date +%s)" -gt $deadline ] && { log "ERROR: conductor/scheduler/compute not consuming RPC; see $LOG"; exit 1; }
    sleep 1
done
# a freshly (re)started nova-compute counts as "down" for the scheduler
# (NoValidHost) until its first heartbeat (~5 s after start) is newer than
# service_down_time; wait for a heartbeat newer than our start time.
if [[ " $JUST_STARTED " == *" nova-compute "* ]]; then
    for i in $(seq 60); do
        out=$(curl -sf -H 'X-Auth-Token: admin:admin' "http://127.0.0.1:$NOVA_PORT/v2.1/os-services?binary=nova-compute&host=$COMPUTE_HOST" || true)
        hb=$($PY -c 'import json,sys; s=json.load(sys.stdin)["services"]; print(s[0]["updated_at"] if s and s[0]["state"]=="up" else "")' <<<"$out" 2>/dev/null || true)
        [ -n "$hb" ] && [[ "$hb" > "$COMPUTE_T0" ]] && break
        [ "$i" = 60 ] && { log "ERROR: nova-compute never reported in; see $LOG/nova-compute.log"; exit 1; }
        sleep 1
    done
fi
log "Nova is up after $(elapsed)s: http://127.0.0.1:$NOVA_PORT/v2.1  (X-Auth-Token: admin:admin)"
