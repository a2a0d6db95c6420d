#!/usr/bin/env bash
# shellcheck disable=SC2034 # the DevStack variables set here are read by the sourced plugin
# devstack-plugin/tests/test-plugin.sh: the DevStack plugin without a cloud.
#
#   devstack-plugin/tests/test-plugin.sh [DIR]
#
# DIR holds the built autoscaler-manage and autoscaler-conductor (default: the
# workspace's target/debug). DevStack's helpers are stubbed here (iniset is a small
# implementation of its own with inc/ini-config's visible behaviour: the file and the
# section are created when missing, an option is replaced in its section or added to
# it); settings and plugin.sh are sourced as DevStack sources them, under errexit and
# nounset, into a temporary directory. It checks:
#
#   1. stack post-config (nova driver) writes a configuration that
#      `autoscaler-manage config validate` accepts without a warning, with the transport
#      URL of get_transport_url, [compute] driver = nova, [nova] keystoneauth options for
#      the service user, debug from ENABLE_DEBUG_LOG_LEVEL, logging to standard output
#      (journald), mode 0600; the Keystone user and its role are asked for; the sample
#      template validates;
#   2. the same with tls-proxy (cafile) and with the local driver;
#   3. sourcing plugin.sh, whatever the phase, never exits and leaves the caller's shell
#      options (set -o, shopt) as they were;
#   4. stack extra's image step: missing images are explained (never fatal), URLs are
#      handed to upload_image;
#   5. when a RabbitMQ answers on 127.0.0.1:5672 (CI's): stack extra starts the real
#      conductor from the written file (local driver, a virtual host of its own) through
#      the run_process stub and waits until it answers; unstack stops it; clean removes
#      the configuration, the state and the binaries.
#
# Exit 0 when every check passes, 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plugin_dir=$(cd "$here/.." && pwd)
top=$(cd "$plugin_dir/.." && pwd)
bin_src=${1:-$top/target/debug}
[[ -x $bin_src/autoscaler-manage ]] || {
    echo "ERROR: no autoscaler-manage in $bin_src: build it (cargo build -p autoscaler)" >&2
    exit 1
}

work=$(mktemp -d /tmp/autoscaler-devstack-test.XXXXXX)
failures=0
checks=0
in_plugin=""
conductor_pid=""
test_vhost=""

finish() {
    local rc=$?
    if [[ -n $in_plugin ]]; then
        echo "FAIL: the shell exited while sourcing $in_plugin (plugin.sh must never exit)" >&2
        rc=1
    fi
    if [[ -n $conductor_pid ]]; then
        kill -TERM "$conductor_pid" 2>/dev/null || true
        wait "$conductor_pid" 2>/dev/null || true
    fi
    if [[ -n $test_vhost ]]; then
        rabbitmqctl -q delete_vhost "$test_vhost" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap finish EXIT

pass() {
    checks=$((checks + 1))
    echo "ok: $*"
}

fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
}

# expect WHAT GOT WANT
expect() {
    if [[ $2 == "$3" ]]; then
        pass "$1 = $3"
    else
        fail "$1: got '$2', want '$3'"
    fi
}

