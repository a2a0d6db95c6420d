#!/usr/bin/env bash
# shellcheck disable=SC2034 # the DevStack variables set here are read by the sourced plugin
# devstack-plugin/tests/test-plugin.sh: the DevStack plugin without a cloud.
#
#   devstack-plugin/tests/test-plugin.sh [DIR]
#
# DIR holds the built autoscaler-manage and autoscaler-conductor (default: the
# workspace's target/debug). DevStack's helpers are stubbed here, each with the
# behaviour of DevStack master's own that the plugin can see: die exits (with the status
# it was called with, or 1), warn returns the status it was called with (non-zero in an
# else branch after a failed command), iniset, trueorfalse, is_service_enabled and warn
# turn xtrace off inside, get_extra_file downloads into FILES (or finds the file there);
# iniset is a small implementation of its own with inc/ini-config's visible behaviour
# (the file and the section are created when missing, an option is replaced in its
# section or added to it); `openstack` is a fake Glance that keeps the images it is
# given, with their visibility and owner. settings and plugin.sh are sourced as DevStack
# sources them, under errexit and nounset (stack.sh with NOUNSET set), into a temporary
# directory; what must survive errexit runs in a subshell the way stack.sh runs a phase
# (errexit on and not disabled by an `if` or `||` around it). Nothing leaves the machine:
# curl and get_extra_file are served from the test's directory. It checks:
#
#   1. stack post-config (nova driver) writes a configuration that
#      `autoscaler-manage config validate` accepts without a warning, with the transport
#      URL of get_transport_url, [compute] driver = nova, [nova] keystoneauth options for
#      the service user, debug from ENABLE_DEBUG_LOG_LEVEL, logging to standard output
#      (journald), mode 0600; the Keystone user and its role are asked for; the sample
#      template validates; the repository is DevStack's GITDIR[autoscaler];
#   2. the same with tls-proxy (cafile) and with the local driver; traced (set -x, as
#      stack.sh runs), the phase shows in the trace and no password does;
#   3. sourcing plugin.sh, whatever the phase, never exits and leaves the caller's shell
#      options (set -o, shopt) as they were;
#   4. stack extra's image step, never fatal: missing images are explained; a failed
#      tools/bake-images is a warning and stack.sh goes on; baked or given images
#      (file://, http(s):// through get_extra_file) are uploaded private to the project
#      the VMs boot in, never public, under the setting's name; OFFLINE=True downloads
#      and bakes nothing; a public image of the same name is warned about;
#   5. stack install: with no cargo, OFFLINE=True dies naming what to pre-install and
#      downloads nothing, AUTOSCALER_INSTALL_RUST=False dies advising it; otherwise
#      rustup-init of the pinned version is fetched and not run unless its sha256 is the
#      pinned one; cargo builds --offline exactly when OFFLINE=True;
#   6. when a RabbitMQ answers on 127.0.0.1:5672 (CI's): stack extra starts the real
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
# Absolute: the test's bin directory links to it.
bin_src=$(cd "$bin_src" && pwd)

