#!/bin/bash
#
# devstack/plugin.sh: the autoscaler's DevStack plugin, dispatched by phase.
#
# DevStack sources it (never executes it) as `source plugin.sh MODE [PHASE]` from
# stack.sh, unstack.sh and clean.sh, so nothing here may exit or leave a shell option
# changed. doc/devstack.md describes each phase and setting.
#
#   stack install       build the release binaries with cargo, install them in $DEST/bin
#   stack post-config   create the Keystone user, write /etc/autoscaler/autoscaler.conf
#                       (and a sample template), check it with config validate
#   stack extra         register (or bake) the images, open the site's port, start
#                       devstack@autoscaler-conductor and wait until it answers
#   unstack             stop devstack@autoscaler-conductor
#   clean               remove the configuration, the state and the binaries

# Save trace setting
_XTRACE_AUTOSCALER=$(set +o | grep xtrace)
set +o xtrace

AUTOSCALER_PLUGIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$AUTOSCALER_PLUGIN_DIR/lib/autoscaler"

if is_service_enabled autoscaler-conductor; then
    case "${1:-}/${2:-}" in
        stack/install)
            echo_summary "Installing autoscaler"
            install_autoscaler
            ;;
        stack/post-config)
            echo_summary "Configuring autoscaler"
            configure_autoscaler
            ;;
        stack/extra)
            echo_summary "Starting autoscaler"
            register_autoscaler_images
            open_autoscaler_site_port
            start_autoscaler
            ;;
        unstack/*)
            stop_autoscaler
            ;;
        clean/*)
            cleanup_autoscaler
            ;;
    esac
fi

# Restore xtrace
$_XTRACE_AUTOSCALER