# ini_get FILE SECTION OPTION: the value, or nothing (also when the option is absent).
ini_get() {
    S=$2 O=$3 awk '
        /^\[/ { sec = substr($0, 2, index($0, "]") - 2); next }
        sec == ENVIRON["S"] {
            eq = index($0, "=")
            if (eq == 0) next
            name = substr($0, 1, eq - 1); sub(/[ \t]+$/, "", name)
            if (name != ENVIRON["O"]) next
            value = substr($0, eq + 1); sub(/^[ \t]+/, "", value)
            print value
        }' "$1"
}

# --- DevStack's helpers, stubbed ---------------------------------------------------------

calls=$work/calls
: >"$calls"
record() { printf '%s\n' "$*" >>"$calls"; }

# iniset [-sudo] FILE SECTION OPTION VALUE
iniset() {
    [[ $1 == -sudo ]] && shift
    local file=$1 section=$2 option=$3 value=${4:-}
    [[ -n $section && -n $option ]] || return 0
    [[ -e $file ]] || : >"$file"
    local new
    new=$(S=$section O=$option V=$value awk '
        function add() { print ENVIRON["O"] " = " ENVIRON["V"]; done = 1 }
        /^\[/ {
            if (sec == ENVIRON["S"] && !done) add()
            sec = substr($0, 2, index($0, "]") - 2); seen[sec] = 1
            print; next
        }
        sec == ENVIRON["S"] && !done {
            eq = index($0, "=")
            if (eq > 0) {
                name = substr($0, 1, eq - 1); sub(/[ \t]+$/, "", name)
                if (name == ENVIRON["O"]) { add(); next }
            }
        }
        { print }
        END {
            if (!done && sec == ENVIRON["S"]) add()
            else if (!done) { print ""; print "[" ENVIRON["S"] "]"; add() }
        }' "$file")
    # Written in place, so the file keeps its mode, as sed -i keeps it.
    printf '%s\n' "$new" >"$file"
}
is_service_enabled() {
    local service
    for service in "$@"; do
        [[ ,${ENABLED_SERVICES}, == *,"$service",* ]] && return 0
    done
    return 1
}
enable_service() { ENABLED_SERVICES+=",$*"; }
define_plugin() { :; }
plugin_requires() { :; }
trueorfalse() {
    case ${!2:-} in
        1 | yes | Yes | YES | true | True | TRUE) echo True ;;
        0 | no | No | NO | false | False | FALSE) echo False ;;
        *) echo "$1" ;;
    esac
}
# shellcheck disable=SC2120 # DevStack's takes an optional virtual host
get_transport_url() {
    echo "rabbit://${RABBIT_USERID}:${RABBIT_PASSWORD}@${RABBIT_HOST}:5672/${1:-${TEST_VHOST:-}}"
}
create_service_user() { record "create_service_user $*"; }
get_or_add_user_project_role() { record "get_or_add_user_project_role $*"; }
install_package() { record "install_package $*"; }
upload_image() { record "upload_image $*"; }
openstack() {
    record "openstack $*"
    return 1
}
run_process() {
    record "run_process $1 $2"
    # As under systemd: the command line as words, output to the "journal".
    # shellcheck disable=SC2086
    $2 >>"$work/journal-$1.log" 2>&1 &
    conductor_pid=$!
}
stop_process() {
    record "stop_process $*"
    if [[ -n $conductor_pid ]]; then
        kill -TERM "$conductor_pid"
        wait "$conductor_pid" || true
        conductor_pid=""
    fi
}
die() {
    record "die $*"
    echo "die: $*" >&2
    return 1
}
warn() {
    record "warn $*"
    echo "warn: $*" >&2
}
echo_summary() { echo "summary: $*"; }
sudo() { "$@"; }

# --- DevStack's variables ----------------------------------------------------------------

reset_env() {
    DEST=$work/opt/stack
    DATA_DIR=$work/data
    STACK_USER=$(id -un)
    SERVICE_HOST=10.0.0.5
    RABBIT_HOST=10.0.0.5
    RABBIT_USERID=stackrabbit
    RABBIT_PASSWORD=rabbitpass
    SERVICE_PASSWORD=servicepass
    SERVICE_DOMAIN_NAME=Default
    SERVICE_PROJECT_NAME=service
    KEYSTONE_SERVICE_URI=http://10.0.0.5/identity
    REGION_NAME=RegionOne
    ENABLE_DEBUG_LOG_LEVEL=True
    SSL_BUNDLE_FILE=$work/data/ca-bundle.pem
    ENABLED_SERVICES=rabbit,mysql,key,n-api,n-cpu,n-cond,n-sch,placement-api,g-api,q-svc
    TEST_VHOST=""
    unset "${!AUTOSCALER_@}"
    rm -rf "${work:?}/etc" "${work:?}/data" "${work:?}/opt"
    AUTOSCALER_DIR=$top
    AUTOSCALER_CONF_DIR=$work/etc/autoscaler
    AUTOSCALER_BIN_DIR=$work/opt/stack/bin
    mkdir -p "$DEST" "$DATA_DIR" "$AUTOSCALER_BIN_DIR"
    local bin
    for bin in autoscaler-manage autoscaler-conductor autoscaler-agent; do
        ln -sf "$bin_src/$bin" "$AUTOSCALER_BIN_DIR/$bin"
    done
    : >"$calls"
}