work=$(mktemp -d /tmp/autoscaler-devstack-test.XXXXXX)
# Run as root, the conductor runs its local VMs as [local] vm_user (nobody), which must
# traverse the directories above its state_path (doc/local-cloud.md).
chmod 0711 "$work"
failures=0
checks=0
in_plugin=""
conductor_pid=""
test_vhost=""
test_agent_user=""

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
        command rabbitmqctl -q delete_vhost "$test_vhost" >/dev/null 2>&1 || true
    fi
    if [[ -n $test_agent_user ]]; then
        command rabbitmqctl -q delete_user "$test_agent_user" >/dev/null 2>&1 || true
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
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    [[ $1 == -sudo ]] && shift
    local file=$1 section=$2 option=$3 value=${4:-}
    if [[ -z $section || -z $option ]]; then
        $xtrace
        return 0
    fi
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
    $xtrace
}
is_service_enabled() {
    local xtrace service enabled=1
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    for service in "$@"; do
        [[ ,${ENABLED_SERVICES}, == *,"$service",* ]] && enabled=0
    done
    $xtrace
    return $enabled
}
enable_service() { ENABLED_SERVICES+=",$*"; }
define_plugin() { :; }
plugin_requires() { :; }
# trueorfalse DEFAULT NAME: as DevStack's, it dies without a NAME.
trueorfalse() {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    [[ -n ${2:-} ]] || die $LINENO "variable to normalize required"
    case ${!2:-} in
        1 | [yY]es | YES | [tT]rue | TRUE) echo True ;;
        0 | [nN]o | NO | [fF]alse | FALSE) echo False ;;
        *) echo "$1" ;;
    esac
    $xtrace
}
# get_transport_url VHOST: DevStack's takes the virtual host as $1 (unbound under
# nounset when missing); TEST_VHOST stands in for an empty one in the conductor test.
get_transport_url() {
    local virtual_host=$1
    echo "rabbit://${RABBIT_USERID}:${RABBIT_PASSWORD}@${RABBIT_HOST}:5672/${virtual_host:-${TEST_VHOST:-}}"
}
create_service_user() { record "create_service_user $*"; }
recreate_database() { record "recreate_database $*"; }
# database_connection_url NAME: DevStack's gives mysql+pymysql://root:PASS@HOST/NAME?charset=utf8;
# here an SQLite file of the test's, which the real autoscaler-manage db sync can use.
database_connection_url() { echo "sqlite:///$work/data/$1.sqlite"; }
get_or_add_user_project_role() { record "get_or_add_user_project_role $*"; }
install_package() { record "install_package $*"; }
upload_image() { record "upload_image $*"; }
# get_extra_file URL: as DevStack's, an http(s) file is downloaded into FILES unless it
# is there already (here: "downloaded" from $work/web), dying when it cannot be; a
# file:// URL is its path.
get_extra_file() {
    local url=$1 name=${1##*/}
    record "get_extra_file $url"
    if [[ $url == file* ]]; then
        echo "${url#file://}"
        return 0
    fi
    if [[ ! -f $FILES/$name ]]; then
        cp "$work/web/$name" "$FILES/$name" 2>/dev/null || die $LINENO "$url could not be downloaded"
    fi
    echo "$FILES/$name"
}
# curl ... -o FILE URL: "downloads" $work/web/<URL's last part>; fails as curl -f does on
# an HTTP error when there is none.
curl() {
    record "curl $*"
    local args=("$@") out="" i url
    for ((i = 0; i < ${#args[@]} - 1; i++)); do
        if [[ ${args[i]} == -o ]]; then
            out=${args[i + 1]}
        fi
    done
    url=${args[${#args[@]} - 1]}
    [[ -n $out && -f $work/web/${url##*/} ]] || return 22
    cp "$work/web/${url##*/}" "$out"
}
# openstack ARGS...: a fake Glance, one line per image in $work/glance (id name
# visibility owner): `image list [--name N] [--project P] [--public|--private]` prints
# the matching ids, `image create N [--public|--private] [--project P] --file F` adds
# one (Glance's default visibility is shared, the owner the caller's project: admin).
# Anything else fails, as without a cloud.
openstack() {
    record "openstack $*"
    local words=() name="" visibility="" project="" file=""
    while (($# > 0)); do
        case $1 in
            --name) name=$2 ;;
            --project) project=$2 ;;
            --file) file=$2 ;;
            --os-cloud | --os-region-name | --project-domain | --disk-format | --container-format | --property | -f | -c) ;;
            --private | --public)
                visibility=${1#--}
                shift
                continue
                ;;
            --import)
                shift
                continue
                ;;
            *)
                words+=("$1")
                shift
                continue
                ;;
        esac
        shift 2
    done
    case "${words[*]}" in
        "image list")
            N=$name V=$visibility P=$project awk '$2 == ENVIRON["N"] || ENVIRON["N"] == "" {
                if (ENVIRON["V"] != "" && $3 != ENVIRON["V"]) next
                if (ENVIRON["P"] != "" && $4 != ENVIRON["P"]) next
                print $1
            }' "$work/glance"
            ;;
        "image create "*)
            [[ ${#words[@]} == 3 && -s $file ]] || return 1
            echo "image-$(($(wc -l <"$work/glance") + 1)) ${words[2]} ${visibility:-shared} ${project:-admin}" >>"$work/glance"
            ;;
        *) return 1 ;;
    esac
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
# die LINE MESSAGE: as DevStack's, exits the shell with the status it was called with,
# or 1.
die() {
    local exitcode=$?
    set +o xtrace
    local line=$1
    shift
    if [[ $exitcode == 0 ]]; then
        exitcode=1
    fi
    record "die $line $*"
    echo "[ERROR] ${BASH_SOURCE[1]:-}:$line $*" >&2
    exit "$exitcode"
}
# warn LINE MESSAGE: as DevStack's, prints to standard output and returns the status it
# was called with.
warn() {
    local exitcode=$?
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    record "warn $*"
    echo "[WARNING] ${BASH_SOURCE[2]:-}:$1 $2"
    $xtrace
    return $exitcode
}
echo_summary() { echo "summary: $*"; }
# rabbitmqctl: the local RabbitMQ's in the real conductor's test (TEST_VHOST set), else
# recorded; list_users lists the users recorded as added. The plugin runs it through
# sudo, which is a function here too.
# shellcheck disable=SC2032
rabbitmqctl() {
    if [[ -n ${TEST_VHOST:-} ]]; then
        command rabbitmqctl "$@"
        return
    fi
    record "rabbitmqctl $*"
    if [[ $* == "-q list_users" ]]; then
        sed -n 's/^rabbitmqctl -q add_user \([^ ]*\) .*/\1\t[]/p' "$calls"
    fi
}
# sudo: runs the command, unless it touches a path outside the test's directory (the
# CLI's link in /usr/local/bin, tools/install-webtier): that is only recorded.
sudo() {
    local arg
    # rabbitmqctl's virtual host / is no path.
    if [[ $1 == rabbitmqctl ]]; then
        "$@"
        return
    fi
    for arg in "$@"; do
        if [[ $arg == /* && $arg != "$work"/* ]]; then
            record "sudo (not run) $*"
            return 0
        fi
    done
    "$@"
}

# in_stack COMMAND...: runs COMMAND in a subshell the way stack.sh runs a phase: errexit
# and nounset on (and errexit not disabled by a condition around it), pipefail off. Sets
# rc to its exit status and out to what it printed.
in_stack() {
    set +e
    (
        set -eu
        set +o pipefail
        "$@"
    ) >"$work/in_stack.out" 2>&1
    rc=$?
    set -e
    out=$(<"$work/in_stack.out")
}

# called PATTERN: whether a recorded call matches the extended regular expression.
called() { grep -Eq -- "$1" "$calls"; }

# --- DevStack's variables ----------------------------------------------------------------

declare -A GITDIR

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
    FILES=$work/files
    OFFLINE=False
    GLANCE_USE_IMPORT_WORKFLOW=False
    TEST_VHOST=""
    unset "${!AUTOSCALER_@}"
    # As enable_plugin records it; settings takes the repository from there.
    GITDIR[autoscaler]=$top
    rm -rf "${work:?}/etc" "${work:?}/data" "${work:?}/opt" "${work:?}/files" "${work:?}/web" \
        "${work:?}/home" "${work:?}/src" "${work:?}/images" "${work:?}"/*.log
    mkdir -p "$FILES" "$work/web" "$work/home"
    : >"$work/glance"
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
expect "AUTOSCALER_DIR (DevStack's GITDIR[autoscaler], not \$DEST/autoscaler)" "$AUTOSCALER_DIR" "$top"
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
expect "[database] connection (database_connection_url autoscaler)" \
    "$(ini_get "$conf" database connection)" "sqlite:///$work/data/autoscaler.sqlite"
if grep -qx "recreate_database autoscaler" "$calls"; then
    pass "recreate_database autoscaler"
else
    fail "recreate_database autoscaler was not called: $(tr '\n' ';' <"$calls")"
fi
expect "[agent] message_key_file" \
    "$(ini_get "$conf" agent message_key_file)" "$AUTOSCALER_CONF_DIR/message.key"
expect "the message key file is the stack user's alone" \
    "$(stat -c %a "$AUTOSCALER_CONF_DIR/message.key" 2>&1)" 600
expect "db sync ran: the schema's version" \
    "$("$AUTOSCALER_BIN_DIR/autoscaler-manage" --config-file "$conf" db version 2>&1)" 2
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

agent_url=$(ini_get "$conf" agent transport_url)
agent_password=${agent_url#rabbit://autoscaler-agent:}
agent_password=${agent_password%@*}
if [[ $agent_url =~ ^rabbit://autoscaler-agent:[0-9a-f]{32}@10\.0\.0\.5:5672/$ ]]; then
    pass "[agent] transport_url: the agents' own user, a new password, the broker's address"
else
    fail "[agent] transport_url is $agent_url"
fi
expect "the agents' user made with rabbitmqctl add_user" \
    "$(grep -c "^rabbitmqctl -q add_user autoscaler-agent $agent_password\$" "$calls")" 1
expect "its permissions: configure nothing, write the exchange, read splitter queues" \
    "$(grep -cxF 'rabbitmqctl -q set_permissions -p / autoscaler-agent ^$ ^autoscaler$ ^autoscaler\.splitter\.' "$calls")" 1
expect "its topic permissions: heartbeat.*, metrics.*, pool-ack.* only" \
    "$(grep -cxF 'rabbitmqctl -q set_topic_permissions -p / autoscaler-agent autoscaler ^(heartbeat|metrics|pool-ack)\. ^$' "$calls")" 1

echo "== stack post-config again: the file is written anew, not appended to"
source_plugin "$plugin_dir/plugin.sh" stack post-config
expect "transport_url lines" "$(grep -c '^transport_url' "$conf")" 2
expect "the agents' user exists: a new password (change_password)" \
    "$(grep -c '^rabbitmqctl -q change_password autoscaler-agent [0-9a-f]\{32\}$' "$calls")" 1

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
AUTOSCALER_AGENT_TRANSPORT_URL=rabbit://vmagent:rabbitpass@172.24.4.1:5672/
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack post-config
validate "$AUTOSCALER_CONF"
expect "[compute] driver" "$(ini_get "$AUTOSCALER_CONF" compute driver)" local
expect "[DEFAULT] debug" "$(ini_get "$AUTOSCALER_CONF" DEFAULT debug)" False
expect "[local] images_path" "$(ini_get "$AUTOSCALER_CONF" local images_path)" "$top/etc/autoscaler/images"
expect "[local] agent_path" "$(ini_get "$AUTOSCALER_CONF" local agent_path)" "$AUTOSCALER_BIN_DIR/autoscaler-agent"
expect "[agent] transport_url" "$(ini_get "$AUTOSCALER_CONF" agent transport_url)" \
    rabbit://vmagent:rabbitpass@172.24.4.1:5672/
if called "^rabbitmqctl "; then
    fail "an agents' URL given, yet rabbitmqctl was run: $(grep '^rabbitmqctl' "$calls")"
else
    pass "an agents' URL given: no broker user made"
fi
expect "[nova] section" "$(ini_get "$AUTOSCALER_CONF" nova auth_type)" ""
if grep -q create_service_user "$calls"; then
    fail "the local driver asked for a Keystone user"
else
    pass "no Keystone user for the local driver"
fi

echo "== stack post-config traced, as stack.sh runs it: the phase shows, no password does"
reset_env
AUTOSCALER_AGENT_TRANSPORT_URL=rabbit://vmagent:agentpass@172.24.4.1:5672/
trace=$work/trace
exec {trace_fd}>"$trace"
BASH_XTRACEFD=$trace_fd
set -x
source_plugin "$plugin_dir/settings"
source_plugin "$plugin_dir/plugin.sh" stack post-config
set +x
# Unsetting it closes the file descriptor.
unset BASH_XTRACEFD
if grep -q 'configure_autoscaler' "$trace" &&
    grep -q "iniset $AUTOSCALER_CONF compute driver nova" "$trace" &&
    grep -q "create_service_user autoscaler" "$trace"; then
    pass "stack post-config is in the trace (stack.sh.log)"
else
    fail "stack post-config left no trace: $(grep -c . "$trace") trace lines"
fi
for secret in servicepass rabbitpass agentpass; do
    expect "trace lines holding the password $secret" "$(grep -c "$secret" "$trace" || true)" 0
done
expect "the file still gets the passwords" \
    "$(ini_get "$AUTOSCALER_CONF" nova password) $(ini_get "$AUTOSCALER_CONF" agent transport_url)" \
    "servicepass rabbit://vmagent:agentpass@172.24.4.1:5672/"

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

# fake_source: a repository of the test's own in $work/src, as GITDIR[autoscaler]: the
# workspace's rust-version, and a tools/bake-images that records its arguments, then
# fails when $work/bake-fails exists or else writes the two images it is asked for.
fake_source() {
    mkdir -p "$work/src/tools"
    GITDIR[autoscaler]=$work/src
    grep '^rust-version' "$top/Cargo.toml" >"$work/src/Cargo.toml"
    cat >"$work/src/tools/bake-images" <<EOF
#!/bin/bash
echo "\$*" >>"$work/bake.log"
if [[ -e "$work/bake-fails" ]]; then
    echo "virt-customize: cannot start the appliance" >&2
    exit 1
fi
while ((\$# > 0)); do
    case \$1 in
        --out) out=\$2 ;;
        --web-name) web=\$2 ;;
        --splitter-name) splitter=\$2 ;;
    esac
    shift
done
mkdir -p "\$out"
echo web >"\$out/\$web.qcow2"
echo splitter >"\$out/\$splitter.qcow2"
EOF
    chmod +x "$work/src/tools/bake-images"
}

# image_step: stack extra's image step, after settings and lib/autoscaler, as stack.sh
# runs it (in_stack).
image_step() {
    # shellcheck source=devstack-plugin/lib/autoscaler
    source "$plugin_dir/lib/autoscaler"
    register_autoscaler_images
}

# check_private_images WHAT: both images are in Glance, private to project demo, and
# nothing was uploaded public.
check_private_images() {
    expect "Glance's images ($1)" "$(awk '{ print $2, $3, $4 }' "$work/glance" | sort | tr '\n' ';')" \
        "modjk-splitter private demo;tomcat-web private demo;"
    if called '^(upload_image |openstack .*image create .*--public)'; then
        fail "an image was uploaded public: $(grep -E 'upload_image|image create' "$calls" | tr '\n' ';')"
    else
        pass "no image uploaded public ($1)"
    fi
}

echo "== stack extra's image step, nothing to upload (Glance has nothing)"
reset_env
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status (warnings only)" "$rc" 0
if called "^warn .*project demo has no Glance image tomcat-web modjk-splitter: bake them with tools/bake-images"; then
    pass "missing images are explained, not fatal"
else
    fail "no warning about the missing images: $(tr '\n' ';' <"$calls")"
fi

echo "== AUTOSCALER_BAKE_IMAGES=True without a base image"
reset_env
AUTOSCALER_BAKE_IMAGES=True
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status" "$rc" 0
if called "^warn .*AUTOSCALER_BAKE_IMAGES=True needs AUTOSCALER_BASE_IMAGE"; then
    pass "baking without a base image is explained"
else
    fail "no warning for baking without a base image: $(tr '\n' ';' <"$calls")"
fi

echo "== tools/bake-images fails: a warning, and stack.sh goes on (errexit)"
reset_env
fake_source
touch "$work/bake-fails" "$work/base.img"
AUTOSCALER_BAKE_IMAGES=True
AUTOSCALER_BASE_IMAGE=$work/base.img
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status after a failed bake" "$rc" 0
expect "tools/bake-images ran" "$([[ -s $work/bake.log ]] && echo yes || echo no)" yes
if called "^warn .*tools/bake-images failed" && called "^warn .*has no Glance image tomcat-web modjk-splitter"; then
    pass "the failed bake and the missing images are warnings"
else
    fail "no warnings after the failed bake: $(tr '\n' ';' <"$calls") output: $out"
fi
rm -f "$work/bake-fails"

echo "== baked during stack extra: uploaded private to the project the VMs boot in"
reset_env
fake_source
touch "$work/base.img"
AUTOSCALER_BAKE_IMAGES=True
AUTOSCALER_BASE_IMAGE=$work/base.img
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status" "$rc" 0
check_private_images "baked"
if called "^warn "; then
    fail "warnings after a good bake: $(grep '^warn' "$calls" | tr '\n' ';')"
else
    pass "no warning after a good bake"
fi
in_stack image_step
expect "images after stacking again (none uploaded twice)" "$(wc -l <"$work/glance")" 2

echo "== image URLs: file:// and https:// (get_extra_file), named by the settings, not the files"
reset_env
mkdir -p "$work/images"
echo web >"$work/images/web-2026-07.qcow2"
echo splitter >"$work/web/splitter-2026-07.qcow2"
AUTOSCALER_WEB_IMAGE_URL=file://$work/images/web-2026-07.qcow2
AUTOSCALER_SPLITTER_IMAGE_URL=https://images.example/splitter-2026-07.qcow2
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status" "$rc" 0
if called "^get_extra_file https://images.example/splitter-2026-07.qcow2$" &&
    called "^openstack .*image create modjk-splitter --private --project demo .*--file $FILES/splitter-2026-07.qcow2$" &&
    called "^openstack .*image create tomcat-web --private --project demo .*--file $work/images/web-2026-07.qcow2$"; then
    pass "the files uploaded as tomcat-web and modjk-splitter, the https one through get_extra_file"
else
    fail "not uploaded as expected: $(tr '\n' ';' <"$calls")"
fi
check_private_images "from URLs"

echo "== OFFLINE=True: nothing baked, nothing downloaded"
reset_env
fake_source
touch "$work/base.img"
echo splitter >"$work/web/modjk-splitter.qcow2"
OFFLINE=True
AUTOSCALER_BAKE_IMAGES=True
AUTOSCALER_BASE_IMAGE=$work/base.img
AUTOSCALER_SPLITTER_IMAGE_URL=https://images.example/modjk-splitter.qcow2
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status" "$rc" 0
expect "tools/bake-images ran" "$([[ -e $work/bake.log ]] && echo yes || echo no)" no
if called "^get_extra_file "; then
    fail "OFFLINE=True, yet get_extra_file was asked to download: $(grep get_extra_file "$calls")"
else
    pass "OFFLINE=True: get_extra_file not asked to download"
fi
if called "^warn .*OFFLINE=True: no image baked" &&
    called "^warn .*OFFLINE=True: https://images.example/modjk-splitter.qcow2 not downloaded; put modjk-splitter.qcow2 in $FILES"; then
    pass "OFFLINE=True: the skipped bake and download are explained"
else
    fail "no OFFLINE warnings: $(tr '\n' ';' <"$calls")"
fi
echo "== OFFLINE=True, the file already in DevStack's download cache: used"
cp "$work/web/modjk-splitter.qcow2" "$FILES/"
rm "$work/web/modjk-splitter.qcow2"
AUTOSCALER_BAKE_IMAGES=False
in_stack image_step
expect "its status" "$rc" 0
expect "Glance's images" "$(awk '{ print $2, $3, $4 }' "$work/glance")" "modjk-splitter private demo"

echo "== a public image of the same name (an earlier upload) is pointed out; Glance's import workflow"
reset_env
GLANCE_USE_IMPORT_WORKFLOW=True
echo "image-1 tomcat-web public admin" >"$work/glance"
mkdir -p "$work/images"
echo web >"$work/images/tomcat-web.qcow2"
AUTOSCALER_WEB_IMAGE_URL=file://$work/images/tomcat-web.qcow2
source_plugin "$plugin_dir/settings"
in_stack image_step
expect "its status" "$rc" 0
if called "^warn .*Glance also has a public image tomcat-web \(image-1\), which every project can boot"; then
    pass "the public image is pointed out"
else
    fail "no warning about the public image: $(tr '\n' ';' <"$calls")"
fi
expect "tomcat-web uploaded private all the same" "$(grep -c ' tomcat-web private demo$' "$work/glance")" 1
if called "^openstack .*image create tomcat-web --private .* --import --file "; then
    pass "GLANCE_USE_IMPORT_WORKFLOW=True: uploaded with --import, as DevStack's own images"
else
    fail "no --import with GLANCE_USE_IMPORT_WORKFLOW=True: $(grep 'image create' "$calls")"
fi

# --- 5. stack install: Rust, rustup, OFFLINE ---------------------------------------------

need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$top/Cargo.toml")
# PATH without the directories that hold a cargo, as on a host without Rust.
nocargo_path=""
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
    [[ -x $dir/cargo ]] || nocargo_path+=${nocargo_path:+:}$dir
done
mkdir -p "$work/fakebin"
cat >"$work/fakebin/cargo" <<EOF
#!/bin/bash
# The test's cargo: Rust 1.95; records its arguments; build writes the release binaries.
echo "\$*" >>"$work/cargo.log"
case \$1 in
    --version) echo "cargo 1.95.0 (test)" ;;
    build)
        mkdir -p target/release
        for bin in autoscaler-conductor autoscaler-manage autoscaler-agent autoscaler-loadtest autoscaler-graphs; do
            printf '#!/bin/sh\n' >"target/release/\$bin"
        done
        ;;
esac
EOF
chmod +x "$work/fakebin/cargo"

# install_env: a fresh environment for stack install: the test's repository, a bin
# directory of its own, and the served rustup-init, which records its arguments and
# installs the test's cargo in ~/.cargo/bin.
install_env() {
    reset_env
    fake_source
    AUTOSCALER_BIN_DIR=$work/opt/stack/bin-built
    cat >"$work/web/rustup-init" <<EOF
#!/bin/bash
echo "\$*" >>"$work/rustup.log"
mkdir -p "\$HOME/.cargo/bin"
cp "$work/fakebin/cargo" "\$HOME/.cargo/bin/cargo"
EOF
}

# stack_install: the stack install phase on a host with no cargo in PATH and an empty
# HOME (in_stack).
stack_install() {
    PATH=$nocargo_path
    HOME=$work/home
    # shellcheck source=devstack-plugin/plugin.sh
    source "$plugin_dir/plugin.sh" stack install
}

# failed: "yes" when rc (in_stack's) is not 0.
failed() { [[ $rc != 0 ]] && echo yes || echo "no (status $rc)"; }

echo "== stack install, OFFLINE=True and no cargo: dies naming what to pre-install"
install_env
OFFLINE=True
source_plugin "$plugin_dir/settings"
in_stack stack_install
expect "stack install failed" "$(failed)" yes
if called "^die .*OFFLINE=True and no cargo $need or newer found.*install Rust $need or newer for $STACK_USER.*cargo fetch --locked in $work/src"; then
    pass "the OFFLINE error names the toolchain and the crates to get beforehand"
else
    fail "no OFFLINE error: $(tr '\n' ';' <"$calls") output: $out"
fi
if called "^die .*AUTOSCALER_INSTALL_RUST=True"; then
    fail "the error advises AUTOSCALER_INSTALL_RUST=True, which is already on"
else
    pass "the error does not advise a setting already on"
fi
if called "^curl "; then
    fail "OFFLINE=True, yet curl was run: $(grep '^curl' "$calls")"
else
    pass "OFFLINE=True: nothing downloaded"
fi

echo "== stack install, AUTOSCALER_INSTALL_RUST=False and no cargo"
install_env
AUTOSCALER_INSTALL_RUST=False
source_plugin "$plugin_dir/settings"
in_stack stack_install
expect "stack install failed" "$(failed)" yes
if called "^die .*AUTOSCALER_INSTALL_RUST=False: install Rust $need or newer and set AUTOSCALER_CARGO.*or set AUTOSCALER_INSTALL_RUST=True" &&
    ! called "^curl "; then
    pass "no download, and the error advises AUTOSCALER_INSTALL_RUST=True, which is off"
else
    fail "not the expected error: $(tr '\n' ';' <"$calls") output: $out"
fi

case $(uname -m) in
    x86_64) rustup_target=x86_64-unknown-linux-gnu sha_var=AUTOSCALER_RUSTUP_SHA256_X86_64 ;;
    aarch64) rustup_target=aarch64-unknown-linux-gnu sha_var=AUTOSCALER_RUSTUP_SHA256_AARCH64 ;;
    *) rustup_target="" sha_var="" ;;
esac
if [[ -n $rustup_target ]]; then
    echo "== stack install, no cargo: a rustup-init that is not the pinned one is not run"
    install_env
    source_plugin "$plugin_dir/settings"
    in_stack stack_install
    expect "stack install failed" "$(failed)" yes
    if called "^curl --proto =https --tlsv1.2 .*https://static.rust-lang.org/rustup/archive/1.29.0/$rustup_target/rustup-init$"; then
        pass "rustup-init 1.29.0 for $rustup_target asked for, https only"
    else
        fail "rustup-init not fetched as pinned: $(grep '^curl' "$calls" || echo 'no curl')"
    fi
    if called "^die .*is not the pinned rustup-init \(sha256 ${!sha_var:-unset}\); it was not run"; then
        pass "the sha256 mismatch is fatal and said"
    else
        fail "no sha256 error: $(tr '\n' ';' <"$calls") output: $out"
    fi
    expect "the unpinned rustup-init ran" "$([[ -e $work/rustup.log ]] && echo yes || echo no)" no
    if called "^die .*AUTOSCALER_INSTALL_RUST=True"; then
        fail "the error advises AUTOSCALER_INSTALL_RUST=True, which is already on"
    else
        pass "the error does not advise a setting already on"
    fi

    echo "== stack install, no cargo: the pinned rustup-init installs Rust, cargo builds online"
    install_env
    declare "$sha_var=$(sha256sum "$work/web/rustup-init" | cut -d' ' -f1)"
    source_plugin "$plugin_dir/settings"
    in_stack stack_install
    expect "its status" "$rc" 0
    expect "rustup-init's arguments" "$(cat "$work/rustup.log" 2>/dev/null)" \
        "-y --no-modify-path --profile minimal --default-toolchain stable"
    expect "cargo build's arguments" "$(grep '^build' "$work/cargo.log" 2>/dev/null)" \
        "build --release --locked -p autoscaler -p autoscaler-agent -p autoscaler-loadtest -p autoscaler-graphs"
    expect "binaries installed" "$(find "$AUTOSCALER_BIN_DIR" -name 'autoscaler-*' | wc -l)" 5
else
    echo "SKIPPED: no rustup-init is pinned for $(uname -m): the rustup cases not run"
fi

echo "== stack install, OFFLINE=True with a cargo: cargo build --offline, nothing downloaded"
install_env
OFFLINE=True
AUTOSCALER_CARGO=$work/fakebin/cargo
source_plugin "$plugin_dir/settings"
in_stack stack_install
expect "its status" "$rc" 0
expect "cargo build's arguments" "$(grep '^build' "$work/cargo.log" 2>/dev/null)" \
    "build --release --locked --offline -p autoscaler -p autoscaler-agent -p autoscaler-loadtest -p autoscaler-graphs"
if called "^curl "; then
    fail "OFFLINE=True, yet curl was run: $(grep '^curl' "$calls")"
else
    pass "OFFLINE=True: nothing downloaded"
fi

# --- 6. stack extra, unstack, clean with the real conductor --------------------------------

if timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null && command -v rabbitmqctl >/dev/null; then
    echo "== stack extra, unstack, clean: the real conductor on the local RabbitMQ"
    reset_env
    test_vhost=autoscaler-devstack-test-$$
    command rabbitmqctl -q add_vhost "$test_vhost" >/dev/null
    command rabbitmqctl -q set_permissions -p "$test_vhost" guest '.*' '.*' '.*' >/dev/null
    RABBIT_HOST=127.0.0.1
    RABBIT_USERID=guest
    RABBIT_PASSWORD=guest
    TEST_VHOST=$test_vhost
    AUTOSCALER_COMPUTE_DRIVER=local
    AUTOSCALER_START_TIMEOUT=60
    AUTOSCALER_AGENT_RABBIT_USER=autoscaler-agent-test-$$
    test_agent_user=$AUTOSCALER_AGENT_RABBIT_USER
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
    expect "the agents' user on the broker" \
        "$(command rabbitmqctl -q list_users | grep -c "^${test_agent_user}[[:space:]]")" 1
    expect "its permissions on the vhost" \
        "$(command rabbitmqctl -q list_user_permissions "$test_agent_user" | tail -n 1 | tr '\t' ' ')" \
        "$test_vhost ^\$ ^autoscaler\$ ^autoscaler\.splitter\."
    source_plugin "$plugin_dir/plugin.sh" clean
    expect "the agents' user after clean" \
        "$(command rabbitmqctl -q list_users | grep -c "^${test_agent_user}[[:space:]]" || true)" 0
    test_agent_user=""
    expect "config dir after clean" "$([[ -e $AUTOSCALER_CONF_DIR ]] && echo present || echo gone)" gone
    expect "state after clean" "$([[ -e $AUTOSCALER_STATE_PATH ]] && echo present || echo gone)" gone
    expect "binaries after clean" "$(find "$AUTOSCALER_BIN_DIR" -name 'autoscaler-*' | wc -l)" 0
    command rabbitmqctl -q delete_vhost "$test_vhost" >/dev/null
    test_vhost=""
else
    echo "SKIPPED: no RabbitMQ on 127.0.0.1:5672 (or no rabbitmqctl): stack extra with the real conductor not run"
fi

echo "== $checks checks, $failures failed"
[[ $failures == 0 ]]
