#!/bin/bash
#
# devstack/plugin.sh: the autoscaler's DevStack plugin, dispatched by phase.
#
# DevStack sources it (never executes it) as `source plugin.sh MODE [PHASE]` from
# stack.sh, unstack.sh and clean.sh, so nothing here may exit or leave a shell option
# changed. The phases run with the caller's xtrace (stack.sh's is on), so stack.sh.log
# shows them; lib/autoscaler turns it off only where a password is expanded.
# doc/devstack.md describes each phase and setting.
#
#   stack install       build the release binaries with cargo (installing Rust with a
#                       pinned, checked rustup-init when needed and not OFFLINE),
#                       install them in $DEST/bin
#   stack post-config   create the Keystone user, the database (recreate_database, in
#                       DevStack's MySQL), write /etc/autoscaler/autoscaler.conf (and a
#                       sample template), check it with config validate, db sync
#   stack extra         register (or bake) the images, private to the project the VMs
#                       boot in, open the site's port, start
#                       devstack@autoscaler-conductor and wait until it answers
#   unstack             stop devstack@autoscaler-conductor
#   clean               remove the configuration, the state and the binaries

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