shell_state() {
    set +o
    shopt -p
}

# source_plugin FILE ARGS...: sources FILE as DevStack does and checks the shell options
# are unchanged after it.
source_plugin() {
    local file=$1 before after
    shift
    before=$(shell_state)
    in_plugin="$file $*"
    # shellcheck disable=SC1090
    source "$file" "$@"
    in_plugin=""
    after=$(shell_state)
    if [[ $before == "$after" ]]; then
        pass "sourcing $(basename "$file") $* left the shell options as they were"
    else
        fail "sourcing $(basename "$file") $* changed shell options: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"
    fi
}

validate() {
    local conf=$1 out err rc=0
    out=$("$AUTOSCALER_BIN_DIR/autoscaler-manage" --config-file "$conf" config validate 2>"$work/validate.err") || rc=$?
    err=$(<"$work/validate.err")
    if [[ $rc == 0 && $out == "OK: $conf" && -z $err ]]; then
        pass "autoscaler-manage config validate accepts $(basename "$conf") without a warning"
    else
        fail "config validate exit $rc, stdout '$out', stderr '$err'"
    fi
}

# --- 1. post-config, nova --------------------------------------------------------------

echo "== stack post-config, [compute] driver = nova"
reset_env
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack post-config
conf=$AUTOSCALER_CONF
expect "the config file" "$conf" "$work/etc/autoscaler/autoscaler.conf"
expect "its mode" "$(stat -c %a "$conf")" 600
validate "$conf"
expect "[DEFAULT] transport_url" "$(ini_get "$conf" DEFAULT transport_url)" \
    "rabbit://stackrabbit:rabbitpass@10.0.0.5:5672/"
expect "[DEFAULT] control_exchange" "$(ini_get "$conf" DEFAULT control_exchange)" autoscaler
expect "[DEFAULT] debug" "$(ini_get "$conf" DEFAULT debug)" True
expect "[DEFAULT] state_path" "$(ini_get "$conf" DEFAULT state_path)" "$work/data/autoscaler"
expect "[DEFAULT] log_dir (journald: standard output)" "$(ini_get "$conf" DEFAULT log_dir)" ""
expect "[DEFAULT] log_file" "$(ini_get "$conf" DEFAULT log_file)" ""
expect "[compute] driver" "$(ini_get "$conf" compute driver)" nova
expect "[nova] auth_type" "$(ini_get "$conf" nova auth_type)" password
expect "[nova] auth_url" "$(ini_get "$conf" nova auth_url)" http://10.0.0.5/identity
expect "[nova] username" "$(ini_get "$conf" nova username)" autoscaler
expect "[nova] password" "$(ini_get "$conf" nova password)" servicepass
expect "[nova] user_domain_name" "$(ini_get "$conf" nova user_domain_name)" Default
expect "[nova] project_name" "$(ini_get "$conf" nova project_name)" demo
expect "[nova] project_domain_name" "$(ini_get "$conf" nova project_domain_name)" Default
expect "[nova] region_name" "$(ini_get "$conf" nova region_name)" RegionOne
expect "[nova] cafile (no tls-proxy)" "$(ini_get "$conf" nova cafile)" ""
expect "[conductor] boot_timeout" "$(ini_get "$conf" conductor boot_timeout)" 600
expect "[oslo_messaging_notifications] driver" \
    "$(ini_get "$conf" oslo_messaging_notifications driver)" messagingv2,log
if grep -qx "create_service_user autoscaler" "$calls"; then
    pass "create_service_user autoscaler"
else
    fail "create_service_user autoscaler was not called: $(tr '\n' ';' <"$calls")"
fi
if grep -qx "get_or_add_user_project_role member autoscaler demo Default Default" "$calls"; then
    pass "the member role in project demo"
else
    fail "no member role in demo: $(tr '\n' ';' <"$calls")"
fi
template=$AUTOSCALER_CONF_DIR/templates/devstack.template
if out=$("$AUTOSCALER_BIN_DIR/autoscaler-manage" --config-file "$conf" template validate "$template" 2>&1); then
    pass "the sample template validates"
    expect "its flavor" "$(ini_get "$template" template flavor)" m1.small
else
    fail "the sample template does not validate: $out"
fi

echo "== stack post-config again: the file is written anew, not appended to"
source_plugin "$plugin_dir/plugin.sh" stack post-config
expect "transport_url lines" "$(grep -c '^transport_url' "$conf")" 1

# --- 2. post-config variants -------------------------------------------------------------

echo "== stack post-config with tls-proxy"
reset_env
ENABLED_SERVICES+=,tls-proxy
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack post-config
expect "[nova] cafile" "$(ini_get "$AUTOSCALER_CONF" nova cafile)" "$SSL_BUNDLE_FILE"
validate "$AUTOSCALER_CONF"

echo "== stack post-config, [compute] driver = local, debug off, the agents' own broker URL"
reset_env
AUTOSCALER_COMPUTE_DRIVER=local
ENABLE_DEBUG_LOG_LEVEL=False
AUTOSCALER_AGENT_TRANSPORT_URL=rabbit://stackrabbit:rabbitpass@172.24.4.1:5672/
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack post-config
validate "$AUTOSCALER_CONF"
expect "[compute] driver" "$(ini_get "$AUTOSCALER_CONF" compute driver)" local
expect "[DEFAULT] debug" "$(ini_get "$AUTOSCALER_CONF" DEFAULT debug)" False
expect "[local] images_path" "$(ini_get "$AUTOSCALER_CONF" local images_path)" "$top/etc/autoscaler/images"
expect "[local] agent_path" "$(ini_get "$AUTOSCALER_CONF" local agent_path)" "$AUTOSCALER_BIN_DIR/autoscaler-agent"
expect "[agent] transport_url" "$(ini_get "$AUTOSCALER_CONF" agent transport_url)" \
    rabbit://stackrabbit:rabbitpass@172.24.4.1:5672/
expect "[nova] section" "$(ini_get "$AUTOSCALER_CONF" nova auth_type)" ""
if grep -q create_service_user "$calls"; then
    fail "the local driver asked for a Keystone user"
else
    pass "no Keystone user for the local driver"
fi

# --- 3. every phase, shell options, no exit ------------------------------------------------

echo "== other modes and a disabled service: nothing done, nothing changed"
reset_env
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack pre-install
source_plugin "$plugin_dir/plugin.sh" stack test-config
source_plugin "$plugin_dir/plugin.sh" override_defaults
ENABLED_SERVICES=${ENABLED_SERVICES//,autoscaler-conductor/}
source_plugin "$plugin_dir/plugin.sh" stack post-config
expect "config written with the service disabled" "$([[ -e $AUTOSCALER_CONF ]] && echo yes || echo no)" no
expect "helpers called" "$(wc -l <"$calls")" 0
echo "== the same without errexit and nounset, with xtrace and extglob on"
set +eu
set -x
shopt -s extglob
source_plugin "$plugin_dir/plugin.sh" stack pre-install 2>/dev/null
set +x
shopt -u extglob
set -eu

# --- 4. stack extra: images ---------------------------------------------------------------

echo "== stack extra's image step (nova, no cloud: Glance answers nothing)"
reset_env
source_plugin "$plugin_dir/settings"
# shellcheck source=devstack-plugin/lib/autoscaler
source "$plugin_dir/lib/autoscaler"
register_autoscaler_images
if grep -q "^warn .*Glance has no image tomcat-web modjk-splitter: bake them with tools/bake-images" "$calls"; then
    pass "missing images are explained, not fatal"
else
    fail "no warning about the missing images: $(tr '\n' ';' <"$calls")"
fi
: >"$calls"
AUTOSCALER_WEB_IMAGE_URL=file:///srv/images/tomcat-web.qcow2
AUTOSCALER_SPLITTER_IMAGE_URL=http://images.example/modjk-splitter.qcow2
register_autoscaler_images
if grep -qx "upload_image file:///srv/images/tomcat-web.qcow2" "$calls" &&
    grep -qx "upload_image http://images.example/modjk-splitter.qcow2" "$calls"; then
    pass "image URLs go to upload_image"
else
    fail "upload_image not called with the URLs: $(tr '\n' ';' <"$calls")"
fi
: >"$calls"
AUTOSCALER_BAKE_IMAGES=True
register_autoscaler_images
if grep -q "^warn .*AUTOSCALER_BAKE_IMAGES=True needs AUTOSCALER_BASE_IMAGE" "$calls"; then
    pass "baking without a base image is explained"
else
    fail "no warning for baking without a base image: $(tr '\n' ';' <"$calls")"
fi

# --- 5. stack extra, unstack, clean with the real conductor --------------------------------

if timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null && command -v rabbitmqctl >/dev/null; then
    echo "== stack extra, unstack, clean: the real conductor on the local RabbitMQ"
    reset_env
    test_vhost=autoscaler-devstack-test-$$
    rabbitmqctl -q add_vhost "$test_vhost" >/dev/null
    rabbitmqctl -q set_permissions -p "$test_vhost" guest '.*' '.*' '.*' >/dev/null
    RABBIT_HOST=127.0.0.1
    RABBIT_USERID=guest
    RABBIT_PASSWORD=guest
    TEST_VHOST=$test_vhost
    AUTOSCALER_COMPUTE_DRIVER=local
    AUTOSCALER_START_TIMEOUT=60
    source_plugin "$plugin_dir/settings"
    source_plugin "$plugin_dir/plugin.sh" stack post-config
    validate "$AUTOSCALER_CONF"
    source_plugin "$plugin_dir/plugin.sh" stack extra
    if grep -qx "run_process autoscaler-conductor $AUTOSCALER_BIN_DIR/autoscaler-conductor --config-file $AUTOSCALER_CONF" "$calls"; then
        pass "run_process autoscaler-conductor with an absolute path and the written file"
    else
        fail "run_process not called as expected: $(tr '\n' ';' <"$calls")"
    fi
    running=no
    if [[ -n $conductor_pid ]] && kill -0 "$conductor_pid" 2>/dev/null; then
        "$AUTOSCALER_BIN_DIR/autoscaler-manage" --config-file "$AUTOSCALER_CONF" \
            conductor status >/dev/null && running=yes
    fi
    if [[ $running == yes ]]; then
        pass "the conductor runs and answers conductor status"
    else
        fail "the conductor does not answer; its output: $(cat "$work/journal-autoscaler-conductor.log" 2>/dev/null)"
    fi
    source_plugin "$plugin_dir/plugin.sh" unstack
    expect "conductor stopped" "${conductor_pid:-stopped}" stopped
    source_plugin "$plugin_dir/plugin.sh" clean
    expect "config dir after clean" "$([[ -e $AUTOSCALER_CONF_DIR ]] && echo present || echo gone)" gone
    expect "state after clean" "$([[ -e $AUTOSCALER_STATE_PATH ]] && echo present || echo gone)" gone
    expect "binaries after clean" "$(find "$AUTOSCALER_BIN_DIR" -name 'autoscaler-*' | wc -l)" 0
    rabbitmqctl -q delete_vhost "$test_vhost" >/dev/null
    test_vhost=""
else
    echo "SKIPPED: no RabbitMQ on 127.0.0.1:5672 (or no rabbitmqctl): stack extra with the real conductor not run"
fi

echo "== $checks checks, $failures failed"
[[ $failures == 0 ]]
